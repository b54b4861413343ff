"""Usage fixtures: both database backends for the storage tests, and the key fixtures for the route tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import date

import pytest
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.core.db import create_engine, create_session_factory
from app.keys.admin import ensure_tenant
from app.models import Tenant
from app.usage.meter import UsageMeter, epoch_day
from tests.conftest import make_settings
from tests.keys.conftest import make_key  # noqa: F401 - re-exported fixture

Sessions = async_sessionmaker[AsyncSession]
NewTenant = Callable[[], Awaitable[uuid.UUID]]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The app's flush job runs once at start and then only every hour: a test's reads see exactly what it
    # flushed itself, never the counts of its own requests flushed in between.
    return settings.model_copy(update={"usage_flush_seconds": 3600.0})


@pytest.fixture(params=["postgres", "sqlite"])
def database_url(request: pytest.FixtureRequest) -> str:
    """The migrated Postgres test database, or the embedded SQLite one (sync: it resolves async fixtures)."""
    url: str = request.getfixturevalue("postgres_url" if request.param == "postgres" else "sqlite_url")
    return url


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[Sessions]:
    engine = create_engine(make_settings(database_url=database_url))
    try:
        yield create_session_factory(engine)
    finally:
        await engine.dispose()


async def add_tenant(sessions: Sessions) -> uuid.UUID:
    async with sessions() as session, session.begin():
        tenant = await ensure_tenant(session, f"usage-{uuid.uuid4().hex[:12]}")
    return tenant.id


@pytest.fixture
async def new_tenant(sessions: Sessions) -> AsyncIterator[NewTenant]:
    """Creates tenants on the backend under test; deleting them afterwards removes their counts (cascade)."""
    created: list[uuid.UUID] = []

    async def make() -> uuid.UUID:
        tenant_id = await add_tenant(sessions)
        created.append(tenant_id)
        return tenant_id

    yield make
    async with sessions() as session, session.begin():
        await session.execute(delete(Tenant).where(Tenant.id.in_(created)))


def meter_on(day: date, max_pending_rows: int = 10_000) -> UsageMeter:
    """A meter whose clock stands at noon UTC of `day`."""
    seconds = epoch_day(day) * 86_400 + 43_200.0
    return UsageMeter(max_pending_rows=max_pending_rows, clock=lambda: seconds)


async def seed(
    sessions: Sessions,
    day: date,
    counts: Sequence[tuple[uuid.UUID, uuid.UUID, str, int, int]],
) -> None:
    """Record (tenant, key, route, status, requests) on `day` and flush them."""
    meter = meter_on(day)
    for tenant_id, key_id, route, status, requests in counts:
        for _ in range(requests):
            meter.record(tenant_id, key_id, route, status)
    await meter.flush(sessions)
