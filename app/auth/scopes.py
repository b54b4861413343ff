"""Roles and scopes. A key holds one role and a subset of that role's scopes."""

from __future__ import annotations

from enum import StrEnum


class Scope(StrEnum):
    MARKET_READ = "market:read"
    SIGNALS_READ = "signals:read"
    KEYS_READ = "keys:read"
    KEYS_WRITE = "keys:write"
    USAGE_READ = "usage:read"
    WEBHOOKS_WRITE = "webhooks:write"
    AUDIT_READ = "audit:read"
    TENANTS_READ = "tenants:read"
    TENANTS_WRITE = "tenants:write"
    SYSTEM_READ = "system:read"
    ALERTS_READ = "alerts:read"
    ALERTS_WRITE = "alerts:write"


class Role(StrEnum):
    READER = "reader"
    ADMIN = "admin"
    OPERATOR = "operator"


_READER = frozenset({Scope.MARKET_READ, Scope.SIGNALS_READ, Scope.ALERTS_READ})
_ADMIN = _READER | {
    Scope.KEYS_READ,
    Scope.KEYS_WRITE,
    Scope.USAGE_READ,
    Scope.WEBHOOKS_WRITE,
    Scope.AUDIT_READ,
    Scope.ALERTS_WRITE,
}

ROLE_SCOPES: dict[Role, frozenset[Scope]] = {
    Role.READER: _READER,
    Role.ADMIN: frozenset(_ADMIN),
    Role.OPERATOR: frozenset(Scope),
}

# Higher rank holds every scope of a lower rank; used for the no-escalation rule.
ROLE_RANK: dict[Role, int] = {Role.READER: 0, Role.ADMIN: 1, Role.OPERATOR: 2}


def parse_scopes(values: list[str] | tuple[str, ...]) -> frozenset[Scope]:
    return frozenset(Scope(value) for value in values)
