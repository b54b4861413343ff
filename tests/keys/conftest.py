"""Fixtures for key tests: tenants and keys inserted directly, and clients that send a key."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import pytest
from fastapi import FastAPI

from app.auth.scopes import Role, Scope
from app.config import Settings
from app.keys.admin import ensure_tenant, issue_key


@dataclass(frozen=True)
class IssuedKey:
    secret: str
    key_id: uuid.UUID
    tenant_id: uuid.UUID
    role: Role

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}


MakeKey = Callable[..., Awaitable[IssuedKey]]


@pytest.fixture
def make_key(app: FastAPI, settings: Settings) -> MakeKey:
    """Insert a key (and its tenant) straight into the database; needs the app's lifespan to be running."""
    return key_maker(app, settings)


def key_maker(app: FastAPI, settings: Settings) -> MakeKey:
    async def make(
        role: Role = Role.READER,
        *,
        tenant: str = "acme",
        scopes: frozenset[Scope] | None = None,
        expires_at: datetime | None = None,
        secret: str | None = None,
    ) -> IssuedKey:
        async with app.state.session_factory() as session:
            owner = await ensure_tenant(session, tenant)
            key, raw = await issue_key(
                session,
                settings,
                tenant_id=owner.id,
                name=f"{role.value}-key",
                role=role,
                scopes=scopes,
                expires_at=expires_at,
                secret=secret,
            )
            await session.commit()
        await app.state.key_invalidator.invalidate(key.secret_hash)
        return IssuedKey(secret=raw, key_id=key.id, tenant_id=owner.id, role=role)

    return make
