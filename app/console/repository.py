"""All SQL for console users."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Tenant, User


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await session.get(User, user_id)


async def get_user_by_email(session: AsyncSession, email: str) -> User | None:
    """`email` already normalised (lowercase): stored emails are, so the lookup is case-insensitive."""
    return (await session.execute(select(User).where(User.email == email))).scalar_one_or_none()


async def get_user_with_tenant(session: AsyncSession, email: str) -> tuple[User, Tenant] | None:
    result = await session.execute(
        select(User, Tenant).join(Tenant, Tenant.id == User.tenant_id).where(User.email == email)
    )
    row = result.one_or_none()
    return None if row is None else (row[0], row[1])


def add_user(session: AsyncSession, user: User) -> None:
    session.add(user)


async def list_users(session: AsyncSession, tenant_id: uuid.UUID | None) -> Sequence[tuple[User, Tenant]]:
    """Every user of one tenant (all tenants with None: the operator's CLI), by email."""
    query = select(User, Tenant).join(Tenant, Tenant.id == User.tenant_id).order_by(User.email)
    if tenant_id is not None:
        query = query.where(User.tenant_id == tenant_id)
    return [(row[0], row[1]) for row in (await session.execute(query)).all()]


async def operator_user_exists(session: AsyncSession) -> bool:
    query = select(User.id).where(User.role == "operator", User.disabled_at.is_(None)).limit(1)
    return (await session.execute(query)).first() is not None
