"""Usage storage on both backends (PostgreSQL and SQLite): additive flushes, concurrent instances, a refused batch,
retention deletes and the grouped sums the report is built from."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from structlog.testing import capture_logs

from app.models import ApiKey, UsageCount
from app.usage import repository
from app.usage.meter import UsageMeter, epoch_day
from app.usage.repository import GroupCount, UsageGrouping
from tests.usage.conftest import NewTenant, Sessions, meter_on, seed

DAY = date(2026, 11, 28)
ROUTE = "GET /v1/signals/{venue}/{symbol}"
ME = "GET /v1/me"

Stored = dict[tuple[date, uuid.UUID, str, int], int]


async def stored(sessions: Sessions, tenant_id: uuid.UUID) -> Stored:
    async with sessions() as session:
        rows = await session.execute(select(UsageCount).where(UsageCount.tenant_id == tenant_id))
        return {(c.day, c.api_key_id, c.route, c.status_class): c.requests for c in rows.scalars()}


async def add_key(sessions: Sessions, tenant_id: uuid.UUID, name: str) -> uuid.UUID:
    """A key row without the audit event `issue_key` writes (audit rows would block deleting the tenant)."""
    key_id = uuid.uuid4()
    async with sessions() as session, session.begin():
        session.add(
            ApiKey(
                id=key_id,
                tenant_id=tenant_id,
                name=name,
                prefix=f"dfk_{name[:4]}",
                last_four="abcd",
                secret_hash=uuid.uuid4().hex,
                role="reader",
                scopes=["market:read"],
                created_at=datetime.now(UTC),
                expires_at=datetime.now(UTC) + timedelta(days=1),
            )
        )
    return key_id


async def test_a_flush_writes_the_counts_and_empties_the_meter(sessions: Sessions, new_tenant: NewTenant) -> None:
    tenant, key = await new_tenant(), uuid.uuid4()
    meter = meter_on(DAY)
    for status in (200, 200, 200, 304, 404, 503):
        meter.record(tenant, key, ROUTE, status)
    meter.record(tenant, key, ME, 200)

    assert await meter.flush(sessions) == 5
    assert meter.pending == {}
    assert await stored(sessions, tenant) == {
        (DAY, key, ROUTE, 2): 3,
        (DAY, key, ROUTE, 3): 1,
        (DAY, key, ROUTE, 4): 1,
        (DAY, key, ROUTE, 5): 1,
        (DAY, key, ME, 2): 1,
    }


async def test_flushes_add_to_the_stored_counts(sessions: Sessions, new_tenant: NewTenant) -> None:
    tenant, key = await new_tenant(), uuid.uuid4()
    meter = meter_on(DAY)
    for requests in (3, 4):
        for _ in range(requests):
            meter.record(tenant, key, ROUTE, 200)
        await meter.flush(sessions)
    meter.record(tenant, key, ROUTE, 429)
    await meter.flush(sessions)
    assert await stored(sessions, tenant) == {(DAY, key, ROUTE, 2): 7, (DAY, key, ROUTE, 4): 1}


async def test_concurrent_flushes_of_several_instances_add_up_exactly(
    sessions: Sessions, new_tenant: NewTenant
) -> None:
    tenant = await new_tenant()
    keys = [uuid.uuid4() for _ in range(5)]
    routes = [f"GET /v1/route/{index}" for index in range(8)]
    instances = 6
    meters = [meter_on(DAY) for _ in range(instances)]
    for rounds in range(1, 3):
        for index, meter in enumerate(meters):
            # Every instance writes the same rows (in its own insertion order) so the upserts collide.
            ordered = [(k, r) for k in keys for r in routes]
            for key, route in ordered[index:] + ordered[:index]:
                for _ in range(index + 1):
                    meter.record(tenant, key, route, 200)
        written = await asyncio.gather(*(meter.flush(sessions) for meter in meters))
        assert written == [len(keys) * len(routes)] * instances
        per_row = rounds * sum(range(1, instances + 1))
        assert await stored(sessions, tenant) == {(DAY, k, r, 2): per_row for k in keys for r in routes}


async def test_counts_merged_back_after_a_failure_are_written_by_the_next_flush(
    sessions: Sessions, new_tenant: NewTenant
) -> None:
    tenant, key = await new_tenant(), uuid.uuid4()
    meter = meter_on(DAY)
    meter.record(tenant, key, ROUTE, 200)
    meter.record(tenant, key, ROUTE, 200)
    meter.pending, failed = {}, dict(meter.pending)
    meter.record(tenant, key, ROUTE, 200)
    meter._merge_back(failed)  # what a flush does when the database is unreachable
    assert await meter.flush(sessions) == 1
    assert await stored(sessions, tenant) == {(DAY, key, ROUTE, 2): 3}


async def test_a_batch_the_database_refuses_is_dropped_instead_of_retried_forever(
    sessions: Sessions, new_tenant: NewTenant
) -> None:
    tenant, key = await new_tenant(), uuid.uuid4()
    unknown_tenant = uuid.uuid4()  # violates the tenant foreign key, as a tenant deleted meanwhile would
    meter = meter_on(DAY)
    meter.record(tenant, key, ROUTE, 200)
    meter.record(unknown_tenant, key, ROUTE, 200)
    meter.record(unknown_tenant, key, ROUTE, 200)

    with capture_logs() as logs, pytest.raises(IntegrityError):
        await meter.flush(sessions)
    assert meter.pending == {}
    assert meter.dropped == 3
    assert {"event": "usage.batch_refused", "rows": 2, "requests": 3, "log_level": "error"} in logs
    assert await stored(sessions, tenant) == {}

    meter.record(tenant, key, ROUTE, 200)  # later batches are not held up
    assert await meter.flush(sessions) == 1
    assert await stored(sessions, tenant) == {(DAY, key, ROUTE, 2): 1}


async def test_requests_dropped_by_the_row_bound_are_logged_at_the_next_flush(
    sessions: Sessions, new_tenant: NewTenant
) -> None:
    tenant, key = await new_tenant(), uuid.uuid4()
    meter = meter_on(DAY, max_pending_rows=1)
    meter.record(tenant, key, ROUTE, 200)
    meter.record(tenant, key, ROUTE, 500)
    meter.record(tenant, key, ME, 200)
    with capture_logs() as logs:
        await meter.flush(sessions)
        await meter.flush(sessions)  # nothing new dropped: nothing logged again
    dropped = [entry for entry in logs if entry["event"] == "usage.requests_dropped"]
    assert dropped == [
        {
            "event": "usage.requests_dropped",
            "dropped": 2,
            "dropped_total": 2,
            "max_pending_rows": 1,
            "log_level": "warning",
        }
    ]
    assert await stored(sessions, tenant) == {(DAY, key, ROUTE, 2): 1}


async def test_an_over_long_route_is_truncated_to_the_column(sessions: Sessions, new_tenant: NewTenant) -> None:
    tenant, key = await new_tenant(), uuid.uuid4()
    meter = meter_on(DAY)
    meter.record(tenant, key, "GET /" + "a" * 300, 200)
    meter.record(tenant, key, "GET /" + "a" * 301, 200)  # the same row once truncated
    assert await meter.flush(sessions) == 1
    assert await stored(sessions, tenant) == {(DAY, key, "GET /" + "a" * 195, 2): 2}


async def test_delete_before_removes_only_older_days_of_every_tenant(sessions: Sessions, new_tenant: NewTenant) -> None:
    first, second, key = await new_tenant(), await new_tenant(), uuid.uuid4()
    for offset in (-2, -1, 0):
        await seed(sessions, DAY + timedelta(days=offset), [(first, key, ROUTE, 200, 1), (second, key, ROUTE, 200, 1)])
    async with sessions() as session, session.begin():
        deleted = await repository.delete_before(session, DAY - timedelta(days=1))
    assert deleted >= 2  # other tests' rows on this shared database may be older still
    for tenant in (first, second):
        assert sorted(day for day, *_ in await stored(sessions, tenant)) == [DAY - timedelta(days=1), DAY]


def by_group(counts: list[GroupCount]) -> dict[object, dict[int, int]]:
    grouped: dict[object, dict[int, int]] = {}
    for count in counts:
        grouped.setdefault(count.group, {})[count.status_class] = count.requests
    return grouped


async def test_counts_are_summed_per_group_for_one_tenant_and_range(sessions: Sessions, new_tenant: NewTenant) -> None:
    tenant, other = await new_tenant(), await new_tenant()
    bot, dash = await add_key(sessions, tenant, "bot"), await add_key(sessions, tenant, "dash")
    outsider = await add_key(sessions, other, "outsider")
    before, first, last = DAY - timedelta(days=3), DAY - timedelta(days=1), DAY
    await seed(sessions, before, [(tenant, bot, ROUTE, 200, 50)])  # outside the range
    await seed(
        sessions, first, [(tenant, bot, ROUTE, 200, 3), (tenant, bot, ROUTE, 404, 1), (tenant, dash, ME, 200, 2)]
    )
    await seed(sessions, last, [(tenant, bot, ME, 500, 1), (tenant, dash, ME, 200, 4), (other, outsider, ME, 200, 9)])

    async def count(group: UsageGrouping, key_id: uuid.UUID | None = None) -> dict[object, dict[int, int]]:
        async with sessions() as session:
            counts = await repository.count_by(session, tenant, start=first, end=last, group=group, key_id=key_id)
        return by_group(counts)

    assert await count(UsageGrouping.DAY) == {first: {2: 5, 4: 1}, last: {2: 4, 5: 1}}
    assert await count(UsageGrouping.ROUTE) == {ROUTE: {2: 3, 4: 1}, ME: {2: 6, 5: 1}}
    assert await count(UsageGrouping.KEY) == {bot: {2: 3, 4: 1, 5: 1}, dash: {2: 6}}
    assert await count(UsageGrouping.DAY, key_id=dash) == {first: {2: 2}, last: {2: 4}}
    assert await count(UsageGrouping.DAY, key_id=outsider) == {}

    async with sessions() as session:
        labelled = await repository.count_by(
            session, tenant, start=first, end=last, group=UsageGrouping.KEY, key_id=None
        )
    assert {(c.group, c.key_name, c.key_prefix) for c in labelled} == {
        (bot, "bot", "dfk_bot"),
        (dash, "dash", "dfk_dash"),
    }


async def test_the_day_column_round_trips_as_a_date(sessions: Sessions, new_tenant: NewTenant) -> None:
    tenant, key = await new_tenant(), uuid.uuid4()
    meter = UsageMeter(max_pending_rows=10, clock=lambda: epoch_day(DAY) * 86_400.0)  # exactly midnight
    meter.record(tenant, key, ROUTE, 200)
    await meter.flush(sessions)
    ((day, *_),) = (await stored(sessions, tenant)).keys()
    assert type(day) is date
    assert day == DAY
