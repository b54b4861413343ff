"""Async SQLAlchemy engine and sessions for both backends (Postgres via asyncpg, embedded SQLite via aiosqlite)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from sqlalchemy import event, text
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from app.config import Settings


def create_engine(settings: Settings) -> AsyncEngine:
    """Engine for `settings.database_url`; the same code path serves Postgres and the embedded SQLite file."""
    if settings.is_embedded_database:
        path = settings.sqlite_path()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            settings.database_url,
            connect_args={"timeout": settings.db_connect_timeout_seconds},
        )
        event.listen(engine.sync_engine, "connect", _configure_sqlite)
        return engine
    connect_args: dict[str, object] = {"timeout": settings.db_connect_timeout_seconds}
    if settings.db_statement_timeout_seconds > 0:
        timeout_ms = str(int(settings.db_statement_timeout_seconds * 1000))
        connect_args["server_settings"] = {"statement_timeout": timeout_ms}
    return create_async_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        pool_pre_ping=True,
        connect_args=connect_args,
    )


def _configure_sqlite(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    # WAL lets readers proceed during a write; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: handlers serialise ORM objects after the request-scoped commit.
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


PostCommitHook = Callable[[], Awaitable[None]]
_POST_COMMIT = "post_commit_hooks"


def after_commit(session: AsyncSession, hook: PostCommitHook) -> None:
    """Run `hook` once the request's transaction has committed (e.g. cache invalidation, which must not run
    before the new state is visible to other readers). Dropped if the transaction rolls back."""
    session.info.setdefault(_POST_COMMIT, []).append(hook)


async def session_scope(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One session per request: commit once when the handler succeeds, roll back on any error."""
    async with factory() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            await run_post_commit(session)


async def run_post_commit(session: AsyncSession) -> None:
    """Commit, then run the hooks registered with `after_commit`."""
    await session.commit()
    hooks: list[PostCommitHook] = session.info.pop(_POST_COMMIT, [])
    for hook in hooks:
        await hook()


async def current_revision(engine: AsyncEngine) -> str | None:
    """The alembic revision stamped in the database (None when migrations never ran)."""
    async with engine.connect() as connection:
        has_table = await connection.run_sync(
            lambda sync_conn: sync_conn.dialect.has_table(sync_conn, "alembic_version")
        )
        if not has_table:
            return None
        row = (await connection.execute(text("SELECT version_num FROM alembic_version"))).first()
        return None if row is None else str(row[0])
