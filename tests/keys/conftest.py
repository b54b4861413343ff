"""Fixtures for key tests: tenants and keys inserted directly, clients that send a key, and an app on either
backend (`backend`: real Postgres, or a fresh embedded SQLite file) for the storage-sensitive tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from app.auth.scopes import Role, Scope
from app.config import Settings
from app.core.migrations import upgrade_to_head
from app.keys.admin import ensure_tenant, issue_key
from app.main import create_app
from tests.conftest import TEST_REDIS_URL, make_settings, truncate_all
from tests.helpers import running


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


@pytest.fixture(params=["postgres", "sqlite"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same tests on real Postgres and on the embedded SQLite file (a fresh one per test)."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    url = f"sqlite+aiosqlite:///{tmp_path}/durable.db"
    upgrade_to_head(url)
    return url


@pytest.fixture
async def backend_settings(backend_url: str, redis_client: object) -> AsyncIterator[Settings]:
    yield make_settings(database_url=backend_url, redis_url=TEST_REDIS_URL, background_jobs=False)
    if backend_url.startswith("postgresql"):
        await truncate_all(backend_url)


@pytest.fixture
async def backend(backend_settings: Settings) -> AsyncIterator[tuple[FastAPI, AsyncClient]]:
    app = create_app(backend_settings)
    async with running(app) as client:
        yield app, client


@pytest.fixture
def make_backend_key(backend: tuple[FastAPI, AsyncClient], backend_settings: Settings) -> MakeKey:
    return key_maker(backend[0], backend_settings)
