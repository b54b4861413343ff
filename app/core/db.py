"""Async SQLAlchemy engine and sessions for both backends (Postgres via asyncpg, embedded SQLite via aiosqlite)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from sqlalchemy import event, text
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from app.config import Settings
from app.core.metrics import DB_POOL_IN_USE, DB_POOL_SIZE


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
    # Custom plans always: asyncpg prepares every statement, and after five runs PostgreSQL may switch to one
    # generic plan, blind to how selective this tenant's or this filter's values are (a tenant with 1 % of the
    # calls and one with 15 % need different plans). Planning costs well under a millisecond here.
    server_settings = {"plan_cache_mode": "force_custom_plan"}
    if settings.db_statement_timeout_seconds > 0:
        server_settings["statement_timeout"] = str(int(settings.db_statement_timeout_seconds * 1000))
    connect_args["server_settings"] = server_settings
    engine = create_async_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        pool_pre_ping=True,
        connect_args=connect_args,
    )
    _count_pool_use(engine, settings.db_pool_size + settings.db_max_overflow)
    return engine


def _count_pool_use(engine: AsyncEngine, most: int) -> None:
    """Connections in use for `deltaflow_db_pool_connections_in_use` (one process has one engine when served)."""
    DB_POOL_SIZE.set(most)

    def checked_out(_dbapi: DBAPIConnection, _record: ConnectionPoolEntry, _proxy: PoolProxiedConnection) -> None:
        DB_POOL_IN_USE.inc()

    def checked_in(_dbapi: DBAPIConnection | None, _record: ConnectionPoolEntry) -> None:
        DB_POOL_IN_USE.dec()

    event.listen(engine.sync_engine, "checkout", checked_out)
    event.listen(engine.sync_engine, "checkin", checked_in)


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
