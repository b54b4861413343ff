"""The authenticated caller, as the auth middleware puts it on the request scope."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from app.auth.ratelimit import RateLimitPolicy
from app.auth.scopes import Role, Scope


@dataclass(frozen=True, slots=True)
class Principal:
    """An API key (`key_id`) or, in the console, a signed-in person (`user_id`; `key_id` is then None) — with
    exactly the scopes of its role, so the services need not know which."""

    key_id: uuid.UUID | None
    tenant_id: uuid.UUID
    role: Role
    scopes: frozenset[Scope]
    expires_at: datetime
    name: str
    rate_limit: RateLimitPolicy | None = None  # the tenant's own budget; None: the service default
    user_id: uuid.UUID | None = None
    monthly_quota: int | None = None  # the tenant's requests per month (None: no quota)

    @property
    def is_operator(self) -> bool:
        return self.role is Role.OPERATOR

    def has(self, scopes: frozenset[Scope]) -> bool:
        return scopes <= self.scopes
