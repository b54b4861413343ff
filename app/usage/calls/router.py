"""/v1/usage/calls: the tenant's call log — search, one call, a streamed export."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse

from app.auth.calls import CALL_LOG_STATE
from app.auth.policy import require
from app.auth.scopes import Scope
from app.core.deps import DbSession, SettingsDep
from app.core.pagination import CursorParam
from app.core.schemas import NO_CONTROL_CHARACTERS, problem_responses
from app.keys.router import ActorDep
from app.usage.calls.repository import CallFilter
from app.usage.calls.schemas import CallPage, CallRead
from app.usage.calls.service import CallLogService, export

router = APIRouter(prefix="/v1/usage/calls", tags=["usage"])


async def get_service(request: Request, session: DbSession, settings: SettingsDep) -> CallLogService:
    return CallLogService(session, settings, getattr(request.app.state, CALL_LOG_STATE, None))


Service = Annotated[CallLogService, Depends(get_service)]


async def call_filter(
    service: Service,
    actor: ActorDep,
    since: Annotated[datetime | None, Query(alias="from", description="Calls at or after (ISO 8601).")] = None,
    until: Annotated[datetime | None, Query(alias="to", description="Calls before (ISO 8601).")] = None,
    key_id: Annotated[uuid.UUID | None, Query(description="Only this key's calls.")] = None,
    route: Annotated[
        str | None,
        # No control characters: a NUL would reach Postgres (which refuses it in text) only once an export's
        # response had started, breaking the stream instead of answering 422.
        Query(
            max_length=200,
            pattern=NO_CONTROL_CHARACTERS,
            description="A route template, e.g. `/v1/signals/{venue}/{symbol}`.",
        ),
    ] = None,
    status: Annotated[int | None, Query(ge=100, le=599, description="Only calls answered with this status.")] = None,
    min_latency_ms: Annotated[float | None, Query(ge=0, le=3_600_000, description="At least this slow.")] = None,
    tenant_id: Annotated[uuid.UUID | None, Query(description="Operators only: another tenant's calls.")] = None,
) -> CallFilter:
    return await service.filter_for(
        actor, tenant_id=tenant_id, since=since, until=until, key_id=key_id, route=route, status=status,
        min_latency_ms=min_latency_ms,
    )  # fmt: skip


Filter = Annotated[CallFilter, Depends(call_filter)]


@router.get(
    "",
    response_model=CallPage,
    summary="Your tenant's calls, newest first (keyset pages)",
    dependencies=[require(Scope.USAGE_READ)],
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def list_calls(
    service: Service,
    where: Filter,
    cursor: CursorParam = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Page size (at most DELTAFLOW_CALL_LOG_PAGE_MAX)")] = 50,
) -> CallPage:
    return await service.page(where, cursor=cursor, limit=limit)


@router.get(
    "/export",
    response_class=StreamingResponse,
    summary="Your tenant's calls as CSV or NDJSON, streamed (newest first, the same filters)",
    dependencies=[require(Scope.USAGE_READ)],
    responses={
        200: {
            "description": "The calls, newest first",
            "content": {
                "text/csv": {
                    "schema": {"type": "string"},
                    "example": "at,request_id,key_id,method,route,status,latency_ms,response_bytes,client_address,"
                    "user_agent,cache\n2026-12-02T14:03:07.412Z,9f1c…,0f6b…,GET,/v1/me,200,0.41,297,203.0.113.7,curl/8,\n",
                },
                "application/x-ndjson": {
                    "schema": {"type": "string"},
                    "example": '{"at":"2026-12-02T14:03:07.412Z","request_id":"9f1c…","route":"/v1/me","status":200}\n',
                },
            },
        },
        **problem_responses(401, 403, 404, 422, 503),
    },
)
async def export_calls(
    request: Request,
    settings: SettingsDep,
    where: Filter,
    format: Annotated[Literal["csv", "ndjson"], Query(description="`csv` (with a header row) or `ndjson`")] = "ndjson",
) -> StreamingResponse:
    media = "text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson"
    body = export(request.app.state.session_factory, where, fmt=format, max_rows=settings.call_log_export_max_rows)
    headers = {"content-disposition": f'attachment; filename="calls.{format}"'}
    return StreamingResponse(body, media_type=media, headers=headers)


@router.get(
    "/{request_id}",
    response_model=list[CallRead],
    summary="The calls of your tenant with this request id (the `X-Request-ID` of the response)",
    dependencies=[require(Scope.USAGE_READ)],
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def get_call(
    service: Service,
    actor: ActorDep,
    request_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9._:\-]{1,128}$", description="A request id")],
    tenant_id: Annotated[uuid.UUID | None, Query(description="Operators only: another tenant's call.")] = None,
) -> list[CallRead]:
    return await service.by_request_id(actor, request_id, tenant_id)
