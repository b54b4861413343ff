"""In-process usage counters: one dict increment per request, written to the database in batches.

`record` runs on the request path of every authenticated /v1 request (called by the metering middleware), so it
does no I/O and allocates one tuple: the UTC day is integer arithmetic on the clock, not a datetime. `flush` swaps
the counters out and adds them to `usage_counts` in one transaction; the upserts add rather than overwrite, so
any number of instances can flush the same rows concurrently and the totals stay exact.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import date, timedelta

from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.logging import get_logger
from app.usage import repository
from app.usage.repository import UsageRow

log = get_logger(__name__)

SECONDS_PER_DAY = 86_400
EPOCH = date(1970, 1, 1)
# The hundreds digit of a status code is its class (2 = 2xx … 5 = 5xx). A final HTTP response outside 200-599
# cannot happen short of a server bug, so anything else is counted as a server error.
MIN_STATUS_CLASS = 2
MAX_STATUS_CLASS = 5
ROUTE_MAX_LENGTH = 200  # usage_counts.route is String(200)

# (epoch day, tenant id, key id, route template, status class)
CounterKey = tuple[int, uuid.UUID, uuid.UUID, str, int]


def epoch_day(day: date) -> int:
    return (day - EPOCH).days


def day_of(epoch_days: int) -> date:
    return EPOCH + timedelta(days=epoch_days)


class UsageMeter:
    """Counts requests per (UTC day, tenant, key, route, status class) until the next flush.

    At most `max_pending_rows` distinct rows wait between flushes: a request that would add a new row beyond that
    is not counted (`dropped` counts such requests, logged at each flush), while existing rows keep counting.
    """

    def __init__(
        self,
        max_pending_rows: int,
        clock: Callable[[], float] = time.time,
        after_flush: Callable[[Iterable[uuid.UUID]], Awaitable[None]] | None = None,
    ) -> None:
        self.max_pending_rows = max_pending_rows
        self.clock = clock  # epoch seconds; injectable so tests can cross midnight
        # Called with the tenants whose counts a flush committed (the usage report cache drops theirs).
        self.after_flush = after_flush
        self.pending: dict[CounterKey, int] = {}
        self.dropped = 0  # requests not counted since start (row cap reached, or a batch the database refused)
        self._dropped_logged = 0

    def today(self) -> date:
        return day_of(int(self.clock() // SECONDS_PER_DAY))

    def record(self, tenant_id: uuid.UUID, key_id: uuid.UUID, route: str, status: int) -> None:
        status_class = status // 100
        if status_class < MIN_STATUS_CLASS or status_class > MAX_STATUS_CLASS:
            status_class = MAX_STATUS_CLASS
        key = (int(self.clock() // SECONDS_PER_DAY), tenant_id, key_id, route, status_class)
        pending = self.pending
        count = pending.get(key)
        if count is not None:
            pending[key] = count + 1
        elif len(pending) < self.max_pending_rows:
            pending[key] = 1
        else:
            self.dropped += 1

    async def flush(self, sessions: async_sessionmaker[AsyncSession]) -> int:
        """Add the pending counts to the database; returns how many rows were written.

        On a database error the counts are merged back (within the bound) for the next flush and the error is
        re-raised, except for an integrity error: the same rows would fail forever (e.g. a tenant deleted while
        its counts were pending), so that batch is counted as dropped instead of blocking every later flush.
        """
        batch, self.pending = self.pending, {}
        self._log_dropped()
        if not batch:
            return 0
        rows = _rows(batch)
        try:
            async with sessions() as session, session.begin():
                await repository.add_counts(session, rows)
        except IntegrityError:
            lost = sum(batch.values())
            self.dropped += lost
            log.error("usage.batch_refused", rows=len(rows), requests=lost)
            self._dropped_logged = self.dropped  # reported just now
            raise
        except (SQLAlchemyError, OSError):
            self._merge_back(batch)
            raise
        if self.after_flush is not None:
            await self.after_flush({row["tenant_id"] for row in rows})
        return len(rows)

    def _merge_back(self, batch: dict[CounterKey, int]) -> None:
        pending = self.pending  # rows recorded while the failed flush was in flight
        for key, count in batch.items():
            current = pending.get(key)
            if current is not None:
                pending[key] = current + count
            elif len(pending) < self.max_pending_rows:
                pending[key] = count
            else:
                self.dropped += count

    def _log_dropped(self) -> None:
        if self.dropped > self._dropped_logged:
            log.warning(
                "usage.requests_dropped",
                dropped=self.dropped - self._dropped_logged,
                dropped_total=self.dropped,
                max_pending_rows=self.max_pending_rows,
            )
            self._dropped_logged = self.dropped


def _rows(batch: dict[CounterKey, int]) -> list[UsageRow]:
    merged: dict[tuple[date, uuid.UUID, uuid.UUID, str, int], int] = {}
    for (day, tenant_id, key_id, route, status_class), count in batch.items():
        # Truncating a (never seen) over-long route could make two counters one row: merge them, as one INSERT
        # must not name a primary key twice.
        pk = (day_of(day), tenant_id, key_id, route[:ROUTE_MAX_LENGTH], status_class)
        merged[pk] = merged.get(pk, 0) + count
    # Sorted by primary key: concurrent flushes from several instances then lock rows in the same order, so
    # their upserts wait for each other instead of deadlocking.
    return [
        UsageRow(day=day, tenant_id=tenant_id, api_key_id=key_id, route=route, status_class=klass, requests=count)
        for (day, tenant_id, key_id, route, klass), count in sorted(merged.items())
    ]
