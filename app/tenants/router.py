"""/v1/tenants (operators), /v1/webhook and /v1/audit."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from app.audit import repository as audit_repository
from app.auth.policy import require
from app.auth.scopes import Scope
from app.core.deps import DbSession, SettingsDep
from app.core.pagination import CursorParam, decode_cursor, encode_cursor
from app.core.schemas import problem_responses
from app.keys.router import ActorDep
from app.tenants.schemas import (
    AuditEventRead,
    AuditPage,
    QuotaSpec,
    RateLimitSpec,
    TenantCreate,
    TenantRead,
    WebhookRead,
    WebhookUpdate,
)
from app.tenants.service import TenantService

router = APIRouter(prefix="/v1", tags=["tenants"])


async def get_tenant_service(request: Request, session: DbSession, settings: SettingsDep) -> TenantService:
    return TenantService(session, settings, request.app.state.key_invalidator)


Service = Annotated[TenantService, Depends(get_tenant_service)]


@router.post(
    "/tenants",
    response_model=TenantRead,
    status_code=201,
    summary="Create a tenant (operators)",
    dependencies=[require(Scope.TENANTS_WRITE)],
    responses=problem_responses(401, 403, 409, 422, 503),
)
async def create_tenant(body: TenantCreate, service: Service, actor: ActorDep) -> TenantRead:
    return service.to_read(await service.create(actor, body.name, body.rate_limit))


@router.get(
    "/tenants",
    response_model=list[TenantRead],
    summary="List tenants (operators)",
    dependencies=[require(Scope.TENANTS_READ)],
    responses=problem_responses(401, 403, 422, 503),
)
async def list_tenants(
    service: Service,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size")] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000, description="Tenants to skip (oldest first)")] = 0,
) -> list[TenantRead]:
    tenants = await service.list(limit=limit, offset=offset)
    return [service.to_read(t) for t in tenants]


TenantIdPath = Annotated[uuid.UUID, Path(description="The tenant's id (`GET /v1/tenants`).")]


@router.put(
    "/tenants/{tenant_id}/rate-limit",
    response_model=TenantRead,
    summary="Give a tenant its own request budget (operators); its keys apply it within a second",
    dependencies=[require(Scope.TENANTS_WRITE)],
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def put_rate_limit(tenant_id: TenantIdPath, body: RateLimitSpec, service: Service, actor: ActorDep) -> TenantRead:
    return service.to_read(await service.set_rate_limit(actor, tenant_id, body))


@router.delete(
    "/tenants/{tenant_id}/rate-limit",
    response_model=TenantRead,
    summary="Put a tenant back on the service's default budget (operators)",
    dependencies=[require(Scope.TENANTS_WRITE)],
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def delete_rate_limit(tenant_id: TenantIdPath, service: Service, actor: ActorDep) -> TenantRead:
    return service.to_read(await service.set_rate_limit(actor, tenant_id, None))


@router.put(
    "/tenants/{tenant_id}/quota",
    response_model=TenantRead,
    summary="Give a tenant a monthly request quota (operators); its keys apply it within a second",
    dependencies=[require(Scope.TENANTS_WRITE)],
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def put_quota(tenant_id: TenantIdPath, body: QuotaSpec, service: Service, actor: ActorDep) -> TenantRead:
    return service.to_read(await service.set_quota(actor, tenant_id, body.monthly_requests))


@router.delete(
    "/tenants/{tenant_id}/quota",
    response_model=TenantRead,
    summary="Remove a tenant's monthly quota (operators)",
    dependencies=[require(Scope.TENANTS_WRITE)],
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def delete_quota(tenant_id: TenantIdPath, service: Service, actor: ActorDep) -> TenantRead:
    return service.to_read(await service.set_quota(actor, tenant_id, None))


@router.put(
    "/webhook",
    response_model=WebhookRead,
    summary="Set your tenant's webhook URL (expiry notices are POSTed there, HMAC-signed)",
    dependencies=[require(Scope.WEBHOOKS_WRITE)],
    responses=problem_responses(401, 403, 422, 503),
)
async def put_webhook(body: WebhookUpdate, service: Service, actor: ActorDep) -> WebhookRead:
    return await service.put_webhook(actor, body)


@router.get(
    "/audit",
    response_model=AuditPage,
    summary="Your tenant's audit trail, newest first",
    dependencies=[require(Scope.AUDIT_READ)],
    responses=problem_responses(401, 403, 422, 503),
)
async def list_audit(
    session: DbSession,
    actor: ActorDep,
    settings: SettingsDep,
    action: Annotated[
        str | None,
        # Actions are dotted lower-case names; anything else cannot match (and a NUL would fail in PostgreSQL).
        Query(description="Only events with this action, e.g. `key.revoked`", pattern=r"^[a-z0-9_.]{1,100}$"),
    ] = None,
    cursor: CursorParam = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size")] = 50,
) -> AuditPage:
    limit = min(limit, settings.audit_page_max)
    events = await audit_repository.list_events(
        session, actor.principal.tenant_id, action=action, after=decode_cursor(cursor), limit=limit + 1
    )
    items = list(events[:limit])
    next_cursor = encode_cursor(items[-1].created_at, items[-1].id) if len(events) > limit else None
    return AuditPage(
        items=[
            AuditEventRead(
                id=e.id,
                tenant_id=e.tenant_id,
                actor_key_id=e.actor_key_id,
                actor_user_id=e.actor_user_id,
                action=e.action,
                target=e.target,
                request_id=e.request_id,
                created_at=e.created_at,
                details=e.details,
            )
            for e in items
        ],
        next_cursor=next_cursor,
    )
