"""Tenants (operators) and each tenant's webhook endpoint."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import repository as audit
from app.auth.verifier import KeyCacheInvalidator
from app.config import Settings
from app.core.db import after_commit
from app.core.db_errors import register_constraint_problem
from app.core.errors import AppError
from app.keys.repository import key_hashes_of_tenant
from app.keys.service import Actor, TenantNotFound
from app.models import Tenant
from app.tenants import repository
from app.tenants.egress import WebhookDestinationRefused, refused_host
from app.tenants.schemas import RateLimitRead, RateLimitSpec, TenantRead, WebhookRead, WebhookUpdate
from app.webhooks.signing import webhook_secret


class TenantNameTaken(AppError):
    slug = "tenant-name-taken"
    title = "Tenant name already in use"
    status = 409
    description = "Tenant names are unique."


# Two concurrent creations with one name both pass the pre-check; the unique constraint refuses the second.
register_constraint_problem(TenantNameTaken, "uq_tenants_name", "tenants.name")


class TenantService:
    def __init__(
        self, session: AsyncSession, settings: Settings, invalidator: KeyCacheInvalidator | None = None
    ) -> None:
        self.session = session
        self.settings = settings
        self.invalidator = invalidator

    def to_read(self, tenant: Tenant) -> TenantRead:
        return TenantRead(
            id=tenant.id,
            name=tenant.name,
            created_at=tenant.created_at,
            rate_limit=self._effective_limit(tenant),
            monthly_quota=tenant.monthly_quota,
        )

    def _effective_limit(self, tenant: Tenant) -> RateLimitRead | None:
        if tenant.rate_limit_per_second is not None and tenant.rate_limit_burst is not None:
            return RateLimitRead(
                per_second=tenant.rate_limit_per_second, burst=tenant.rate_limit_burst, source="tenant"
            )
        if self.settings.rate_limit_per_second > 0:
            return RateLimitRead(
                per_second=self.settings.rate_limit_per_second, burst=self.settings.rate_limit_burst, source="default"
            )
        return None

    async def set_rate_limit(self, actor: Actor, tenant_id: uuid.UUID, limit: RateLimitSpec | None) -> Tenant:
        """Give a tenant its own budget (None: back to the default). Its keys' cached verifications carry the
        budget, so they are invalidated after the commit: every instance applies it from its next lease."""
        tenant = await self._tenant(tenant_id)
        tenant.rate_limit_per_second = None if limit is None else limit.per_second
        tenant.rate_limit_burst = None if limit is None else limit.burst
        details = None if limit is None else {"per_second": limit.per_second, "burst": limit.burst}
        await self._changed(actor, tenant, "tenant.rate_limit", details)
        return tenant

    async def set_quota(self, actor: Actor, tenant_id: uuid.UUID, monthly_requests: int | None) -> Tenant:
        """Give a tenant a monthly quota (None: none). Like a budget, it travels with the keys' cached
        verifications, which are invalidated after the commit: every instance applies it from its next request."""
        tenant = await self._tenant(tenant_id)
        tenant.monthly_quota = monthly_requests
        details = None if monthly_requests is None else {"monthly_requests": monthly_requests}
        await self._changed(actor, tenant, "tenant.quota", details)
        return tenant

    async def _tenant(self, tenant_id: uuid.UUID) -> Tenant:
        tenant = await repository.get_tenant(self.session, tenant_id)
        if tenant is None:
            raise TenantNotFound(f"Tenant {tenant_id} not found.")
        return tenant

    async def _changed(self, actor: Actor, tenant: Tenant, action: str, details: dict[str, Any] | None) -> None:
        """Audit a limit set (`<action>_set`, with `details`) or cleared (`<action>_cleared`, details None), and
        invalidate the tenant's cached key verifications, which carry its limits, after the commit."""
        await self.session.flush()
        audit.record(
            self.session,
            tenant_id=tenant.id,
            actor_key_id=actor.principal.key_id,
            actor_user_id=actor.principal.user_id,
            action=f"{action}_set" if details is not None else f"{action}_cleared",
            target=f"tenant:{tenant.id}",
            request_id=actor.request_id,
            details=details or {},
        )
        await self._invalidate_keys_after_commit(tenant.id)

    async def _invalidate_keys_after_commit(self, tenant_id: uuid.UUID) -> None:
        hashes = await key_hashes_of_tenant(self.session, tenant_id)
        invalidator = self.invalidator
        if invalidator is not None and hashes:

            async def invalidate() -> None:
                await invalidator.invalidate_many(hashes)

            after_commit(self.session, invalidate)

    async def create(self, actor: Actor, name: str, limit: RateLimitSpec | None = None) -> Tenant:
        if await repository.get_tenant_by_name(self.session, name) is not None:
            raise TenantNameTaken(f"A tenant named {name!r} already exists.")
        tenant = Tenant(
            id=uuid.uuid4(),
            name=name,
            created_at=datetime.now(UTC),
            rate_limit_per_second=None if limit is None else limit.per_second,
            rate_limit_burst=None if limit is None else limit.burst,
        )
        repository.add_tenant(self.session, tenant)
        await self.session.flush()
        audit.record(
            self.session,
            tenant_id=tenant.id,
            actor_key_id=actor.principal.key_id,
            actor_user_id=actor.principal.user_id,
            action="tenant.created",
            target=f"tenant:{tenant.id}",
            request_id=actor.request_id,
            details={
                "name": name,
                "created_by_tenant": str(actor.principal.tenant_id),
                **({} if limit is None else {"rate_limit": limit.model_dump()}),
            },
        )
        return tenant

    async def list(self, *, limit: int, offset: int) -> Sequence[Tenant]:
        return await repository.list_tenants(self.session, limit=limit, offset=offset)

    async def put_webhook(self, actor: Actor, data: WebhookUpdate) -> WebhookRead:
        if not self.settings.webhook_allow_private_destinations:
            reason = refused_host(data.url.host or "")
            if reason is not None:
                raise WebhookDestinationRefused(f"{reason}; webhook URLs must reach a public address.")
        tenant_id = actor.principal.tenant_id
        url, version, updated_at = await repository.upsert_webhook(
            self.session, tenant_id, str(data.url), rotate_secret=data.rotate_secret, now=datetime.now(UTC)
        )
        audit.record(
            self.session,
            tenant_id=tenant_id,
            actor_key_id=actor.principal.key_id,
            actor_user_id=actor.principal.user_id,
            action="webhook.updated",
            target=f"webhook:{tenant_id}",
            request_id=actor.request_id,
            details={"url": url, "secret_version": version},
        )
        return WebhookRead(
            url=url,
            signing_secret=webhook_secret(self.settings, tenant_id, version),
            secret_version=version,
            updated_at=updated_at,
        )
