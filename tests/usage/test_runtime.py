"""Usage services at run time: the meter on app.state, the flush job, pruning at start, the final flush."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import timedelta

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import UsageCount
from app.usage import repository
from app.usage.meter import UsageMeter
from app.usage.repository import UsageRow
from app.usage.runtime import start_usage_services
from tests.conftest import make_settings
from tests.usage.conftest import NewTenant, Sessions, seed

ROUTE = "GET /v1/me"


async def requests_of(sessions: Sessions, tenant_id: uuid.UUID) -> int:
    async with sessions() as session:
        query = select(func.coalesce(func.sum(UsageCount.requests), 0)).where(UsageCount.tenant_id == tenant_id)
        return int(await session.scalar(query) or 0)


async def test_the_job_flushes_periodically_and_stop_flushes_the_rest(
    sessions: Sessions, new_tenant: NewTenant, database_url: str
) -> None:
    tenant = await new_tenant()
    app = FastAPI()
    stop = await start_usage_services(
        app, make_settings(database_url=database_url, usage_flush_seconds=0.05, background_jobs=False), sessions
    )
    meter = app.state.usage_meter
    assert isinstance(meter, UsageMeter)
    try:
        meter.record(tenant, tenant, ROUTE, 200)
        for _ in range(100):
            if await requests_of(sessions, tenant) == 1:
                break
            await asyncio.sleep(0.02)
        assert await requests_of(sessions, tenant) == 1
    finally:
        meter.record(tenant, tenant, ROUTE, 200)  # after the last periodic flush: only stop() writes it
        await stop()
    assert await requests_of(sessions, tenant) == 2
    assert meter.pending == {}


async def test_stop_waits_for_a_flush_in_flight_instead_of_losing_its_batch(
    sessions: Sessions, new_tenant: NewTenant, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = await new_tenant()
    started, release = asyncio.Event(), asyncio.Event()
    original = repository.add_counts

    async def slow_add_counts(session: AsyncSession, rows: Sequence[UsageRow]) -> None:
        if rows:
            started.set()
            await release.wait()
        await original(session, rows)

    monkeypatch.setattr(repository, "add_counts", slow_add_counts)
    app = FastAPI()
    stop = await start_usage_services(
        app, make_settings(database_url=database_url, usage_flush_seconds=0.01, background_jobs=False), sessions
    )
    for _ in range(5):
        app.state.usage_meter.record(tenant, tenant, ROUTE, 200)
    await asyncio.wait_for(started.wait(), timeout=5)  # the job has swapped the batch out and is writing it
    stopping = asyncio.ensure_future(stop())
    await asyncio.sleep(0.05)
    assert not stopping.done()
    release.set()
    await asyncio.wait_for(stopping, timeout=5)
    assert await requests_of(sessions, tenant) == 5


async def test_old_counts_are_pruned_when_background_jobs_run(
    sessions: Sessions, new_tenant: NewTenant, database_url: str
) -> None:
    tenant = await new_tenant()
    settings = make_settings(database_url=database_url, usage_retention_days=30, usage_flush_seconds=3600)
    meter_today = UsageMeter(1).today()
    await seed(sessions, meter_today - timedelta(days=31), [(tenant, tenant, ROUTE, 200, 3)])
    await seed(sessions, meter_today - timedelta(days=30), [(tenant, tenant, ROUTE, 200, 4)])

    stop = await start_usage_services(FastAPI(), settings.model_copy(update={"background_jobs": False}), sessions)
    await asyncio.sleep(0.05)
    await stop()
    assert await requests_of(sessions, tenant) == 7  # background jobs off: nothing pruned

    stop = await start_usage_services(FastAPI(), settings, sessions)
    for _ in range(100):  # the job's first step prunes
        if await requests_of(sessions, tenant) == 4:
            break
        await asyncio.sleep(0.02)
    await stop()
    assert await requests_of(sessions, tenant) == 4
