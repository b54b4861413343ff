"""/v1/keys and /v1/me: thin HTTP layer over KeyService."""

from __future__ import annotations

import uuid
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request, Response

from app.auth.metering import RATE_LIMITER_STATE, policy_of
from app.auth.policy import CurrentPrincipal, current_principal, require
from app.auth.scopes import Scope
from app.core.deps import DbSession, SettingsDep
from app.core.errors import request_id_of
from app.core.pagination import CursorParam
from app.core.schemas import problem_responses
from app.keys.repository import KeyStatus
from app.keys.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyPage, ApiKeyRead, ApiKeyRotate, Me
from app.keys.service import Actor, KeyService
from app.models import ApiKey

router = APIRouter(prefix="/v1", tags=["keys"])
# /v1/me on its own router so the app can try it early: FastAPI matches included routers in order, route by
# route, and this is the route every client and load balancer calls to check a key.
me_router = APIRouter(prefix="/v1", tags=["keys"])

AUTH_ERRORS = problem_responses(401, 403, 503)
KeyIdPath = Annotated[uuid.UUID, Path(description="The key's id")]
TenantParam = Annotated[
    uuid.UUID | None, Query(description="Operators only: act on another tenant's keys (others get 404).")
]


async def get_key_service(request: Request, session: DbSession, settings: SettingsDep) -> KeyService:
    return KeyService(session, settings, request.app.state.key_invalidator)


async def get_actor(request: Request, principal: CurrentPrincipal) -> Actor:
    return Actor(principal=principal, request_id=request_id_of(request.scope))


Service = Annotated[KeyService, Depends(get_key_service)]
ActorDep = Annotated[Actor, Depends(get_actor)]


def _created(service: KeyService, key: ApiKey, secret: str) -> ApiKeyCreated:
    read = service.to_read(key)
    return ApiKeyCreated(**read.model_dump(), secret=secret)


@me_router.get(
    "/me",
    response_model=Me,
    summary="The calling key: tenant, role, scopes, expiry",
    dependencies=[require()],
    responses=AUTH_ERRORS,
)
async def me(request: Request) -> Response:
    # Pre-encoded: this is the cheapest authenticated route and the one load balancers and clients poll, so it
    # skips response-model validation (the shape is still documented by `response_model=Me`) and reads the
    # principal straight from the request state rather than through a second dependency.
    principal = await current_principal(request)
    body: dict[str, object] = {
        "key_id": str(principal.key_id),
        "tenant_id": str(principal.tenant_id),
        "name": principal.name,
        "role": principal.role.value,
        "scopes": sorted(scope.value for scope in principal.scopes),
        "expires_at": principal.expires_at.isoformat().replace("+00:00", "Z"),
        "rate_limit": None,
    }
    policy = policy_of(principal, getattr(request.app.state, RATE_LIMITER_STATE, None))
    if policy is not None:
        source = "tenant" if principal.rate_limit is not None else "default"
        body["rate_limit"] = {"per_second": policy.per_second, "burst": policy.burst, "source": source}
    return Response(orjson.dumps(body), media_type="application/json")


@router.post(
    "/keys",
    response_model=ApiKeyCreated,
    status_code=201,
    summary="Create a key (the secret is shown once)",
    dependencies=[require(Scope.KEYS_WRITE)],
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def create_key(
    body: ApiKeyCreate, service: Service, actor: ActorDep, tenant_id: TenantParam = None
) -> ApiKeyCreated:
    key, secret = await service.create(actor, body, tenant_id)
    return _created(service, key, secret)


@router.get(
    "/keys",
    response_model=ApiKeyPage,
    summary="List keys, newest first",
    dependencies=[require(Scope.KEYS_READ)],
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def list_keys(
    service: Service,
    actor: ActorDep,
    settings: SettingsDep,
    status: Annotated[KeyStatus | None, Query(description="Only keys in this state")] = None,
    cursor: CursorParam = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size (capped by DELTAFLOW_KEYS_PAGE_MAX)")] = 50,
    tenant_id: TenantParam = None,
) -> ApiKeyPage:
    items, next_cursor = await service.list_keys(
        actor, status=status, cursor=cursor, limit=min(limit, settings.keys_page_max), tenant_id=tenant_id
    )
    return ApiKeyPage(items=[service.to_read(key) for key in items], next_cursor=next_cursor)


@router.get(
    "/keys/{key_id}",
    response_model=ApiKeyRead,
    summary="One key",
    dependencies=[require(Scope.KEYS_READ)],
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def get_key(key_id: KeyIdPath, service: Service, actor: ActorDep, tenant_id: TenantParam = None) -> ApiKeyRead:
    return service.to_read(await service.get(actor, key_id, tenant_id))


@router.post(
    "/keys/{key_id}/rotate",
    response_model=ApiKeyCreated,
    status_code=201,
    summary="Issue a successor (same role and scopes); the old key works for a grace period",
    dependencies=[require(Scope.KEYS_WRITE)],
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
async def rotate_key(
    key_id: KeyIdPath,
    service: Service,
    actor: ActorDep,
    body: ApiKeyRotate | None = None,
    tenant_id: TenantParam = None,
) -> ApiKeyCreated:
    successor, secret = await service.rotate(actor, key_id, body or ApiKeyRotate(), tenant_id)
    return _created(service, successor, secret)


@router.post(
    "/keys/{key_id}/revoke",
    response_model=ApiKeyRead,
    summary="Revoke a key at once (every instance rejects it within a second)",
    dependencies=[require(Scope.KEYS_WRITE)],
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def revoke_key(key_id: KeyIdPath, service: Service, actor: ActorDep, tenant_id: TenantParam = None) -> ApiKeyRead:
    return service.to_read(await service.revoke(actor, key_id, tenant_id))
