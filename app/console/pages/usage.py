"""The usage page: requests per day stacked by status class (uPlot), per key and per route tables, a date range.

The numbers are `UsageService.report`'s, the same call `GET /v1/usage` makes, so page and API cannot disagree.
"""

from __future__ import annotations

import asyncio
import calendar
import uuid
from datetime import date

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.scopes import Scope
from app.console.web import ConsoleUser, current_user, operator_tenant, render
from app.core.deps import DbSession, SettingsDep
from app.core.errors import AppError
from app.tenants.repository import list_tenants
from app.usage.cache import USAGE_CACHE_STATE
from app.usage.repository import UsageGrouping
from app.usage.schemas import UsageReport
from app.usage.service import UsageService

router = APIRouter(prefix="/console/usage", include_in_schema=False)
# The per-key table lists the busiest keys (the report orders them so); the rest are counted in the totals and named
# by `GET /v1/usage?group_by=key`. A tenant with hundreds of active keys would otherwise get a page of hundreds of rows.
KEY_ROWS = 50


def _day(raw: str | None) -> date | None:
    try:
        return date.fromisoformat(raw) if raw else None
    except ValueError:
        return None


def chart_data(report: UsageReport) -> dict[str, list[object]]:
    """Columns for the chart: UTC midnight of each day (seconds) and the requests of each status class."""
    items = report.items
    return {
        "days": [calendar.timegm(item.day.timetuple()) if item.day else 0 for item in items],
        "2xx": [item.status_2xx for item in items],
        "3xx": [item.status_3xx for item in items],
        "4xx": [item.status_4xx for item in items],
        "5xx": [item.status_5xx for item in items],
    }


@router.get("")
async def usage_page(request: Request, db: DbSession, settings: SettingsDep) -> Response:
    user: ConsoleUser = current_user(request)
    user.require(Scope.USAGE_READ)
    query = request.query_params
    tenant_id = operator_tenant(request, user)
    start, end = _day(query.get("from")), _day(query.get("to"))
    try:
        key_id = uuid.UUID(query["key_id"]) if query.get("key_id") else None
    except ValueError:
        key_id = None
    sessions: async_sessionmaker[AsyncSession] = request.app.state.session_factory

    async def report(group: UsageGrouping) -> UsageReport:
        # Each grouping on a connection of its own, all three at once: the aggregates over a long range are the
        # page's cost, and the database runs them in parallel (measured in bench/bench_console.py).
        async with sessions() as own:
            service = UsageService(own, settings, cache=getattr(request.app.state, USAGE_CACHE_STATE, None))
            return await service.report(
                user.actor, start=start, end=end, group_by=group, key_id=key_id, tenant_id=tenant_id
            )

    try:
        reports = dict(zip(UsageGrouping, await asyncio.gather(*map(report, UsageGrouping)), strict=True))
    except AppError as error:
        return render(request, "error.html", {"message": error.detail}, user=user, status=422)
    by_day = reports[UsageGrouping.DAY]
    context = {
        "by_day": by_day,
        "by_key": reports[UsageGrouping.KEY].items[:KEY_ROWS],
        "more_keys": max(len(reports[UsageGrouping.KEY].items) - KEY_ROWS, 0),
        "by_route": reports[UsageGrouping.ROUTE],
        "chart": orjson.dumps(chart_data(by_day)).decode().replace("<", "\\u003c"),  # inert inside <script>
        "start": by_day.start.isoformat(),
        "end": by_day.end.isoformat(),
        "key_id": str(key_id) if key_id else "",
        "tenant_id": str(tenant_id) if tenant_id else "",
        "tenants": await list_tenants(db, limit=1000, offset=0) if user.is_operator else [],
    }
    return render(request, "usage.html", context, user=user)
