"""Async alembic environment for both backends (Postgres/asyncpg and SQLite/aiosqlite).

The URL comes from the caller (`config.attributes["database_url"]`, set by app.core.migrations) or, for a bare
`alembic` command, from the application settings. SQLite gets batch mode so ALTERs work there too.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

import app.models  # noqa: F401 - registers every table on the metadata
from app.config import Settings
from app.models import Base

config = context.config
target_metadata = Base.metadata


def _database_url() -> str:
    url = config.attributes.get("database_url")
    return url if isinstance(url, str) else Settings().database_url


# The call log's partitions (`api_calls_20261202`, `api_calls_default`) are made and dropped at run time by
# app.usage.calls.maintenance, not by migrations: autogenerate and `alembic check` must not see them as strays.
PARTITION_PREFIX = "api_calls_"


def _include_object(_obj: object, name: str | None, type_: str, _reflected: bool, _compare_to: object) -> bool:
    return not (type_ == "table" and name is not None and name.startswith(PARTITION_PREFIX))


def _configure(connection: Connection | None = None, url: str | None = None) -> None:
    is_sqlite = (url or "").startswith("sqlite") or (connection is not None and connection.dialect.name == "sqlite")
    context.configure(
        connection=connection,
        url=url if connection is None else None,
        target_metadata=target_metadata,
        render_as_batch=is_sqlite,
        compare_type=True,
        include_object=_include_object,
        literal_binds=connection is None,
    )


def run_migrations_offline() -> None:
    _configure(url=_database_url())
    with context.begin_transaction():
        context.run_migrations()


def _run_sync(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    url = _database_url()
    if url.startswith("sqlite"):
        from app.core.db import create_engine  # creates the SQLite file's directory

        engine = create_engine(Settings(database_url=url))
    else:
        engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run_sync)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
