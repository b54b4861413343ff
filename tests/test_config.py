"""Settings: env prefix, backend URLs, production refuses unsafe secrets, printing never shows secrets."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.config import DEFAULT_DEV_SECRET, EMBEDDED_DATABASE_URL, EMBEDDED_REDIS_URL, Settings


def test_defaults_are_the_embedded_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DELTAFLOW_DATABASE_URL", raising=False)
    monkeypatch.delenv("DELTAFLOW_REDIS_URL", raising=False)
    settings = Settings(_env_file=None)
    assert settings.database_url == EMBEDDED_DATABASE_URL
    assert settings.redis_url == EMBEDDED_REDIS_URL
    assert settings.is_embedded_database
    assert settings.is_memory_redis


def test_environment_variables_use_the_deltaflow_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELTAFLOW_REDIS_URL", "redis://cache:6379/2")
    monkeypatch.setenv("DELTAFLOW_MAX_BODY_BYTES", "2048")
    settings = Settings(_env_file=None)
    assert settings.redis_url == "redis://cache:6379/2"
    assert settings.max_body_bytes == 2048


@pytest.mark.parametrize("secret", ["", DEFAULT_DEV_SECRET, "too-short"])
def test_production_refuses_default_or_weak_secrets(secret: str) -> None:
    with pytest.raises(ValidationError, match="SECRET_KEY"):
        Settings(environment="production", secret_key=secret)  # type: ignore[arg-type]


def test_production_starts_with_a_real_secret() -> None:
    settings = Settings(environment="production", secret_key="k" * 40)  # type: ignore[arg-type]
    assert settings.environment == "production"


@pytest.mark.parametrize(
    ("field", "value"),
    [("database_url", "mysql://x"), ("redis_url", "http://x"), ("log_level", "LOUD"), ("port", 70000)],
)
def test_invalid_values_are_rejected(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        Settings.model_validate({field: value})


def test_public_view_masks_secrets_and_passwords() -> None:
    settings = Settings(
        database_url="postgresql+asyncpg://app:s3cret@db:5432/deltaflow",
        redis_url="redis://:r3dis@cache:6379/0",
        secret_key="x" * 40,  # type: ignore[arg-type]
    )
    view = settings.public_view()
    rendered = str(view)
    assert "s3cret" not in rendered
    assert "r3dis" not in rendered
    assert "x" * 40 not in rendered
    assert view["database_url"] == "postgresql+asyncpg://app:***@db:5432/deltaflow"
    assert view["redis_url"] == "redis://:***@cache:6379/0"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite+aiosqlite:///./var/deltaflow.db", "var/deltaflow.db"),
        ("sqlite+aiosqlite:///:memory:", None),
        ("postgresql+asyncpg://db/x", None),
    ],
)
def test_sqlite_path(url: str, expected: str | None) -> None:
    path = Settings(database_url=url).sqlite_path()
    assert (None if path is None else path.as_posix()) == expected


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+asyncpg://app@db/deltaflow?password=hunter2", "postgresql+asyncpg://app@db/deltaflow?password=***"),
        ("postgresql+asyncpg://app@db/x?sslmode=require&sslpassword=s3", "postgresql+asyncpg://app@db/x?sslmode=require&sslpassword=***"),
        ("redis://cache:6379/0?password=hunter2&db=1", "redis://cache:6379/0?password=***&db=1"),
        ("rediss://cache/0?Auth_Token=abc", "rediss://cache/0?Auth_Token=***"),
        ("postgresql+asyncpg://app:pw@db/x?application_name=df", "postgresql+asyncpg://app:***@db/x?application_name=df"),
    ],
)  # fmt: skip
def test_public_view_masks_passwords_given_as_query_parameters(url: str, shown: str) -> None:
    field = "redis_url" if url.startswith("redis") else "database_url"
    view = Settings.model_validate({field: url}).public_view()
    assert view[field] == shown
    assert "hunter2" not in str(view)
