"""All SQL for alert rules. Every query that serves a caller is filtered by tenant (operators' cross-tenant reads
are the one named exception)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import AlertRule, Tenant


async def insert_within_limit(session: AsyncSession, values: dict[str, Any], limit: int) -> uuid.UUID | None:
    """Insert a rule unless its tenant already has `limit`: one `INSERT … SELECT … WHERE (SELECT count(*) …) <
    limit`, so the count and the insert cannot be separated by another creation. On PostgreSQL the tenant's row is
    locked first (`FOR NO KEY UPDATE`: creations of one tenant queue, foreign-key checks of its other tables do
    not), because under READ COMMITTED two statements could otherwise count the same rows; each then counts what
    the one before it committed. SQLite has one writer, and an INSERT takes the write lock before it reads.
    Returns the new id, or None when the tenant is at its limit."""
    tenant_id = values["tenant_id"]
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update(key_share=True))
    columns = list(values)
    table = AlertRule.__table__
    existing = select(func.count()).select_from(AlertRule).where(AlertRule.tenant_id == tenant_id).scalar_subquery()
    row = select(*(literal(values[name], type_=table.c[name].type) for name in columns)).where(existing < limit)
    statement = insert(AlertRule).from_select(columns, row).returning(AlertRule.id)
    inserted: uuid.UUID | None = (await session.execute(statement)).scalar_one_or_none()
    return inserted


async def count_rules(session: AsyncSession, tenant_id: uuid.UUID) -> int:
    query = select(func.count()).select_from(AlertRule).where(AlertRule.tenant_id == tenant_id)
    return int((await session.execute(query)).scalar_one())


async def get_rule(session: AsyncSession, tenant_id: uuid.UUID, rule_id: uuid.UUID) -> AlertRule | None:
    query = select(AlertRule).where(AlertRule.tenant_id == tenant_id, AlertRule.id == rule_id)
    return (await session.execute(query)).scalar_one_or_none()


async def get_rule_any_tenant(session: AsyncSession, rule_id: uuid.UUID) -> AlertRule | None:
    """Operators only (cross-tenant access is their role's privilege)."""
    return await session.get(AlertRule, rule_id)


async def list_rules(
    session: AsyncSession, tenant_id: uuid.UUID, *, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> Sequence[AlertRule]:
    """Newest first, keyset-paginated on (created_at, id) so pages stay stable while rules are added."""
    query = select(AlertRule).where(AlertRule.tenant_id == tenant_id)
    if after is not None:
        created_at, rule_id = after
        query = query.where(
            or_(AlertRule.created_at < created_at, and_(AlertRule.created_at == created_at, AlertRule.id < rule_id))
        )
    query = query.order_by(AlertRule.created_at.desc(), AlertRule.id.desc()).limit(limit)
    return (await session.execute(query)).scalars().all()


async def delete_rule(session: AsyncSession, tenant_id: uuid.UUID, rule_id: uuid.UUID) -> bool:
    """True when this statement deleted the row: of concurrent deletions exactly one does (the others find none)."""
    result = await session.execute(delete(AlertRule).where(AlertRule.tenant_id == tenant_id, AlertRule.id == rule_id))
    return bool(getattr(result, "rowcount", 0) == 1)
