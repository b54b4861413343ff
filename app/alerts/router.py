"""/v1/alerts: thin HTTP layer over AlertService."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from app.alerts.schemas import AlertRuleCreate, AlertRulePage, AlertRuleRead, AlertRuleUpdate
from app.alerts.service import AlertService
from app.auth.policy import require
from app.auth.scopes import Scope
from app.core.deps import DbSession, RedisDep, SettingsDep
from app.core.pagination import CursorParam
from app.core.schemas import problem_responses
from app.keys.router import ActorDep

router = APIRouter(prefix="/v1", tags=["alerts"])

RuleIdPath = Annotated[uuid.UUID, Path(description="The alert rule's id")]
TenantParam = Annotated[
    uuid.UUID | None, Query(description="Operators only: act on another tenant's alert rules (others get 404).")
]


async def get_alert_service(session: DbSession, settings: SettingsDep, redis: RedisDep) -> AlertService:
    return AlertService(session, settings, redis)


Service = Annotated[AlertService, Depends(get_alert_service)]


@router.post(
    "/alerts",
    response_model=AlertRuleRead,
    status_code=201,
    summary="Create an alert rule on a market's closed bars",
    dependencies=[require(Scope.ALERTS_WRITE)],
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
async def create_alert(
    body: AlertRuleCreate, service: Service, actor: ActorDep, tenant_id: TenantParam = None
) -> AlertRuleRead:
    return service.to_read(await service.create(actor, body, tenant_id))


@router.get(
    "/alerts",
    response_model=AlertRulePage,
    summary="List alert rules, newest first",
    dependencies=[require(Scope.ALERTS_READ)],
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def list_alerts(
    service: Service,
    actor: ActorDep,
    settings: SettingsDep,
    cursor: CursorParam = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size (capped by DELTAFLOW_ALERT_PAGE_MAX)")] = 50,
    tenant_id: TenantParam = None,
) -> AlertRulePage:
    items, next_cursor = await service.list_rules(
        actor, cursor=cursor, limit=min(limit, settings.alert_page_max), tenant_id=tenant_id
    )
    return AlertRulePage(items=[service.to_read(rule) for rule in items], next_cursor=next_cursor)


@router.get(
    "/alerts/{rule_id}",
    response_model=AlertRuleRead,
    summary="One alert rule",
    dependencies=[require(Scope.ALERTS_READ)],
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def get_alert(
    rule_id: RuleIdPath, service: Service, actor: ActorDep, tenant_id: TenantParam = None
) -> AlertRuleRead:
    return service.to_read(await service.get(actor, rule_id, tenant_id))


@router.patch(
    "/alerts/{rule_id}",
    response_model=AlertRuleRead,
    summary="Change an alert rule (members given replace the rule's)",
    dependencies=[require(Scope.ALERTS_WRITE)],
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def update_alert(
    rule_id: RuleIdPath, body: AlertRuleUpdate, service: Service, actor: ActorDep, tenant_id: TenantParam = None
) -> AlertRuleRead:
    return service.to_read(await service.update(actor, rule_id, body, tenant_id))


@router.delete(
    "/alerts/{rule_id}",
    status_code=204,
    response_class=Response,
    summary="Delete an alert rule",
    dependencies=[require(Scope.ALERTS_WRITE)],
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def delete_alert(
    rule_id: RuleIdPath, service: Service, actor: ActorDep, tenant_id: TenantParam = None
) -> Response:
    await service.delete(actor, rule_id, tenant_id)
    return Response(status_code=204)
