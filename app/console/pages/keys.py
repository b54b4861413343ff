"""The keys page: list with status and last use, create (secret shown once), rotate with a grace choice, revoke
behind a confirmation that names the key. Every action goes through `KeyService`, as the API's routes do."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from app.auth.scopes import ROLE_RANK, ROLE_SCOPES, Role, Scope
from app.console.web import ConsoleUser, checked_form, current_user, is_htmx, operator_tenant, render
from app.core.deps import DbSession, SettingsDep
from app.core.errors import AppError
from app.keys.repository import KeyStatus
from app.keys.schemas import ApiKeyCreate, ApiKeyRotate
from app.keys.service import KeyService
from app.models import ApiKey
from app.tenants.repository import list_tenants

router = APIRouter(prefix="/console/keys", include_in_schema=False)
GRACE_CHOICES = ((0, "now"), (3600, "in 1 hour"), (86_400, "in 24 hours"), (7 * 86_400, "in 7 days"))
PAGE_SIZE = 100


def _service(request: Request, db: DbSession, settings: SettingsDep) -> KeyService:
    return KeyService(db, settings, request.app.state.key_invalidator)


def _roles_for(user: ConsoleUser) -> list[Role]:
    return [role for role in Role if ROLE_RANK[role] <= ROLE_RANK[user.principal.role]]


async def _table_context(
    request: Request, user: ConsoleUser, service: KeyService, status: KeyStatus | None
) -> dict[str, object]:
    tenant_id = operator_tenant(request, user)
    keys, next_cursor = await service.list_keys(
        user.actor, status=status, cursor=request.query_params.get("cursor") or None, limit=PAGE_SIZE,
        tenant_id=tenant_id,
    )  # fmt: skip
    now = datetime.now(UTC)
    sunset_window = timedelta(days=request.app.state.settings.key_sunset_warning_days)
    return {
        "keys": [service.to_read(key) for key in keys],
        "next_cursor": next_cursor,
        "status": status.value if status else "",
        "tenant_id": str(tenant_id) if tenant_id else "",
        "now": now,
        "sunset_window": sunset_window,
        "can_write": Scope.KEYS_WRITE in user.principal.scopes,
    }


@router.get("")
async def keys_page(request: Request, db: DbSession, settings: SettingsDep) -> Response:
    user = current_user(request)
    user.require(Scope.KEYS_READ)
    raw_status = request.query_params.get("status") or None
    status = KeyStatus(raw_status) if raw_status in {s.value for s in KeyStatus} else None
    context = await _table_context(request, user, _service(request, db, settings), status)
    if is_htmx(request) and request.headers.get("hx-target") == "keys-table":
        return render(request, "keys_table.html", context, user=user)
    tenants = await list_tenants(db, limit=1000, offset=0) if user.is_operator else []
    context.update(
        roles=_roles_for(user),
        scopes_by_role={role.value: sorted(s.value for s in ROLE_SCOPES[role]) for role in _roles_for(user)},
        max_days=settings.key_max_lifetime_days,
        tenants=tenants,
        grace_choices=GRACE_CHOICES,
        statuses=[s.value for s in KeyStatus],
    )
    return render(request, "keys.html", context, user=user)


@router.post("")
async def create_key(request: Request, db: DbSession, settings: SettingsDep) -> Response:
    user = current_user(request)
    user.require(Scope.KEYS_WRITE)
    form = await checked_form(request, user)
    service = _service(request, db, settings)

    async def create() -> tuple[ApiKey, str]:
        days = int(form.get("expires_days") or settings.key_max_lifetime_days)
        data = ApiKeyCreate(
            name=form.get("name").strip(),
            role=Role(form.get("role") or Role.READER.value),
            scopes=[Scope(s) for s in form.get_all("scopes")] or None,
            expires_in_seconds=days * 86_400,
        )
        return await service.create(user.actor, data, operator_tenant(request, user))

    return await _show_secret_once(request, user, service, "created", create)


@router.post("/{key_id}/rotate")
async def rotate_key(key_id: uuid.UUID, request: Request, db: DbSession, settings: SettingsDep) -> Response:
    user = current_user(request)
    user.require(Scope.KEYS_WRITE)
    form = await checked_form(request, user)
    service = _service(request, db, settings)
    grace = form.get("grace_seconds")

    async def rotate() -> tuple[ApiKey, str]:
        data = ApiKeyRotate(grace_seconds=int(grace) if grace.isdigit() else None)
        return await service.rotate(user.actor, key_id, data, operator_tenant(request, user))

    return await _show_secret_once(request, user, service, "rotated", rotate)


async def _show_secret_once(
    request: Request,
    user: ConsoleUser,
    service: KeyService,
    action: str,
    issue: Callable[[], Awaitable[tuple[ApiKey, str]]],
) -> Response:
    """Run a create or a rotation; show its secret (this once) or what was wrong with the form."""
    try:
        key, secret = await issue()
    except (ValidationError, ValueError) as error:
        return _form_error(request, user, _validation_message(error))
    except AppError as error:
        return _form_error(request, user, error.detail)
    context = {"key": service.to_read(key), "secret": secret, "action": action}
    return render(request, "key_secret.html", context, user=user, headers={"hx-trigger": "keys-changed"})


@router.get("/{key_id}/revoke")
async def confirm_revoke(key_id: uuid.UUID, request: Request, db: DbSession, settings: SettingsDep) -> Response:
    user = current_user(request)
    user.require(Scope.KEYS_WRITE)
    service = _service(request, db, settings)
    try:
        key = await service.get(user.actor, key_id, operator_tenant(request, user))
    except AppError as error:
        return _form_error(request, user, error.detail)
    return render(request, "key_revoke.html", {"key": service.to_read(key)}, user=user)


@router.post("/{key_id}/revoke")
async def revoke_key(key_id: uuid.UUID, request: Request, db: DbSession, settings: SettingsDep) -> Response:
    user = current_user(request)
    user.require(Scope.KEYS_WRITE)
    await checked_form(request, user)
    service = _service(request, db, settings)
    try:
        key = await service.revoke(user.actor, key_id, operator_tenant(request, user))
    except AppError as error:
        return _form_error(request, user, error.detail)
    context = {"message": f"Key “{key.name}” ({key.prefix}…{key.last_four}) is revoked: it is refused from now on."}
    return render(request, "notice.html", context, user=user, headers={"hx-trigger": "keys-changed"})


def _form_error(request: Request, user: ConsoleUser, message: str) -> Response:
    return render(request, "error.html", {"message": message}, user=user, status=422)


def _validation_message(error: ValidationError | ValueError) -> str:
    if isinstance(error, ValidationError):
        first = error.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first.get("loc", ()))
        return f"{field}: {first.get('msg', 'invalid value')}" if field else str(first.get("msg"))
    return "Invalid value: check the name, role, scopes and expiry."
