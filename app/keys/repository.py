"""All SQL for API keys. Every query that serves a caller is filtered by tenant."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import ApiKey, Tenant


class KeyStatus(StrEnum):
    ACTIVE = "active"
    EXPIRING = "expiring"
    EXPIRED = "expired"
    REVOKED = "revoked"


async def find_key_by_hash(session: AsyncSession, secret_hash: str) -> tuple[ApiKey, Tenant] | None:
    """Verification lookup: by the unique secret hash (the hash itself identifies the tenant), with the tenant
    (its rate limit travels with the key's cached verification)."""
    result = await session.execute(
        select(ApiKey, Tenant).join(Tenant, Tenant.id == ApiKey.tenant_id).where(ApiKey.secret_hash == secret_hash)
    )
    row = result.one_or_none()
    return None if row is None else (row[0], row[1])


async def key_hashes_of_tenant(session: AsyncSession, tenant_id: uuid.UUID) -> list[str]:
    """Every key's secret hash (revoked ones too: their cached "revoked" state names the tenant as well)."""
    result = await session.execute(select(ApiKey.secret_hash).where(ApiKey.tenant_id == tenant_id))
    return list(result.scalars())


async def get_key(session: AsyncSession, tenant_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey | None:
    result = await session.execute(select(ApiKey).where(ApiKey.tenant_id == tenant_id, ApiKey.id == key_id))
    return result.scalar_one_or_none()


async def get_key_any_tenant(session: AsyncSession, key_id: uuid.UUID) -> ApiKey | None:
    """Operators only (cross-tenant access is their role's privilege)."""
    return await session.get(ApiKey, key_id)


def add_key(session: AsyncSession, key: ApiKey) -> None:
    session.add(key)


async def list_keys(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    *,
    status: KeyStatus | None,
    now: datetime,
    expiring_before: datetime,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> Sequence[ApiKey]:
    """Newest first, keyset-paginated on (created_at, id) so pages stay stable while keys are added."""
    query = select(ApiKey).where(ApiKey.tenant_id == tenant_id)
    if status is KeyStatus.REVOKED:
        query = query.where(ApiKey.revoked_at.is_not(None))
    elif status is KeyStatus.EXPIRED:
        query = query.where(ApiKey.revoked_at.is_(None), ApiKey.expires_at <= now)
    elif status is KeyStatus.EXPIRING:
        query = query.where(ApiKey.revoked_at.is_(None), ApiKey.expires_at > now, ApiKey.expires_at <= expiring_before)
    elif status is KeyStatus.ACTIVE:
        query = query.where(ApiKey.revoked_at.is_(None), ApiKey.expires_at > now)
    if after is not None:
        created_at, key_id = after
        query = query.where(
            or_(ApiKey.created_at < created_at, and_(ApiKey.created_at == created_at, ApiKey.id < key_id))
        )
    query = query.order_by(ApiKey.created_at.desc(), ApiKey.id.desc()).limit(limit)
    return (await session.execute(query)).scalars().all()


async def mark_rotated(session: AsyncSession, key: ApiKey, now: datetime, expires_at: datetime) -> bool:
    """Compare-and-set: mark `key` rotated only if it is still live and unrotated. Of concurrent rotations exactly
    one matches (Postgres re-checks the WHERE clause after the row lock; SQLite has a single writer), so one key
    never gets two successors. The in-session object is updated with the new values."""
    result = await session.execute(
        update(ApiKey)
        .where(
            ApiKey.id == key.id,
            ApiKey.rotated_at.is_(None),
            ApiKey.revoked_at.is_(None),
            ApiKey.expires_at > now,
        )
        .values(rotated_at=now, expires_at=expires_at)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


async def mark_revoked(session: AsyncSession, key: ApiKey, now: datetime) -> bool:
    """Compare-and-set: revoke `key` unless it already is. False when another request revoked it first (the
    object is then refreshed, so it shows the first revocation's time)."""
    result = await session.execute(
        update(ApiKey).where(ApiKey.id == key.id, ApiKey.revoked_at.is_(None)).values(revoked_at=now)
    )
    if getattr(result, "rowcount", 0) == 1:
        return True
    await session.refresh(key)
    return False


async def operator_key_exists(session: AsyncSession, now: datetime) -> bool:
    query = select(ApiKey.id).where(ApiKey.role == "operator", ApiKey.revoked_at.is_(None), ApiKey.expires_at > now)
    return (await session.execute(query.limit(1))).first() is not None


async def touch_last_used(session: AsyncSession, key_ids: Sequence[uuid.UUID], used_at: datetime) -> None:
    if key_ids:
        await session.execute(update(ApiKey).where(ApiKey.id.in_(key_ids)).values(last_used_at=used_at))


async def keys_expiring_between(session: AsyncSession, start: datetime, end: datetime) -> Sequence[ApiKey]:
    """Background notices: unrevoked keys whose expiry falls in (start, end], across tenants."""
    query = select(ApiKey).where(ApiKey.revoked_at.is_(None), ApiKey.expires_at > start, ApiKey.expires_at <= end)
    return (await session.execute(query)).scalars().all()
