"""Usage reports cached in Redis: a hit until the tenant's next flush, never a stale report after a flush, and a
Redis outage that only costs the cache."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from fastapi import FastAPI
from httpx import AsyncClient
from redis.asyncio import Redis

from app.auth.scopes import Role
from app.main import create_app
from app.usage.cache import UsageReportCache
from app.usage.repository import UsageGrouping
from app.usage.schemas import UsageCounts, UsageReport
from tests.helpers import running
from tests.keys.conftest import MakeKey
from tests.usage.test_router import SIGNAL, record_today, usage


def _report(tenant_id: uuid.UUID, requests: int) -> UsageReport:
    today = datetime.now(UTC).date()
    return UsageReport(
        tenant_id=tenant_id,
        start=today,
        end=today,
        group_by=UsageGrouping.DAY,
        key_id=None,
        flushed_every_seconds=10.0,
        totals=UsageCounts(requests=requests, status_2xx=requests),
        items=[],
    )


async def test_a_report_is_served_from_the_cache_until_the_tenant_s_counts_are_flushed(
    client: AsyncClient, app: FastAPI, make_key: MakeKey
) -> None:
    admin = await make_key(Role.ADMIN)
    await record_today(app, admin, SIGNAL, 200, 2)

    first = await usage(client, admin)
    assert (first.status_code, first.headers["x-cache"]) == (200, "miss")
    again = await usage(client, admin)
    assert again.headers["x-cache"] == "hit"
    assert again.json() == first.json()
    assert (await usage(client, admin, group_by="key")).headers["x-cache"] == "miss"  # each query has its own entry

    await record_today(app, admin, SIGNAL, 500)
    after = await usage(client, admin)
    assert after.headers["x-cache"] == "miss"
    # The three recorded requests and the three /v1/usage requests above, counted by the metering middleware.
    assert after.json()["totals"]["requests"] == 6
    assert after.json()["totals"]["5xx"] == 1


async def test_a_flush_on_one_instance_drops_the_report_cached_by_another(
    app: FastAPI, client: AsyncClient, make_key: MakeKey
) -> None:
    admin = await make_key(Role.ADMIN)
    await record_today(app, admin, SIGNAL, 200)
    assert (await usage(client, admin)).headers["x-cache"] == "miss"
    other_instance = create_app(app.state.settings)
    async with running(other_instance) as other_client:
        assert (await usage(other_client, admin)).headers["x-cache"] == "hit"  # shared through Redis
        await record_today(other_instance, admin, SIGNAL, 200)
    body = (await usage(client, admin)).json()
    # Two recorded requests and the other instance's /v1/usage request, which its flush counted.
    assert body["totals"]["requests"] == 3


async def test_a_report_computed_while_a_flush_lands_is_not_stored(redis_client: Redis) -> None:
    cache = UsageReportCache(redis_client, ttl_seconds=60)
    tenant = uuid.uuid4()

    async def computed_during_a_flush() -> UsageReport:
        await cache.invalidate([tenant])  # the flush commits while the aggregate runs
        return _report(tenant, 1)

    report, cached = await cache.get_or_compute(tenant, "q", computed_during_a_flush)
    assert (report.totals.requests, cached) == (1, False)

    async def fresh() -> UsageReport:
        return _report(tenant, 2)

    # Not served from the cache: the report above may predate the flush.
    report, cached = await cache.get_or_compute(tenant, "q", fresh)
    assert (report.totals.requests, cached) == (2, False)
    report, cached = await cache.get_or_compute(tenant, "q", fresh)
    assert (report.totals.requests, cached) == (2, True)
    assert 0 < await redis_client.ttl(f"usage:{{{tenant}}}:reports") <= 60


async def test_a_flush_drops_only_the_reports_of_the_tenants_it_counted(redis_client: Redis) -> None:
    cache = UsageReportCache(redis_client, ttl_seconds=60)
    one, two = uuid.uuid4(), uuid.uuid4()

    async def compute() -> UsageReport:
        return _report(one, 1)

    for tenant in (one, two):
        await cache.get_or_compute(tenant, "q", compute)
    await cache.invalidate([two])
    assert (await cache.get_or_compute(one, "q", compute))[1] is True
    assert (await cache.get_or_compute(two, "q", compute))[1] is False


async def test_without_redis_reports_come_from_the_database() -> None:
    unreachable = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    cache = UsageReportCache(unreachable, ttl_seconds=60)
    tenant = uuid.uuid4()
    calls = 0

    async def compute() -> UsageReport:
        nonlocal calls
        calls += 1
        return _report(tenant, calls)

    for expected in (1, 2):
        report, cached = await cache.get_or_compute(tenant, "q", compute)
        assert (report.totals.requests, cached) == (expected, False)
    await cache.invalidate([tenant])  # logged, not raised
    await unreachable.aclose()
