"""All SQL of webhook delivery: the outbox (`webhook_deliveries`), the destinations' health (the tenant's endpoint,
an alert rule's own URL) and replay. Statements that decide between instances are compare-and-set updates, so they
hold on PostgreSQL (READ COMMITTED) and SQLite (one writer) alike."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, exists, insert, literal, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.models import AlertEvent, AlertRule, WebhookDelivery, WebhookEndpoint

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
# Whose delivery health a row's outcome updates: the tenant's endpoint (keyed by tenant id) or a rule's own URL.
DestinationKind = Literal["endpoint", "rule"]


# --- the outbox --------------------------------------------------------------------------------------------------


async def due_deliveries(session: AsyncSession, now: datetime, limit: int) -> Sequence[WebhookDelivery]:
    query = (
        select(WebhookDelivery)
        .where(WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
    )
    return (await session.execute(query)).scalars().all()


async def claim(session: AsyncSession, delivery_id: uuid.UUID, seen_next_attempt_at: datetime, lease: datetime) -> bool:
    """Only one instance moves `next_attempt_at` from what it saw to its lease: the others match no row. An attempt
    that outlives its lease may be claimed again (the lease is far longer than the attempt timeout)."""
    result = await session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.status == PENDING,
            WebhookDelivery.next_attempt_at == seen_next_attempt_at,
        )
        .values(next_attempt_at=lease)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


async def finish(session: AsyncSession, delivery_id: uuid.UUID, lease: datetime, values: dict[str, Any]) -> bool:
    """Record an attempt, only if the row is still this claim's (pending, at its lease): a claim that lost its lease
    to another instance, or a row requeued or closed meanwhile, records nothing."""
    result = await session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.status == PENDING,
            WebhookDelivery.next_attempt_at == lease,
        )
        .values(**values)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


async def close_siblings(
    session: AsyncSession, tenant_id: uuid.UUID, message_id: str, delivered_by: uuid.UUID, now: datetime
) -> None:
    """A message is delivered once: its other pending deliveries (an original still retrying after a redelivery
    succeeded) are closed instead of sending it again."""
    await session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.tenant_id == tenant_id,
            WebhookDelivery.message_id == message_id,
            WebhookDelivery.status == PENDING,
            WebhookDelivery.id != delivered_by,
        )
        .values(status=DELIVERED, delivered_at=now, last_error=f"delivered by delivery {delivered_by}")
    )


# --- destinations ------------------------------------------------------------------------------------------------


async def get_endpoint(session: AsyncSession, tenant_id: uuid.UUID) -> WebhookEndpoint | None:
    return await session.get(WebhookEndpoint, tenant_id)


async def rule_of_event(session: AsyncSession, alert_event_id: uuid.UUID) -> AlertRule | None:
    """The rule an alert event came from (None once the rule was deleted)."""
    query = (
        select(AlertRule).join(AlertEvent, AlertEvent.rule_id == AlertRule.id).where(AlertEvent.id == alert_event_id)
    )
    return (await session.execute(query)).scalar_one_or_none()


def _health(kind: DestinationKind, key: uuid.UUID) -> tuple[Any, ColumnElement[bool], Any, Any]:
    """(table, row filter, failing-since column, disabled-at column) of an endpoint (`endpoint`, by tenant id) or a
    rule's own destination (`rule`, by rule id)."""
    if kind == "endpoint":
        return (
            WebhookEndpoint,
            WebhookEndpoint.tenant_id == key,
            WebhookEndpoint.failing_since,
            WebhookEndpoint.disabled_at,
        )
    return AlertRule, AlertRule.id == key, AlertRule.destination_failing_since, AlertRule.destination_disabled_at


async def mark_succeeded(session: AsyncSession, kind: DestinationKind, key: uuid.UUID) -> None:
    table, row, failing_since, _ = _health(kind, key)
    # Filtered on a set mark, so a healthy destination costs no write per delivery.
    await session.execute(update(table).where(row, failing_since.is_not(None)).values({failing_since: None}))


async def mark_failed(
    session: AsyncSession, kind: DestinationKind, key: uuid.UUID, now: datetime, disable_before: datetime
) -> bool:
    """Start the destination's run of failures (kept if one is running), then disable it if that run began at or
    before `disable_before`. True when this call disabled it (of concurrent callers exactly one)."""
    table, row, failing_since, disabled_at = _health(kind, key)
    await session.execute(update(table).where(row, failing_since.is_(None)).values({failing_since: now}))
    result = await session.execute(
        update(table).where(row, disabled_at.is_(None), failing_since <= disable_before).values({disabled_at: now})
    )
    return bool(getattr(result, "rowcount", 0) == 1)


async def disable(session: AsyncSession, kind: DestinationKind, key: uuid.UUID, now: datetime) -> bool:
    """Disable the destination now (a 410). True when this call did (it was enabled)."""
    table, row, _, disabled_at = _health(kind, key)
    result = await session.execute(update(table).where(row, disabled_at.is_(None)).values({disabled_at: now}))
    return bool(getattr(result, "rowcount", 0) == 1)


# --- replay ------------------------------------------------------------------------------------------------------


async def get_event(session: AsyncSession, tenant_id: uuid.UUID | None, event_id: uuid.UUID) -> AlertEvent | None:
    """An alert event of the tenant (None: any tenant's, for operators)."""
    query = select(AlertEvent).where(AlertEvent.id == event_id)
    if tenant_id is not None:
        query = query.where(AlertEvent.tenant_id == tenant_id)
    if session.get_bind().dialect.name == "postgresql":
        # Redeliveries of one event queue here, so each sees the one before it (see insert_redelivery).
        query = query.with_for_update(key_share=True)
    return (await session.execute(query)).scalar_one_or_none()


async def last_delivery_url(session: AsyncSession, event_id: uuid.UUID) -> tuple[bool, str | None]:
    """(whether the event was ever queued for delivery, the URL of its latest delivery: None for the endpoint)."""
    query = (
        select(WebhookDelivery.url)
        .where(WebhookDelivery.alert_event_id == event_id)
        .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
        .limit(1)
    )
    row = (await session.execute(query)).first()
    return (False, None) if row is None else (True, row.url)


async def insert_redelivery(session: AsyncSession, values: dict[str, Any]) -> tuple[uuid.UUID, bool]:
    """Queue a delivery of an event unless one to the same destination is queued and not yet tried (then that one
    is returned: it is on its way, and a second would only reach the receiver twice). One `INSERT … SELECT … WHERE
    NOT EXISTS`: on PostgreSQL the event's row is locked first (get_event), so concurrent redeliveries of one event
    queue and each sees what the one before committed; SQLite has one writer, and an INSERT takes the write lock
    before it reads. Returns (the delivery's id, whether this call queued it)."""
    waiting = exists().where(
        WebhookDelivery.alert_event_id == values["alert_event_id"],
        WebhookDelivery.status == PENDING,
        WebhookDelivery.attempts == 0,
        WebhookDelivery.url.is_not_distinct_from(values["url"]),
    )
    columns = list(values)
    table = WebhookDelivery.__table__
    row = select(*(literal(values[name], type_=table.c[name].type) for name in columns)).where(~waiting)
    statement = insert(WebhookDelivery).from_select(columns, row).returning(WebhookDelivery.id)
    inserted: uuid.UUID | None = (await session.execute(statement)).scalar_one_or_none()
    if inserted is not None:
        return inserted, True
    existing = (
        select(WebhookDelivery.id)
        .where(
            WebhookDelivery.alert_event_id == values["alert_event_id"],
            WebhookDelivery.status == PENDING,
            WebhookDelivery.attempts == 0,
            WebhookDelivery.url.is_not_distinct_from(values["url"]),
        )
        .order_by(WebhookDelivery.created_at)
        .limit(1)
    )
    return (await session.execute(existing)).scalar_one(), False


async def requeue_failed(session: AsyncSession, tenant_id: uuid.UUID, since: datetime, now: datetime) -> int:
    """Put the tenant's failed deliveries created at or after `since` back in the queue, due now, their schedule
    started afresh. One row per message: not one whose message another delivery delivered or still carries, and of
    several failed deliveries of one message (an original and its redeliveries) only the newest. One UPDATE, so
    concurrent recoveries each requeue a row at most once (a row another one requeued is no longer failed)."""
    other = aliased(WebhookDelivery)
    superseded = exists().where(
        other.tenant_id == WebhookDelivery.tenant_id,
        other.message_id == WebhookDelivery.message_id,
        other.id != WebhookDelivery.id,
        or_(
            other.status != FAILED,
            tuple_(other.created_at, other.id) > tuple_(WebhookDelivery.created_at, WebhookDelivery.id),
        ),
    )
    statement = (
        update(WebhookDelivery)
        .where(
            and_(
                WebhookDelivery.tenant_id == tenant_id,
                WebhookDelivery.status == FAILED,
                WebhookDelivery.created_at >= since,
                ~superseded,
            )
        )
        .values(status=PENDING, attempts=0, next_attempt_at=now)
        .execution_options(synchronize_session=False)
    )
    result = await session.execute(statement)
    return int(getattr(result, "rowcount", 0))
