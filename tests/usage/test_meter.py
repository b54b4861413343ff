"""The in-process usage meter: what one request counts as, the UTC day boundary, and the bound on pending rows."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import date
from typing import cast

import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.usage.meter import UsageMeter, day_of, epoch_day

TENANT = uuid.UUID("00000000-0000-4000-8000-00000000000a")
OTHER_TENANT = uuid.UUID("00000000-0000-4000-8000-00000000000b")
KEY = uuid.UUID("00000000-0000-4000-8000-0000000000a1")
OTHER_KEY = uuid.UUID("00000000-0000-4000-8000-0000000000a2")
ROUTE = "GET /v1/signals/{venue}/{symbol}"
DAY = date(2026, 11, 28)
NOON = epoch_day(DAY) * 86_400 + 43_200.0


def fixed(seconds: float) -> UsageMeter:
    return UsageMeter(max_pending_rows=100, clock=lambda: seconds)


def test_requests_are_counted_per_day_tenant_key_route_and_status_class() -> None:
    meter = fixed(NOON)
    for _ in range(3):
        meter.record(TENANT, KEY, ROUTE, 200)
    meter.record(TENANT, KEY, ROUTE, 201)  # same class as 200
    meter.record(TENANT, KEY, ROUTE, 404)
    meter.record(TENANT, OTHER_KEY, ROUTE, 200)
    meter.record(OTHER_TENANT, KEY, ROUTE, 200)
    meter.record(TENANT, KEY, "GET /v1/me", 200)

    day = epoch_day(DAY)
    assert meter.pending == {
        (day, TENANT, KEY, ROUTE, 2): 4,
        (day, TENANT, KEY, ROUTE, 4): 1,
        (day, TENANT, OTHER_KEY, ROUTE, 2): 1,
        (day, OTHER_TENANT, KEY, ROUTE, 2): 1,
        (day, TENANT, KEY, "GET /v1/me", 2): 1,
    }
    assert meter.dropped == 0


@pytest.mark.parametrize(
    ("status", "status_class"),
    [(200, 2), (204, 2), (299, 2), (304, 3), (400, 4), (429, 4), (500, 5), (503, 5), (599, 5), (101, 5), (600, 5)],
)
def test_a_status_code_counts_in_its_class_and_anything_outside_2xx_to_5xx_as_5xx(
    status: int, status_class: int
) -> None:
    meter = fixed(NOON)
    meter.record(TENANT, KEY, ROUTE, status)
    assert [key[4] for key in meter.pending] == [status_class]


def test_the_day_changes_at_utc_midnight() -> None:
    now = [epoch_day(DAY) * 86_400 + 86_399.999]
    meter = UsageMeter(max_pending_rows=100, clock=lambda: now[0])
    meter.record(TENANT, KEY, ROUTE, 200)
    assert meter.today() == DAY
    now[0] += 0.002
    meter.record(TENANT, KEY, ROUTE, 200)
    assert meter.today() == date(2026, 11, 29)
    assert sorted(day_of(key[0]) for key in meter.pending) == [DAY, date(2026, 11, 29)]


def test_epoch_days_round_trip() -> None:
    assert epoch_day(date(1970, 1, 1)) == 0
    assert day_of(epoch_day(DAY)) == DAY


def test_a_full_meter_drops_new_rows_but_keeps_counting_existing_ones() -> None:
    meter = UsageMeter(max_pending_rows=2, clock=lambda: NOON)
    meter.record(TENANT, KEY, ROUTE, 200)
    meter.record(TENANT, KEY, ROUTE, 500)
    meter.record(TENANT, KEY, ROUTE, 404)  # a third row: dropped
    meter.record(OTHER_TENANT, KEY, ROUTE, 200)  # dropped
    meter.record(TENANT, KEY, ROUTE, 200)  # an existing row still counts
    meter.record(TENANT, KEY, ROUTE, 503)

    day = epoch_day(DAY)
    assert meter.pending == {(day, TENANT, KEY, ROUTE, 2): 2, (day, TENANT, KEY, ROUTE, 5): 2}
    assert meter.dropped == 2


class FailingSessions:
    """A session factory whose database is down; `during` runs first, like requests arriving mid-flush."""

    def __init__(self, during: Callable[[], None] = lambda: None) -> None:
        self.during = during
        self.calls = 0

    def __call__(self) -> AsyncSession:
        self.calls += 1
        self.during()
        raise OperationalError("INSERT INTO usage_counts …", {}, ConnectionRefusedError("database down"))


def sessions_of(fake: FailingSessions) -> async_sessionmaker[AsyncSession]:
    return cast(async_sessionmaker[AsyncSession], fake)


async def test_a_failed_flush_merges_its_counts_back_with_those_recorded_meanwhile() -> None:
    meter = fixed(NOON)
    meter.record(TENANT, KEY, ROUTE, 200)
    meter.record(TENANT, KEY, ROUTE, 200)
    meter.record(TENANT, KEY, ROUTE, 500)

    def meanwhile() -> None:
        meter.record(TENANT, KEY, ROUTE, 200)  # a row the failed batch also holds
        meter.record(TENANT, OTHER_KEY, ROUTE, 200)  # a row only the meter holds

    failing = FailingSessions(meanwhile)
    with pytest.raises(OperationalError):
        await meter.flush(sessions_of(failing))

    day = epoch_day(DAY)
    assert failing.calls == 1
    assert meter.pending == {
        (day, TENANT, KEY, ROUTE, 2): 3,
        (day, TENANT, KEY, ROUTE, 5): 1,
        (day, TENANT, OTHER_KEY, ROUTE, 2): 1,
    }
    assert meter.dropped == 0


async def test_merging_a_failed_batch_back_keeps_the_row_bound() -> None:
    meter = UsageMeter(max_pending_rows=2, clock=lambda: NOON)
    meter.record(TENANT, KEY, ROUTE, 200)
    meter.record(TENANT, KEY, ROUTE, 200)
    meter.record(TENANT, KEY, ROUTE, 500)

    def meanwhile() -> None:  # two new rows fill the meter while the flush is in flight
        meter.record(TENANT, KEY, ROUTE, 500)
        meter.record(OTHER_TENANT, KEY, ROUTE, 200)

    with pytest.raises(OperationalError):
        await meter.flush(sessions_of(FailingSessions(meanwhile)))

    day = epoch_day(DAY)
    # The 5xx row exists again and takes its count back; the 2xx row has no room: its 2 requests are dropped.
    assert meter.pending == {(day, TENANT, KEY, ROUTE, 5): 2, (day, OTHER_TENANT, KEY, ROUTE, 2): 1}
    assert meter.dropped == 2


async def test_flushing_an_empty_meter_touches_no_database() -> None:
    failing = FailingSessions()
    assert await fixed(NOON).flush(sessions_of(failing)) == 0
    assert failing.calls == 0
