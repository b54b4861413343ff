"""The `deltaflow` console script, run as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TEST_REDIS_URL
from tests.helpers import free_port

DELTAFLOW = str(Path(sys.executable).parent / "deltaflow")


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DELTAFLOW_")}
    environment.update(env)
    return subprocess.run([DELTAFLOW, *args], capture_output=True, text=True, env=environment, timeout=60, check=False)


def test_migrate_builds_an_embedded_database_from_nothing(tmp_path: Path) -> None:
    database = tmp_path / "nested" / "deltaflow.db"
    result = _run("migrate", DELTAFLOW_DATABASE_URL=f"sqlite+aiosqlite:///{database}")
    assert result.returncode == 0, result.stderr
    assert "migrated to revision" in result.stdout
    assert database.exists()
    again = _run("migrate", DELTAFLOW_DATABASE_URL=f"sqlite+aiosqlite:///{database}")
    assert again.returncode == 0, "migrating twice is a no-op"


def test_check_prints_config_without_secrets_and_tests_connectivity(postgres_url: str) -> None:
    result = _run(
        "check",
        DELTAFLOW_DATABASE_URL=postgres_url,
        DELTAFLOW_REDIS_URL=TEST_REDIS_URL,
        DELTAFLOW_SECRET_KEY="very-secret-value-that-must-not-print",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "very-secret-value" not in result.stdout
    assert '"secret_key": "**********"' in result.stdout
    assert "database   ok" in result.stdout
    assert "redis      ok" in result.stdout


def test_check_fails_when_the_database_is_unreachable() -> None:
    result = _run(
        "check",
        DELTAFLOW_DATABASE_URL=f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/x",
        DELTAFLOW_REDIS_URL=TEST_REDIS_URL,
    )
    assert result.returncode == 1
    assert "database   fail" in result.stdout


def test_invalid_configuration_is_reported_without_a_traceback() -> None:
    result = _run("check", DELTAFLOW_ENVIRONMENT="production")
    assert result.returncode == 2
    assert "DELTAFLOW_SECRET_KEY" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_command_is_a_usage_error() -> None:
    result = _run("frobnicate")
    assert result.returncode == 2
    assert "usage: deltaflow" in result.stderr


@pytest.mark.parametrize("command", ["serve", "migrate", "check"])
def test_help_lists_each_command(command: str) -> None:
    result = _run("--help")
    assert command in result.stdout


PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("target", ["run", "demo"])
def test_make_target_creates_an_operator_key_before_serving(target: str, tmp_path: Path) -> None:
    """The target's own commands (`make -n`), run in an empty directory up to `serve`: a fresh clone gets a
    usable operator key from `make run` and `make demo` alike (the demo once created none)."""
    listed = subprocess.run(
        ["make", "-s", "-n", "-C", str(PROJECT_ROOT), target, f"BIN={Path(sys.executable).parent}"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    commands = [line for line in listed.splitlines() if "/deltaflow " in line and not line.startswith("#")]
    assert commands[-1].endswith("deltaflow serve --with-ingest"), commands
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DELTAFLOW_")}
    printed = ""
    for command in commands[:-1]:
        result = subprocess.run(  # noqa: S602 - the Makefile's own recipe lines, as make would run them
            command, shell=True, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, f"{command}: {result.stderr}"
        printed += result.stdout
    assert "dfk_" in printed, f"`make {target}` would serve without any API key: {printed}"


async def test_feeds_passes_while_every_feed_has_an_ingestor_and_names_the_orphans(redis_client: object) -> None:
    import orjson
    from redis.asyncio import Redis

    from app.market.keys import FeedKeys

    assert isinstance(redis_client, Redis)
    env = {"DELTAFLOW_REDIS_URL": TEST_REDIS_URL, "DELTAFLOW_FEEDS": "sim:BTCUSDT,ETHUSDT"}
    held = {"venue": "sim", "symbol": "BTCUSDT", "state": "streaming", "connected": True}
    await redis_client.set(FeedKeys("sim", "BTCUSDT").status, orjson.dumps(held))
    orphaned = _run("feeds", **env)
    assert orphaned.returncode == 1
    assert "no ingestor holds sim:ETHUSDT" in orphaned.stderr
    assert "sim:BTCUSDT" in orphaned.stdout
    await redis_client.set(FeedKeys("sim", "ETHUSDT").status, orjson.dumps({**held, "symbol": "ETHUSDT"}))
    assert _run("feeds", **env).returncode == 0
