"""Retention: counts older than DELTAFLOW_USAGE_RETENTION_DAYS are deleted, at most once per interval."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta

from sqlalchemy import func, select

from app.models import UsageCount
from app.usage.retention import UsageRetention
from tests.usage.conftest import NewTenant, Sessions, seed

TODAY = date(2026, 11, 28)
ROUTE = "GET /v1/me"


async def days_stored(sessions: Sessions, tenant_id: object) -> list[date]:
    async with sessions() as session:
        query = select(UsageCount.day).where(UsageCount.tenant_id == tenant_id).order_by(UsageCount.day)
        return list((await session.execute(query)).scalars())


async def test_prune_deletes_days_older_than_the_retention_and_waits_an_interval_before_the_next(
    sessions: Sessions, new_tenant: NewTenant
) -> None:
    tenant = await new_tenant()
    key = tenant  # any id: api_key_id has no foreign key
    for age in (12, 11, 10, 9, 0):
        await seed(sessions, TODAY - timedelta(days=age), [(tenant, key, ROUTE, 200, 1)])
    clock = [1000.0]
    today = [TODAY]
    retention = UsageRetention(retention_days=10, today=lambda: today[0], interval=3600.0, monotonic=lambda: clock[0])

    assert await retention.prune_if_due(sessions) is not None  # the first call prunes
    assert await days_stored(sessions, tenant) == [TODAY - timedelta(days=d) for d in (10, 9, 0)]

    today[0] = TODAY + timedelta(days=1)  # day 10 is now too old, but the interval has not passed
    clock[0] += 3599.0
    assert await retention.prune_if_due(sessions) is None
    assert await days_stored(sessions, tenant) == [TODAY - timedelta(days=d) for d in (10, 9, 0)]

    clock[0] += 1.0
    assert await retention.prune_if_due(sessions) is not None
    assert await days_stored(sessions, tenant) == [TODAY - timedelta(days=d) for d in (9, 0)]


async def test_pruning_on_several_instances_at_once_is_safe(sessions: Sessions, new_tenant: NewTenant) -> None:
    tenant = await new_tenant()
    for age in (40, 35, 1):
        await seed(sessions, TODAY - timedelta(days=age), [(tenant, tenant, ROUTE, 200, 2)])
    instances = [UsageRetention(retention_days=30, today=lambda: TODAY) for _ in range(4)]
    deleted = await asyncio.gather(*(retention.prune_if_due(sessions) for retention in instances))
    assert all(count is not None for count in deleted)
    assert await days_stored(sessions, tenant) == [TODAY - timedelta(days=1)]
    async with sessions() as session:
        total = await session.scalar(select(func.sum(UsageCount.requests)).where(UsageCount.tenant_id == tenant))
    assert total == 2
