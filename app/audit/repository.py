"""All SQL for the audit trail: inserts and tenant-filtered reads only (append-only by construction)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import AuditEvent


def record(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    actor_key_id: uuid.UUID | None,
    action: str,
    target: str | None,
    request_id: str | None,
    details: dict[str, Any] | None = None,
    actor_user_id: uuid.UUID | None = None,
) -> AuditEvent:
    event = AuditEvent(
        tenant_id=tenant_id,
        actor_key_id=actor_key_id,
        actor_user_id=actor_user_id,
        action=action,
        target=target,
        request_id=request_id,
        details=details or {},
    )
    session.add(event)
    return event


async def list_events(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    *,
    action: str | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
    actor_id: uuid.UUID | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Sequence[AuditEvent]:
    """Newest first, keyset-paginated; `actor_id` matches the acting key or user, `since`/`until` bound the time
    (inclusive / exclusive)."""
    query = select(AuditEvent).where(AuditEvent.tenant_id == tenant_id)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    if actor_id is not None:
        query = query.where(or_(AuditEvent.actor_key_id == actor_id, AuditEvent.actor_user_id == actor_id))
    if since is not None:
        query = query.where(AuditEvent.created_at >= since)
    if until is not None:
        query = query.where(AuditEvent.created_at < until)
    if after is not None:
        created_at, event_id = after
        query = query.where(
            or_(
                AuditEvent.created_at < created_at,
                and_(AuditEvent.created_at == created_at, AuditEvent.id < event_id),
            )
        )
    query = query.order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc()).limit(limit)
    return (await session.execute(query)).scalars().all()
