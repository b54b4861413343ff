"""The alert history: a tenant's alert events, newest first, and one event by id (`GET /v1/alerts/events…`).

Decisions (where the issue is silent):
- `from`/`to` bound `created_at` (when the event was recorded, RFC 3339 with a zone; `from` inclusive, `to`
  exclusive), the order the pages and the stream use, so a range and its pages always agree and the index on
  (tenant, created_at, id) serves them. Each item's `bar_ms` says which bar fired it; an event is recorded within
  moments of its bar's close unless the evaluating instances were down at the close.
- The history outlives its rules: a deleted rule's events stay, with `rule_id: null` and the name the rule had
  (so `rule_id=` finds only a live rule's events).
- Tenancy as for rules: the caller's own tenant; operators pass `tenant_id`, or read any event by id. Anyone
  else gets 404 for another tenant's event, never 403.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.alerts import event_repository
from app.alerts.events import event_document
from app.core.errors import AppError
from app.core.pagination import decode_cursor, encode_cursor
from app.keys.service import Actor, resolve_tenant
from app.models import AlertEvent


class AlertEventNotFound(AppError):
    slug = "alert-event-not-found"
    title = "Alert event not found"
    status = 404
    description = "No alert event with this id exists in your tenant."


class AlertEventRangeInvalid(AppError):
    slug = "alert-event-range-invalid"
    title = "Invalid alert event range"
    status = 422
    description = (
        "`from` and `to` are RFC 3339 times with a zone (`2026-12-02T08:00:00Z`), and `from` is before `to`. "
        "`errors` points at the offending parameter."
    )


def _range_error(parameter: str, detail: str) -> AlertEventRangeInvalid:
    return AlertEventRangeInvalid(
        f"{parameter}: {detail}",
        extensions={"errors": [{"parameter": parameter, "in": "query", "detail": detail}]},
    )


def _utc(parameter: str, value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise _range_error(parameter, "the time needs a zone (e.g. Z)")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise _range_error(parameter, "out of range once converted to UTC") from None


class AlertHistory:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def list_events(
        self,
        actor: Actor,
        *,
        rule_id: uuid.UUID | None,
        since: datetime | None,
        until: datetime | None,
        cursor: str | None,
        limit: int,
        tenant_id: uuid.UUID | None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """(event documents newest first, the next page's cursor or None)."""
        since, until = _utc("from", since), _utc("to", until)
        if since is not None and until is not None and since >= until:
            raise _range_error("to", "must be after `from`")
        before = decode_cursor(cursor)
        tenant = await resolve_tenant(self.session, actor, tenant_id)
        page = await event_repository.list_events(
            self.session, tenant, rule_id=rule_id, since=since, until=until, before=before, limit=limit + 1
        )
        items = list(page[:limit])
        next_cursor = encode_cursor(items[-1].created_at, items[-1].id) if len(page) > limit else None
        return [event_document(event) for event in items], next_cursor

    async def get(self, actor: Actor, event_id: uuid.UUID, tenant_id: uuid.UUID | None) -> AlertEvent:
        if actor.principal.is_operator and tenant_id is None:
            event = await event_repository.get_event_any_tenant(self.session, event_id)
        else:
            tenant = await resolve_tenant(self.session, actor, tenant_id)
            event = await event_repository.get_event(self.session, tenant, event_id)
        if event is None:
            raise AlertEventNotFound(f"Alert event {event_id} not found.")
        return event
