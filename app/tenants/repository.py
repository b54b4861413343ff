"""All SQL for tenants and their webhook endpoints and deliveries."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Tenant, WebhookDelivery, WebhookEndpoint


async def get_tenant(session: AsyncSession, tenant_id: uuid.UUID) -> Tenant | None:
    return await session.get(Tenant, tenant_id)


async def get_tenant_by_name(session: AsyncSession, name: str) -> Tenant | None:
    return (await session.execute(select(Tenant).where(Tenant.name == name))).scalar_one_or_none()


async def list_tenants(session: AsyncSession, *, limit: int, offset: int) -> Sequence[Tenant]:
    query = select(Tenant).order_by(Tenant.created_at, Tenant.id).limit(limit).offset(offset)
    return (await session.execute(query)).scalars().all()


def add_tenant(session: AsyncSession, tenant: Tenant) -> None:
    session.add(tenant)


async def get_webhook(session: AsyncSession, tenant_id: uuid.UUID) -> WebhookEndpoint | None:
    return await session.get(WebhookEndpoint, tenant_id)


async def upsert_webhook(
    session: AsyncSession, tenant_id: uuid.UUID, url: str, *, rotate_secret: bool, now: datetime
) -> tuple[str, int, datetime]:
    """Set the tenant's webhook URL in one statement: INSERT … ON CONFLICT DO UPDATE (Postgres and SQLite both
    have it). Two concurrent first PUTs cannot both insert, and a secret rotation increments the stored version
    (`secret_version + 1` in SQL), so concurrent rotations never collapse into one. Setting the URL, even the same
    one, re-enables a disabled endpoint and clears its failing mark. Returns (url, version, updated_at) as stored."""
    dialect_insert = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    insert = dialect_insert(WebhookEndpoint).values(tenant_id=tenant_id, url=url, secret_version=1, updated_at=now)
    version = WebhookEndpoint.secret_version + 1 if rotate_secret else WebhookEndpoint.secret_version
    statement = insert.on_conflict_do_update(
        index_elements=[WebhookEndpoint.tenant_id],
        set_={"url": url, "updated_at": now, "secret_version": version, "disabled_at": None, "failing_since": None},
    ).returning(WebhookEndpoint.url, WebhookEndpoint.secret_version, WebhookEndpoint.updated_at)
    row = (await session.execute(statement)).one()
    return row.url, row.secret_version, row.updated_at


def enqueue_delivery(
    session: AsyncSession, *, tenant_id: uuid.UUID, event: str, payload: dict[str, Any], due_at: datetime
) -> None:
    session.add(WebhookDelivery(tenant_id=tenant_id, event=event, payload=payload, next_attempt_at=due_at))


async def list_deliveries(session: AsyncSession, tenant_id: uuid.UUID) -> Sequence[WebhookDelivery]:
    query = select(WebhookDelivery).where(WebhookDelivery.tenant_id == tenant_id).order_by(WebhookDelivery.created_at)
    return (await session.execute(query)).scalars().all()
