"""Key administration without an HTTP caller: `deltaflow keys …` at a shell, and test set-up.

These act as the operator at the console: audit events record `actor_key_id = null` and `via = "cli"`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import repository as audit
from app.auth.scopes import ROLE_SCOPES, Role, Scope
from app.config import Settings
from app.core.errors import AppError
from app.core.security import display_prefix, generate_api_key, hash_api_key, last_four
from app.keys import repository
from app.models import ApiKey, Tenant
from app.tenants.repository import add_tenant, get_tenant_by_name


class OperatorKeyExists(AppError):
    slug = "operator-key-exists"
    title = "An operator key already exists"
    status = 409
    description = "Bootstrap runs once; pass --force to issue another operator key."


async def ensure_tenant(session: AsyncSession, name: str) -> Tenant:
    tenant = await get_tenant_by_name(session, name)
    if tenant is None:
        tenant = Tenant(id=uuid.uuid4(), name=name, created_at=datetime.now(UTC))
        add_tenant(session, tenant)
        await session.flush()
    return tenant


async def issue_key(
    session: AsyncSession,
    settings: Settings,
    *,
    tenant_id: uuid.UUID,
    name: str,
    role: Role,
    scopes: frozenset[Scope] | None = None,
    expires_at: datetime | None = None,
    secret: str | None = None,
) -> tuple[ApiKey, str]:
    """Insert a key directly (operator console). The lifetime ceiling still applies."""
    now = datetime.now(UTC)
    ceiling = now + timedelta(days=settings.key_max_lifetime_days)
    granted = ROLE_SCOPES[role] if scopes is None else scopes
    if not granted <= ROLE_SCOPES[role]:
        raise ValueError(f"scopes outside the {role.value} role: {sorted(granted - ROLE_SCOPES[role])}")
    secret = secret or generate_api_key()
    key = ApiKey(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        name=name,
        prefix=display_prefix(secret),
        last_four=last_four(secret),
        secret_hash=hash_api_key(secret, settings.secret_key.get_secret_value()),
        role=role.value,
        scopes=sorted(scope.value for scope in granted),
        created_at=now,
        expires_at=min(expires_at or ceiling, ceiling),
    )
    repository.add_key(session, key)
    await session.flush()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor_key_id=None,
        action="key.created",
        target=f"api_key:{key.id}",
        request_id=None,
        details={"role": key.role, "scopes": key.scopes, "via": "cli"},
    )
    return key, secret


async def bootstrap(session: AsyncSession, settings: Settings, *, tenant_name: str, force: bool) -> tuple[ApiKey, str]:
    """The first tenant and an operator key; refuses when an active operator key exists unless forced."""
    if not force and await repository.operator_key_exists(session, datetime.now(UTC)):
        raise OperatorKeyExists("An active operator key already exists.")
    tenant = await ensure_tenant(session, tenant_name)
    return await issue_key(session, settings, tenant_id=tenant.id, name="bootstrap-operator", role=Role.OPERATOR)
