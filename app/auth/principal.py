"""The authenticated caller, as the auth middleware puts it on the request scope."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from app.auth.ratelimit import RateLimitPolicy
from app.auth.scopes import Role, Scope


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: uuid.UUID
    tenant_id: uuid.UUID
    role: Role
    scopes: frozenset[Scope]
    expires_at: datetime
    name: str
    rate_limit: RateLimitPolicy | None = None  # the tenant's own budget; None: the service default

    @property
    def is_operator(self) -> bool:
        return self.role is Role.OPERATOR

    def has(self, scopes: frozenset[Scope]) -> bool:
        return scopes <= self.scopes
