"""/v1/alerts/events and /v1/alerts/test: thin HTTP layer over the history and the backtest.

Included before the rules router: `/v1/alerts/{rule_id}` would otherwise take `events` and `test` for rule ids."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request, Response

from app.alerts.backtest_service import AlertTestService
from app.alerts.events import event_document
from app.alerts.history import AlertHistory
from app.alerts.read_schemas import AlertEventPage, AlertEventRead, AlertTestRequest, AlertTestResult
from app.alerts.router import Service as RuleService
from app.auth.policy import require
from app.auth.scopes import Scope
from app.core.deps import DbSession, RedisDep, SettingsDep
from app.core.pagination import CursorParam
from app.core.schemas import problem_responses
from app.keys.router import ActorDep
from app.trading.service import AnalysisRunner

router = APIRouter(prefix="/v1", tags=["alerts"])

JSON = "application/json"
EventIdPath = Annotated[uuid.UUID, Path(description="The alert event's id")]
TenantParam = Annotated[
    uuid.UUID | None, Query(description="Operators only: another tenant's alert events (others get 404).")
]


async def get_history(session: DbSession) -> AlertHistory:
    return AlertHistory(session)


History = Annotated[AlertHistory, Depends(get_history)]


async def get_test_service(
    request: Request, rules: RuleService, redis: RedisDep, settings: SettingsDep
) -> AlertTestService:
    runner: AnalysisRunner = request.app.state.analysis_runner
    return AlertTestService(rules, redis, settings, runner)


TestService = Annotated[AlertTestService, Depends(get_test_service)]


@router.get(
    "/alerts/events",
    response_model=AlertEventPage,
    summary="The tenant's alert events, newest first",
    description="Events in the order they were recorded (`created_at`, newest first), keyset-paginated. `from` "
    "(inclusive) and `to` (exclusive) bound `created_at` (RFC 3339 with a zone); `rule_id` keeps one rule's "
    "events. Each item is the document the webhook and the stream carry.",
    dependencies=[require(Scope.ALERTS_READ)],
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def list_events(
    history: History,
    actor: ActorDep,
    settings: SettingsDep,
    rule_id: Annotated[uuid.UUID | None, Query(description="Only this rule's events")] = None,
    since: Annotated[
        datetime | None, Query(alias="from", description="Recorded at or after this time (RFC 3339 with a zone)")
    ] = None,
    until: Annotated[
        datetime | None, Query(alias="to", description="Recorded before this time (RFC 3339 with a zone)")
    ] = None,
    cursor: CursorParam = None,
    limit: Annotated[
        int, Query(ge=1, le=10_000, description="Page size (capped by DELTAFLOW_ALERT_EVENT_PAGE_MAX)")
    ] = 50,
    tenant_id: TenantParam = None,
) -> Response:
    items, next_cursor = await history.list_events(
        actor,
        rule_id=rule_id,
        since=since,
        until=until,
        cursor=cursor,
        limit=min(limit, settings.alert_event_page_max),
        tenant_id=tenant_id,
    )
    # The documents as the stream and the webhook encode them (byte for byte), not re-serialised by a model.
    return Response(orjson.dumps({"items": items, "next_cursor": next_cursor}), media_type=JSON)


@router.get(
    "/alerts/events/{event_id}",
    response_model=AlertEventRead,
    summary="One alert event",
    dependencies=[require(Scope.ALERTS_READ)],
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def get_event(
    event_id: EventIdPath, history: History, actor: ActorDep, tenant_id: TenantParam = None
) -> Response:
    event = await history.get(actor, event_id, tenant_id)
    return Response(orjson.dumps(event_document(event)), media_type=JSON)


@router.post(
    "/alerts/test",
    response_model=AlertTestResult,
    summary="Backtest a rule: the stored closed bars where it would have fired",
    description="The rule as `POST /v1/alerts` takes it (validated the same way; nothing is created), replayed "
    "over the newest `bars` closed bars of its market with the live evaluation, after "
    "DELTAFLOW_ALERT_TEST_WARMUP_BARS bars that only warm the analysis up. The rule starts fresh at the first "
    "evaluated bar; `enabled` and `expires_at` do not matter here.",
    dependencies=[require(Scope.ALERTS_READ)],
    responses=problem_responses(401, 403, 422, 503),
)
async def backtest_alert(body: AlertTestRequest, service: TestService) -> Response:
    return Response(await service.run(body), media_type=JSON)
