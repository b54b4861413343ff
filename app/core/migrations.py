"""Programmatic alembic: apply migrations, and know the code's head revision for the readiness probe.

`migrations/` and `alembic.ini` sit next to the `app` package in a source checkout; an installed package (the
container image) finds them in the working directory instead.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory


def _project_root() -> Path:
    source_checkout = Path(__file__).resolve().parents[2]
    if (source_checkout / "migrations").is_dir():
        return source_checkout
    return Path.cwd()  # pragma: no cover - installed (non-editable) package, e.g. the container image


PROJECT_ROOT = _project_root()
ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"


def alembic_config(database_url: str) -> Config:
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    config.attributes["database_url"] = database_url
    return config


def upgrade_to_head(database_url: str) -> None:
    """Blocking (alembic runs its own event loop): call from a thread when inside async code."""
    command.upgrade(alembic_config(database_url), "head")


@lru_cache(maxsize=1)
def _script() -> ScriptDirectory:
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    return ScriptDirectory.from_config(config)


def code_head() -> str:
    head = _script().get_current_head()
    if head is None:  # pragma: no cover - the repository always ships a baseline revision
        raise RuntimeError("no alembic revisions found")
    return head


def known_revisions() -> frozenset[str]:
    return frozenset(rev.revision for rev in _script().walk_revisions())


def schema_state(revision: str | None) -> str:
    """`current`, `ahead` (a newer release already migrated it), `behind`, or `missing`."""
    if revision is None:
        return "missing"
    if revision == code_head():
        return "current"
    if revision not in known_revisions():
        return "ahead"
    return "behind"
