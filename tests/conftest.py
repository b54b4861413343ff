"""Test harness: real Postgres and Redis, plus the embedded backends for the storage contract tests.

- `TEST_DATABASE_URL` (default: the local server's `postgres` database, else a throwaway server this run starts:
  tests/backends.py) is only used as an admin connection: the suite creates its own database, builds it with
  `alembic upgrade head`, and drops it at the end.
- `TEST_REDIS_URL` (default `redis://127.0.0.1:6379/15`, else a throwaway server): a DB index of its own, flushed
  before every test.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.config import Settings
from app.core.migrations import upgrade_to_head
from app.main import create_app
from app.models import Base
from tests import backends
from tests.helpers import running

# Resolved once, at import (every test module imports these): explicit URLs, else local servers, else throwaway
# servers started from pip wheels for this run (tests/backends.py).
_POSTGRES = backends.postgres()
_REDIS = backends.redis()
TEST_DATABASE_URL = _POSTGRES.url
TEST_REDIS_URL = _REDIS.url


def pytest_sessionstart(session: pytest.Session) -> None:
    """One line, even under -q: which Postgres and Redis this run uses and where they came from."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    line = f"deltaflow: Postgres from {_POSTGRES.source}; Redis from {_REDIS.source} ({TEST_REDIS_URL})"
    if reporter is not None:
        reporter.write_line(line)


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _create_database(admin_url: str, name: str) -> str:
    connection = await asyncpg.connect(_asyncpg_dsn(admin_url))
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


async def _drop_database(admin_url: str, name: str) -> None:
    connection = await asyncpg.connect(_asyncpg_dsn(admin_url))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@pytest.fixture(scope="session")
async def postgres_url() -> AsyncIterator[str]:
    """A fresh Postgres database for this run, migrated to head; dropped afterwards."""
    name = f"deltaflow_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    url = await _create_database(TEST_DATABASE_URL, name)
    try:
        await asyncio.to_thread(upgrade_to_head, url)
        yield url
    finally:
        await _drop_database(TEST_DATABASE_URL, name)


@pytest.fixture(scope="session")
async def empty_postgres_url() -> AsyncIterator[str]:
    """A Postgres database on which migrations never ran (readiness must call its schema `missing`)."""
    name = f"deltaflow_empty_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    url = await _create_database(TEST_DATABASE_URL, name)
    try:
        yield url
    finally:
        await _drop_database(TEST_DATABASE_URL, name)


@pytest.fixture
async def fresh_postgres_url() -> AsyncIterator[str]:
    """A new, empty Postgres database for one test (dropped after it)."""
    name = f"deltaflow_fresh_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    url = await _create_database(TEST_DATABASE_URL, name)
    try:
        yield url
    finally:
        await _drop_database(TEST_DATABASE_URL, name)


@pytest.fixture(scope="session")
async def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("sqlite") / "deltaflow.db"
    url = f"sqlite+aiosqlite:///{path}"
    await asyncio.to_thread(upgrade_to_head, url)
    return url


@pytest.fixture
async def redis_client() -> AsyncIterator[Redis]:
    """The real test Redis, flushed before each test."""
    client = Redis.from_url(TEST_REDIS_URL)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def memory_redis_url() -> str:
    """A `memory://` URL private to one test (the in-process server is shared per URL)."""
    return f"memory://test-{uuid.uuid4().hex}"


def make_settings(**overrides: object) -> Settings:
    # The rate limiter runs in every test, at a budget no test exhausts unless it sets its own.
    base: dict[str, object] = {
        "log_format": "json",
        "access_log": True,
        "drain_seconds": 0.0,
        "rate_limit_per_second": 100_000.0,
        "rate_limit_burst": 1_000_000,
    }
    base.update(overrides)
    return Settings.model_validate(base)


async def truncate_all(database_url: str) -> None:
    """Per-test isolation for tests that go through the app (their own sessions commit).

    Connections other than this one are ended first: a server process a test killed leaves its backend running
    until Postgres notices, possibly mid-transaction (a usage flush), and TRUNCATE's exclusive locks then deadlock
    with it (seen once in CI). Tests run one at a time, so nothing else legitimately holds this database."""
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        async with engine.begin() as connection:
            names = ", ".join(table.name for table in Base.metadata.sorted_tables)
            await connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    finally:
        await engine.dispose()


@pytest.fixture
async def settings(postgres_url: str, redis_client: Redis) -> AsyncIterator[Settings]:
    """Production-like settings: the real Postgres test database and the real Redis test index.

    Background jobs are off here (tests drive them explicitly); tables are emptied after each test."""
    # Webhook receivers in tests listen on loopback; tests/keys/test_egress.py covers the public-only default.
    yield make_settings(
        database_url=postgres_url,
        redis_url=TEST_REDIS_URL,
        background_jobs=False,
        webhook_allow_private_destinations=True,
    )
    await truncate_all(postgres_url)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    """In-process HTTP client with the app's lifespan run (engine and Redis pool opened and closed)."""
    async with running(app) as http:
        yield http


@pytest.fixture
def nginx_dir() -> Iterator[Path]:
    # Readable by nginx's unprivileged workers (pytest's tmp_path is private to its user).
    path = Path(tempfile.mkdtemp(prefix="deltaflow-nginx-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)
