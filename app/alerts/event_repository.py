"""All SQL of the alert history and the stream's catch-up. Every query is filtered by tenant (operators' reads of
one event by id are the one named exception)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import AlertEvent

# The smallest UUID: (t, NIL) sorts before every event created at t.
NIL = uuid.UUID(int=0)


async def list_events(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    *,
    rule_id: uuid.UUID | None,
    since: datetime | None,
    until: datetime | None,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> Sequence[AlertEvent]:
    """Newest first, keyset-paginated on (created_at, id): `before` is the last row of the previous page.
    `since` is inclusive and `until` exclusive, both on `created_at`."""
    query = select(AlertEvent).where(AlertEvent.tenant_id == tenant_id)
    if rule_id is not None:
        query = query.where(AlertEvent.rule_id == rule_id)
    if since is not None:
        query = query.where(AlertEvent.created_at >= since)
    if until is not None:
        query = query.where(AlertEvent.created_at < until)
    if before is not None:
        created_at, event_id = before
        query = query.where(
            or_(AlertEvent.created_at < created_at, and_(AlertEvent.created_at == created_at, AlertEvent.id < event_id))
        )
    query = query.order_by(AlertEvent.created_at.desc(), AlertEvent.id.desc()).limit(limit)
    return (await session.execute(query)).scalars().all()


async def get_event(session: AsyncSession, tenant_id: uuid.UUID, event_id: uuid.UUID) -> AlertEvent | None:
    query = select(AlertEvent).where(AlertEvent.tenant_id == tenant_id, AlertEvent.id == event_id)
    return (await session.execute(query)).scalar_one_or_none()


async def get_event_any_tenant(session: AsyncSession, event_id: uuid.UUID) -> AlertEvent | None:
    """Operators only (cross-tenant access is their role's privilege)."""
    return await session.get(AlertEvent, event_id)


async def events_after(
    session: AsyncSession, tenant_id: uuid.UUID, *, after: tuple[datetime, uuid.UUID], limit: int
) -> Sequence[AlertEvent]:
    """Oldest first: the tenant's events strictly after `after` in (created_at, id) order (the stream's catch-up)."""
    created_at, event_id = after
    query = (
        select(AlertEvent)
        .where(
            AlertEvent.tenant_id == tenant_id,
            or_(
                AlertEvent.created_at > created_at, and_(AlertEvent.created_at == created_at, AlertEvent.id > event_id)
            ),
        )
        .order_by(AlertEvent.created_at, AlertEvent.id)
        .limit(limit)
    )
    return (await session.execute(query)).scalars().all()
