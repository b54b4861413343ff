"""Key lifecycle rules: tenancy, no escalation, the 90-day ceiling, rotation grace, audit, cache invalidation.

Services only flush; the request-scoped session commits, and cache invalidations run after that commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import repository as audit
from app.auth.principal import Principal
from app.auth.scopes import ROLE_RANK, ROLE_SCOPES, Role, Scope
from app.auth.verifier import KeyCacheInvalidator
from app.config import Settings
from app.core.db import after_commit
from app.core.errors import AppError
from app.core.pagination import decode_cursor, encode_cursor
from app.core.security import display_prefix, generate_api_key, hash_api_key, last_four
from app.keys import repository
from app.keys.repository import KeyStatus
from app.keys.schemas import ApiKeyCreate, ApiKeyRead, ApiKeyRotate, ExpiryRequest
from app.models import ApiKey
from app.tenants.repository import get_tenant


class ApiKeyNotFound(AppError):
    slug = "api-key-not-found"
    title = "API key not found"
    status = 404
    description = "No key with this id exists in your tenant."


class TenantNotFound(AppError):
    slug = "tenant-not-found"
    title = "Tenant not found"
    status = 404
    description = "No such tenant (or not one you may access)."


class KeyEscalationDenied(AppError):
    slug = "key-escalation-denied"
    title = "Key would exceed your own privileges"
    status = 403
    description = "A key can only create or rotate keys with a role and scopes it holds itself."


class ScopeNotInRole(AppError):
    slug = "scope-not-in-role"
    title = "Scope not part of the role"
    status = 422
    description = "A key's scopes must be a subset of its role's scopes."


class KeyLifetimeInvalid(AppError):
    slug = "key-lifetime-invalid"
    title = "Invalid key lifetime"
    status = 422
    description = "Keys expire at most DELTAFLOW_KEY_MAX_LIFETIME_DAYS (90) days after creation, in the future."


class KeyNotActive(AppError):
    slug = "api-key-not-active"
    title = "API key not active"
    status = 409
    description = "The key is revoked, expired or already rotated, so it cannot be rotated."


@dataclass(frozen=True, slots=True)
class Actor:
    principal: Principal
    request_id: str | None


def key_status(key: ApiKey, now: datetime, expiring_window: timedelta) -> KeyStatus:
    if key.revoked_at is not None:
        return KeyStatus.REVOKED
    if key.expires_at <= now:
        return KeyStatus.EXPIRED
    if key.expires_at - now <= expiring_window:
        return KeyStatus.EXPIRING
    return KeyStatus.ACTIVE


async def resolve_tenant(session: AsyncSession, actor: Actor, tenant_id: uuid.UUID | None) -> uuid.UUID:
    """The tenant a `?tenant_id=` addresses: the caller's own by default; another only for operators (others get
    404, never 403, so tenant ids cannot be probed)."""
    own = actor.principal.tenant_id
    if tenant_id is None or tenant_id == own:
        return own
    if not actor.principal.is_operator or await get_tenant(session, tenant_id) is None:
        raise TenantNotFound(f"Tenant {tenant_id} not found.")
    return tenant_id


class KeyService:
    def __init__(
        self,
        session: AsyncSession,
        settings: Settings,
        invalidator: KeyCacheInvalidator | None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.session = session
        self.settings = settings
        self.invalidator = invalidator
        self.clock = clock
        self.expiring_window = timedelta(days=settings.key_sunset_warning_days)

    def to_read(self, key: ApiKey) -> ApiKeyRead:
        return ApiKeyRead(
            id=key.id,
            tenant_id=key.tenant_id,
            name=key.name,
            prefix=key.prefix,
            last_four=key.last_four,
            role=Role(key.role),
            scopes=[Scope(s) for s in key.scopes],
            status=key_status(key, self.clock(), self.expiring_window),
            created_at=key.created_at,
            expires_at=key.expires_at,
            revoked_at=key.revoked_at,
            rotated_at=key.rotated_at,
            rotated_from_id=key.rotated_from_id,
            last_used_at=key.last_used_at,
        )

    async def resolve_tenant(self, actor: Actor, tenant_id: uuid.UUID | None) -> uuid.UUID:
        return await resolve_tenant(self.session, actor, tenant_id)

    async def create(self, actor: Actor, data: ApiKeyCreate, tenant_id: uuid.UUID | None) -> tuple[ApiKey, str]:
        tenant = await self.resolve_tenant(actor, tenant_id)
        scopes = self._checked_scopes(actor.principal, data.role, data.scopes)
        now = self.clock()
        key, secret = self._new_key(tenant, data.name, data.role, scopes, self._expiry(data, now), now)
        key.created_by_key_id = actor.principal.key_id
        repository.add_key(self.session, key)
        await self.session.flush()
        self._audit(actor, tenant, "key.created", key, {"role": key.role, "scopes": key.scopes})
        self._invalidate_after_commit(key.secret_hash)  # clears a cached "unknown key" for this secret
        return key, secret

    async def get(self, actor: Actor, key_id: uuid.UUID, tenant_id: uuid.UUID | None) -> ApiKey:
        if actor.principal.is_operator and tenant_id is None:
            key = await repository.get_key_any_tenant(self.session, key_id)
        else:
            key = await repository.get_key(self.session, await self.resolve_tenant(actor, tenant_id), key_id)
        if key is None:
            raise ApiKeyNotFound(f"API key {key_id} not found.")
        return key

    async def list_keys(
        self, actor: Actor, *, status: KeyStatus | None, cursor: str | None, limit: int, tenant_id: uuid.UUID | None
    ) -> tuple[Sequence[ApiKey], str | None]:
        tenant = await self.resolve_tenant(actor, tenant_id)
        now = self.clock()
        page = await repository.list_keys(
            self.session,
            tenant,
            status=status,
            now=now,
            expiring_before=now + self.expiring_window,
            after=decode_cursor(cursor),
            limit=limit + 1,
        )
        items = list(page[:limit])
        next_cursor = encode_cursor(items[-1].created_at, items[-1].id) if len(page) > limit else None
        return items, next_cursor

    async def rotate(
        self, actor: Actor, key_id: uuid.UUID, data: ApiKeyRotate, tenant_id: uuid.UUID | None
    ) -> tuple[ApiKey, str]:
        old = await self.get(actor, key_id, tenant_id)
        now = self.clock()
        if old.revoked_at is not None or old.expires_at <= now or old.rotated_at is not None:
            raise self._not_rotatable(old, now)
        scopes = self._checked_scopes(actor.principal, Role(old.role), [Scope(s) for s in old.scopes])
        grace = self._grace(data)
        successor, secret = self._new_key(old.tenant_id, old.name, Role(old.role), scopes, self._expiry(data, now), now)
        successor.rotated_from_id = old.id
        successor.created_by_key_id = actor.principal.key_id
        # The check above read the row; a concurrent rotation may have passed the same check. The conditional
        # update decides: exactly one rotation of a key wins, the others get 409.
        if not await repository.mark_rotated(self.session, old, now, min(old.expires_at, now + grace)):
            await self.session.refresh(old)
            raise self._not_rotatable(old, now)
        repository.add_key(self.session, successor)
        await self.session.flush()
        details = {"successor_id": str(successor.id), "grace_seconds": int(grace.total_seconds())}
        self._audit(actor, old.tenant_id, "key.rotated", old, details)
        self._invalidate_after_commit(old.secret_hash)
        self._invalidate_after_commit(successor.secret_hash)
        return successor, secret

    async def revoke(self, actor: Actor, key_id: uuid.UUID, tenant_id: uuid.UUID | None) -> ApiKey:
        key = await self.get(actor, key_id, tenant_id)
        # Idempotent: revoking twice (or twice at once) keeps the first time and audits once.
        if key.revoked_at is None and await repository.mark_revoked(self.session, key, self.clock()):
            self._audit(actor, key.tenant_id, "key.revoked", key, {})
            self._invalidate_after_commit(key.secret_hash)
        return key

    def _not_rotatable(self, key: ApiKey, now: datetime) -> KeyNotActive:
        state = "already rotated" if key.rotated_at is not None else key_status(key, now, self.expiring_window).value
        return KeyNotActive(f"API key {key.id} is {state}; only a live, unrotated key can be rotated.")

    def _checked_scopes(self, holder: Principal, role: Role, requested: Sequence[Scope] | None) -> list[Scope]:
        if ROLE_RANK[role] > ROLE_RANK[holder.role]:
            raise KeyEscalationDenied(f"A {holder.role.value} key cannot create or rotate a {role.value} key.")
        scopes = frozenset(requested) if requested is not None else ROLE_SCOPES[role]
        outside_role = scopes - ROLE_SCOPES[role]
        if outside_role:
            raise ScopeNotInRole(
                f"Not part of the {role.value} role: {', '.join(sorted(outside_role))}.",
                extensions={"errors": [{"pointer": "#/scopes", "detail": "scope outside the role"}]},
            )
        not_held = scopes - holder.scopes
        if not_held:
            raise KeyEscalationDenied(f"Your key does not hold: {', '.join(sorted(not_held))}.")
        return sorted(scopes)

    def _expiry(self, data: ExpiryRequest, now: datetime) -> datetime:
        ceiling = now + timedelta(days=self.settings.key_max_lifetime_days)
        if data.expires_in_seconds is not None and data.expires_at is not None:
            raise self._lifetime_error("#/expires_at", "give expires_in_seconds or expires_at, not both")
        if data.expires_in_seconds is not None:
            expires = now + timedelta(seconds=data.expires_in_seconds)
            pointer = "#/expires_in_seconds"
        elif data.expires_at is not None:
            if data.expires_at.tzinfo is None:
                raise self._lifetime_error("#/expires_at", "the timestamp needs a time zone (e.g. Z)")
            expires, pointer = data.expires_at.astimezone(UTC), "#/expires_at"
        else:
            return ceiling
        if expires <= now:
            raise self._lifetime_error(pointer, "must be in the future")
        if expires > ceiling:
            raise self._lifetime_error(
                pointer, f"must be at most {self.settings.key_max_lifetime_days} days from now ({ceiling.isoformat()})"
            )
        return expires

    def _lifetime_error(self, pointer: str, detail: str) -> KeyLifetimeInvalid:
        return KeyLifetimeInvalid(
            f"{pointer}: {detail}.", extensions={"errors": [{"pointer": pointer, "detail": detail}]}
        )

    def _grace(self, data: ApiKeyRotate) -> timedelta:
        seconds = self.settings.key_rotation_grace_seconds if data.grace_seconds is None else data.grace_seconds
        if seconds > self.settings.key_max_rotation_grace_seconds:
            raise self._lifetime_error(
                "#/grace_seconds", f"at most {self.settings.key_max_rotation_grace_seconds} seconds"
            )
        return timedelta(seconds=seconds)

    def _new_key(
        self, tenant_id: uuid.UUID, name: str, role: Role, scopes: list[Scope], expires_at: datetime, now: datetime
    ) -> tuple[ApiKey, str]:
        secret = generate_api_key()
        key = ApiKey(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            name=name,
            prefix=display_prefix(secret),
            last_four=last_four(secret),
            secret_hash=hash_api_key(secret, self.settings.secret_key.get_secret_value()),
            role=role.value,
            scopes=[scope.value for scope in scopes],
            created_at=now,
            expires_at=expires_at,
        )
        return key, secret

    def _audit(self, actor: Actor, tenant_id: uuid.UUID, action: str, key: ApiKey, details: dict[str, object]) -> None:
        audit.record(
            self.session,
            tenant_id=tenant_id,
            actor_key_id=actor.principal.key_id,
            actor_user_id=actor.principal.user_id,
            action=action,
            target=f"api_key:{key.id}",
            request_id=actor.request_id,
            details=details,
        )

    def _invalidate_after_commit(self, key_hash: str) -> None:
        invalidator = self.invalidator
        if invalidator is not None:

            async def hook() -> None:
                await invalidator.invalidate(key_hash)

            after_commit(self.session, hook)
