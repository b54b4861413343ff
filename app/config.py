"""Settings: the only place environment variables are read.

Every bound the service has (timeouts, sizes, drain period …) is a named setting here with a default that suits
the embedded single-machine setup; production overrides them through `DELTAFLOW_*` variables or a `.env` file.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Development-only secret. Production refuses to start with it (see `_refuse_unsafe_production`).
DEFAULT_DEV_SECRET = "dev-insecure-change-me"  # noqa: S105 - a documented placeholder, rejected in production

EMBEDDED_DATABASE_URL = "sqlite+aiosqlite:///./var/deltaflow.db"
EMBEDDED_REDIS_URL = "memory://"


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


class Settings(BaseSettings):
    """Deltaflow configuration. Field names map to `DELTAFLOW_<NAME>` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="DELTAFLOW_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    environment: Environment = Environment.DEVELOPMENT
    database_url: str = EMBEDDED_DATABASE_URL
    redis_url: str = EMBEDDED_REDIS_URL
    # Server-side secret that later keys API-key HMACs ("pepper"); never logged, never returned.
    secret_key: SecretStr = SecretStr(DEFAULT_DEV_SECRET)

    # HTTP server
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    # Proxies whose X-Forwarded-For/-Proto are trusted (the nginx in front); comma-separated, "*" for any.
    forwarded_allow_ips: str = "127.0.0.1"
    # Requests whose body exceeds this many bytes get 413 before the body is read in full.
    max_body_bytes: Annotated[int, Field(ge=1)] = 1_048_576
    # Seconds between SIGTERM and the listener closing: long enough for the load balancer to see /readyz 503
    # (nginx/k8s probe every 1-5 s) and stop routing here.
    drain_seconds: Annotated[float, Field(ge=0, le=300)] = 5.0
    # After the drain, in-flight requests get this long to finish before connections are cut.
    shutdown_timeout_seconds: Annotated[float, Field(ge=0, le=300)] = 30.0

    # Database pool
    db_pool_size: Annotated[int, Field(ge=1, le=200)] = 10
    db_max_overflow: Annotated[int, Field(ge=0, le=200)] = 10
    db_pool_timeout_seconds: Annotated[float, Field(gt=0)] = 5.0
    db_connect_timeout_seconds: Annotated[float, Field(gt=0)] = 3.0

    # Redis pool
    redis_max_connections: Annotated[int, Field(ge=1, le=10_000)] = 100
    redis_socket_timeout_seconds: Annotated[float, Field(gt=0)] = 2.0

    # Probes: each /readyz check is cut off after this long so a hung dependency cannot hang the probe.
    readiness_check_timeout_seconds: Annotated[float, Field(gt=0, le=10)] = 0.5

    log_level: str = "INFO"
    log_format: LogFormat = LogFormat.JSON
    access_log: bool = True

    @field_validator("database_url")
    @classmethod
    def _known_database_driver(cls, value: str) -> str:
        if not value.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
            raise ValueError("DATABASE_URL must start with postgresql+asyncpg:// or sqlite+aiosqlite://")
        return value

    @field_validator("redis_url")
    @classmethod
    def _known_redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://", "memory://")):
            raise ValueError("REDIS_URL must start with redis://, rediss://, unix:// or memory://")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return upper

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.environment is Environment.PRODUCTION:
            secret = self.secret_key.get_secret_value()
            if not secret or secret == DEFAULT_DEV_SECRET or len(secret) < 32:
                raise ValueError(
                    "DELTAFLOW_SECRET_KEY must be set to a random value of at least 32 characters in production"
                )
        return self

    @property
    def is_embedded_database(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def is_memory_redis(self) -> bool:
        return self.redis_url.startswith("memory://")

    def sqlite_path(self) -> Path | None:
        """File path of an embedded SQLite database (None for in-memory or Postgres)."""
        if not self.is_embedded_database:
            return None
        raw = self.database_url.split(":///", 1)[1] if ":///" in self.database_url else ""
        if not raw or raw.startswith(":memory:"):
            return None
        return Path(raw.split("?", 1)[0])

    def public_view(self) -> dict[str, Any]:
        """Settings safe to print: secrets masked, passwords stripped from URLs."""
        view = self.model_dump(mode="json")
        view["secret_key"] = "**********"  # noqa: S105 - the mask, not a secret
        view["database_url"] = _redact_url(self.database_url)
        view["redis_url"] = _redact_url(self.redis_url)
        return view


def _redact_url(url: str) -> str:
    """Replace the password in `scheme://user:password@host` with ***."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, at, host = rest.rpartition("@")
    user, colon, _password = credentials.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}{at}{host}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings from the environment, read once per process."""
    return Settings()
