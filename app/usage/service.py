"""Usage reports: the range rules, tenancy (operators may read another tenant) and grouping of the stored counts."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from typing import TypedDict

from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.core.errors import AppError
from app.keys import repository as keys
from app.keys.service import Actor, ApiKeyNotFound, resolve_tenant
from app.usage import repository
from app.usage.cache import UsageReportCache
from app.usage.repository import GroupCount, UsageGrouping
from app.usage.schemas import UsageCounts, UsageItem, UsageReport

DEFAULT_RANGE_DAYS = 30


class UsageRangeInvalid(AppError):
    slug = "usage-range-invalid"
    title = "Invalid usage range"
    status = 422
    description = (
        "`to` is before `from`, or the range spans more than DELTAFLOW_USAGE_MAX_QUERY_DAYS (366) days "
        "(both inclusive)."
    )


class _Counts(TypedDict):
    requests: int
    status_2xx: int
    status_3xx: int
    status_4xx: int
    status_5xx: int


def utc_today() -> date:
    return datetime.now(UTC).date()


class _Tally:
    """Requests of one group by status class (index 0 = 2xx … 3 = 5xx)."""

    __slots__ = ("by_class", "key_name", "key_prefix")

    def __init__(self) -> None:
        self.by_class = [0, 0, 0, 0]
        self.key_name: str | None = None
        self.key_prefix: str | None = None

    def add(self, status_class: int, requests: int) -> None:
        self.by_class[status_class - 2] += requests

    @property
    def requests(self) -> int:
        return sum(self.by_class)

    def counts(self) -> _Counts:
        s2, s3, s4, s5 = self.by_class
        return {"requests": s2 + s3 + s4 + s5, "status_2xx": s2, "status_3xx": s3, "status_4xx": s4, "status_5xx": s5}


class UsageService:
    def __init__(
        self,
        session: AsyncSession,
        settings: Settings,
        today: Callable[[], date] = utc_today,
        cache: UsageReportCache | None = None,
    ) -> None:
        self.session = session
        self.settings = settings
        self.today = today
        self.cache = cache
        self.cached = False  # whether the last report came from the cache (the router's X-Cache header)

    async def report(
        self,
        actor: Actor,
        *,
        start: date | None,
        end: date | None,
        group_by: UsageGrouping,
        key_id: uuid.UUID | None,
        tenant_id: uuid.UUID | None,
    ) -> UsageReport:
        start, end = self.date_range(start, end)
        tenant = await resolve_tenant(self.session, actor, tenant_id)  # the key routes' `?tenant_id=` rule
        if key_id is not None and await keys.get_key(self.session, tenant, key_id) is None:
            raise ApiKeyNotFound(f"API key {key_id} not found.")

        async def compute() -> UsageReport:
            return await self._compute(tenant, start, end, group_by, key_id)

        if self.cache is None:
            self.cached = False
            return await compute()
        query = f"{start.isoformat()}:{end.isoformat()}:{group_by.value}:{key_id or ''}"
        report, self.cached = await self.cache.get_or_compute(tenant, query, compute)
        return report

    async def _compute(
        self, tenant: uuid.UUID, start: date, end: date, group_by: UsageGrouping, key_id: uuid.UUID | None
    ) -> UsageReport:
        counts = await repository.count_by(self.session, tenant, start=start, end=end, group=group_by, key_id=key_id)
        tallies = _tally(counts)
        total = _Tally()
        for tally in tallies.values():
            total.by_class = [a + b for a, b in zip(total.by_class, tally.by_class, strict=True)]
        return UsageReport(
            tenant_id=tenant,
            start=start,
            end=end,
            group_by=group_by,
            key_id=key_id,
            flushed_every_seconds=self.settings.usage_flush_seconds,
            totals=UsageCounts(**total.counts()),
            items=list(_items(group_by, tallies, start, end)),
        )

    def date_range(self, start: date | None, end: date | None) -> tuple[date, date]:
        """Inclusive UTC days; by default the 30 days ending today (or ending `to`, or from `from` to today)."""
        if end is None:
            end = self.today() if start is None else max(self.today(), start)
        if start is None:  # clamped: `to=0001-01-05` must not overflow the calendar (a 500)
            start = date.fromordinal(max(1, end.toordinal() - (DEFAULT_RANGE_DAYS - 1)))
        if end < start:
            raise _range_error("to", f"must not be before from ({start.isoformat()})")
        limit = self.settings.usage_max_query_days
        if (end - start).days + 1 > limit:
            raise _range_error("to", f"the range may span at most {limit} days (from and to inclusive)")
        return start, end


def _range_error(parameter: str, detail: str) -> UsageRangeInvalid:
    return UsageRangeInvalid(
        f"{parameter}: {detail}.", extensions={"errors": [{"parameter": parameter, "in": "query", "detail": detail}]}
    )


def _tally(counts: Iterable[GroupCount]) -> dict[date | uuid.UUID | str, _Tally]:
    tallies: dict[date | uuid.UUID | str, _Tally] = {}
    for count in counts:
        tally = tallies.get(count.group)
        if tally is None:
            tally = tallies[count.group] = _Tally()
            tally.key_name, tally.key_prefix = count.key_name, count.key_prefix
        tally.add(count.status_class, count.requests)
    return tallies


def _items(
    group_by: UsageGrouping, tallies: dict[date | uuid.UUID | str, _Tally], start: date, end: date
) -> Iterable[UsageItem]:
    if group_by is UsageGrouping.DAY:
        # Every day of the range, so a chart needs no gap filling (at most usage_max_query_days items).
        for offset in range((end - start).days + 1):
            day = start + timedelta(days=offset)
            yield UsageItem(day=day, **tallies.get(day, _Tally()).counts())
        return
    # Busiest first; ties broken by key id or route text, so the same counts always list in the same order.
    ranked = sorted(tallies.items(), key=lambda item: (-item[1].requests, str(item[0])))
    for group, tally in ranked:
        if group_by is UsageGrouping.KEY:
            assert isinstance(group, uuid.UUID)  # noqa: S101 - grouped by api_key_id
            yield UsageItem(key_id=group, key_name=tally.key_name, key_prefix=tally.key_prefix, **tally.counts())
        else:
            assert isinstance(group, str)  # noqa: S101 - grouped by route
            yield UsageItem(route=group, **tally.counts())
