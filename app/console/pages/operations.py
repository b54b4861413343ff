"""The audit, feeds, webhook and tenants pages. Each reads and writes through the same repositories and services
as the API route that does the same thing (`GET /v1/audit`, `GET /v1/markets`, `PUT /v1/webhook`,
`/v1/tenants…`), under the same scopes."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from app.audit import repository as audit
from app.auth.scopes import Scope
from app.console.web import ConsoleUser, checked_form, current_user, is_htmx, render
from app.core.deps import DbSession, SettingsDep
from app.core.errors import AppError
from app.core.pagination import decode_cursor, encode_cursor
from app.market.feeds import parse_feeds
from app.market.store import read_feed_status
from app.tenants import repository as tenants
from app.tenants.schemas import QuotaSpec, RateLimitSpec, WebhookUpdate
from app.tenants.service import TenantService

router = APIRouter(prefix="/console", include_in_schema=False)
AUDIT_PAGE = 50


def _uuid(raw: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(raw) if raw else None
    except ValueError:
        return None


def _midnight(raw: str | None, *, next_day: bool = False) -> datetime | None:
    try:
        day = date.fromisoformat(raw) if raw else None
    except ValueError:
        return None
    if day is None:
        return None
    moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return moment + timedelta(days=1) if next_day else moment


@router.get("/audit")
async def audit_page(request: Request, db: DbSession, settings: SettingsDep) -> Response:
    user: ConsoleUser = current_user(request)
    user.require(Scope.AUDIT_READ)
    query = request.query_params
    action = query.get("action") or None
    try:
        after = decode_cursor(query.get("cursor") or None)
    except AppError:
        after = None
    events = await audit.list_events(
        db, user.principal.tenant_id, action=action, after=after, limit=AUDIT_PAGE + 1,
        actor_id=_uuid(query.get("actor")), since=_midnight(query.get("from")),
        until=_midnight(query.get("to"), next_day=True),
    )  # fmt: skip
    page = list(events[:AUDIT_PAGE])
    next_cursor = encode_cursor(page[-1].created_at, page[-1].id) if len(events) > AUDIT_PAGE else None
    filters = {key: query.get(key, "") for key in ("action", "actor", "from", "to")}
    return render(request, "audit.html", {"events": page, "next_cursor": next_cursor, "filters": filters}, user=user)


@router.get("/feeds")
async def feeds_page(request: Request, settings: SettingsDep) -> Response:
    user = current_user(request)
    user.require(Scope.MARKET_READ)
    feeds = await read_feed_status(request.app.state.redis, list(parse_feeds(settings.feeds)))
    template = "feeds_table.html" if is_htmx(request) else "feeds.html"
    return render(request, template, {"feeds": feeds}, user=user)


@router.get("/webhook")
async def webhook_page(request: Request, db: DbSession) -> Response:
    user = current_user(request)
    user.require(Scope.WEBHOOKS_WRITE)
    endpoint = await tenants.get_webhook(db, user.principal.tenant_id)
    deliveries = list(await tenants.list_deliveries(db, user.principal.tenant_id))[-20:][::-1]
    return render(request, "webhook.html", {"endpoint": endpoint, "deliveries": deliveries}, user=user)


@router.post("/webhook")
async def put_webhook(request: Request, db: DbSession, settings: SettingsDep) -> Response:
    user = current_user(request)
    user.require(Scope.WEBHOOKS_WRITE)
    form = await checked_form(request, user)
    service = TenantService(db, settings, request.app.state.key_invalidator)
    try:
        data = WebhookUpdate(url=form.get("url").strip(), rotate_secret=form.get("rotate_secret") == "on")  # type: ignore[arg-type]
        saved = await service.put_webhook(user.actor, data)
    except ValidationError as error:
        message = str(error.errors(include_url=False)[0].get("msg", "invalid URL"))
        return render(request, "error.html", {"message": f"URL: {message}"}, user=user, status=422)
    except AppError as error:
        return render(request, "error.html", {"message": error.detail}, user=user, status=422)
    return render(request, "webhook_saved.html", {"saved": saved}, user=user)


@router.get("/tenants")
async def tenants_page(request: Request, db: DbSession, settings: SettingsDep) -> Response:
    user = current_user(request)
    user.require(Scope.TENANTS_READ)
    service = TenantService(db, settings)
    rows = [service.to_read(tenant) for tenant in await service.list(limit=1000, offset=0)]
    return render(request, "tenants.html", {"tenants": rows}, user=user)


@router.post("/tenants")
async def create_tenant(request: Request, db: DbSession, settings: SettingsDep) -> Response:
    user = current_user(request)
    user.require(Scope.TENANTS_WRITE)
    form = await checked_form(request, user)
    service = TenantService(db, settings)
    try:
        await service.create(user.actor, form.get("name").strip(), _budget(form.get("per_second"), form.get("burst")))
    except (AppError, ValidationError, ValueError) as error:
        return render(request, "error.html", {"message": _message(error)}, user=user, status=422)
    return render(request, "notice.html", {"message": "Tenant created."}, user=user, headers={"hx-refresh": "true"})


@router.post("/tenants/{tenant_id}/rate-limit")
async def set_budget(tenant_id: uuid.UUID, request: Request, db: DbSession, settings: SettingsDep) -> Response:
    user = current_user(request)
    user.require(Scope.TENANTS_WRITE)
    form = await checked_form(request, user)
    service = TenantService(db, settings, request.app.state.key_invalidator)
    try:
        limit = None if form.get("clear") else _budget(form.get("per_second"), form.get("burst"))
        await service.set_rate_limit(user.actor, tenant_id, limit)
    except (AppError, ValidationError, ValueError) as error:
        return render(request, "error.html", {"message": _message(error)}, user=user, status=422)
    return render(request, "notice.html", {"message": "Budget saved."}, user=user, headers={"hx-refresh": "true"})


@router.post("/tenants/{tenant_id}/quota")
async def set_quota(tenant_id: uuid.UUID, request: Request, db: DbSession, settings: SettingsDep) -> Response:
    user = current_user(request)
    user.require(Scope.TENANTS_WRITE)
    form = await checked_form(request, user)
    service = TenantService(db, settings, request.app.state.key_invalidator)
    try:
        quota = None if form.get("clear") else QuotaSpec(monthly_requests=int(form.get("monthly_requests")))
        await service.set_quota(user.actor, tenant_id, None if quota is None else quota.monthly_requests)
    except (AppError, ValidationError, ValueError) as error:
        return render(request, "error.html", {"message": _message(error)}, user=user, status=422)
    return render(request, "notice.html", {"message": "Quota saved."}, user=user, headers={"hx-refresh": "true"})


def _budget(per_second: str, burst: str) -> RateLimitSpec | None:
    if not per_second and not burst:
        return None
    return RateLimitSpec(per_second=float(per_second), burst=int(burst))


def _message(error: Exception) -> str:
    if isinstance(error, AppError):
        return error.detail
    if isinstance(error, ValidationError):
        first = error.errors(include_url=False)[0]
        return f"{'.'.join(str(p) for p in first.get('loc', ()))}: {first.get('msg')}"
    return "Give numbers for the rate and the burst."
