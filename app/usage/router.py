"""GET /v1/usage: thin HTTP layer over UsageService."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from app.auth.policy import require
from app.auth.scopes import Scope
from app.core.deps import DbSession, SettingsDep
from app.core.schemas import problem_responses
from app.keys.router import ActorDep
from app.usage.cache import USAGE_CACHE_STATE
from app.usage.repository import UsageGrouping
from app.usage.schemas import UsageReport
from app.usage.service import UsageService

router = APIRouter(prefix="/v1", tags=["usage"])


async def get_usage_service(request: Request, session: DbSession, settings: SettingsDep) -> UsageService:
    return UsageService(session, settings, cache=getattr(request.app.state, USAGE_CACHE_STATE, None))


Service = Annotated[UsageService, Depends(get_usage_service)]


@router.get(
    "/usage",
    response_model=UsageReport,
    summary="Your tenant's requests per day, key or route (counts lag by up to the flush period)",
    description="Requests of authenticated `/v1` calls, by UTC day, over `from`..`to` (inclusive; at most "
    "DELTAFLOW_USAGE_MAX_QUERY_DAYS days), with totals and a split by status class. Each instance writes its "
    "counts every `flushed_every_seconds`, so today's numbers may lag by that long. Reports are cached until the "
    "tenant's next flush (`X-Cache: hit` or `miss`).",
    dependencies=[require(Scope.USAGE_READ)],
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def get_usage(
    service: Service,
    actor: ActorDep,
    response: Response,
    start: Annotated[
        date | None,
        Query(alias="from", description="First UTC day (ISO date, inclusive); default: 29 days before `to`."),
    ] = None,
    end: Annotated[
        date | None,
        Query(alias="to", description="Last UTC day (ISO date, inclusive); default: today (UTC), or `from` if later."),
    ] = None,
    group_by: Annotated[
        UsageGrouping, Query(description="One item per `day` (every day of the range), per `key` or per `route`.")
    ] = UsageGrouping.DAY,
    key_id: Annotated[uuid.UUID | None, Query(description="Only this key's requests (404 if not your key).")] = None,
    tenant_id: Annotated[
        uuid.UUID | None, Query(description="Operators only: another tenant's usage (others get 404).")
    ] = None,
) -> UsageReport:
    report = await service.report(actor, start=start, end=end, group_by=group_by, key_id=key_id, tenant_id=tenant_id)
    response.headers["X-Cache"] = "hit" if service.cached else "miss"
    return report
