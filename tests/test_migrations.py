"""Migrations: they match the models (`alembic check`) and run down and up again, on both backends."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import insert, text

from app.core.db import create_engine
from app.core.migrations import alembic_config, upgrade_to_head
from app.models import ApiKey, Tenant
from tests.conftest import make_settings


@pytest.fixture(params=["postgres", "sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("fresh_postgres_url")
        return url
    return f"sqlite+aiosqlite:///{tmp_path}/migrations.db"


@pytest.fixture
async def migrated_url(database_url: str) -> str:
    await asyncio.to_thread(upgrade_to_head, database_url)
    return database_url


async def test_models_and_migrations_do_not_drift(migrated_url: str) -> None:
    await asyncio.to_thread(command.check, alembic_config(migrated_url))


async def test_downgrading_the_tenant_rate_limits_keeps_every_key(migrated_url: str) -> None:
    """0004's downgrade drops two columns of `tenants`; done as a batch on SQLite it would recreate the table, and
    with foreign keys on, dropping the old one cascades to every API key (it did, before the migration said no)."""
    engine = create_engine(make_settings(database_url=migrated_url))
    tenant_id, key_id = uuid.uuid4(), uuid.uuid4()
    try:
        async with engine.begin() as connection:
            await connection.execute(
                insert(Tenant).values(id=tenant_id, name="kept", rate_limit_per_second=5.0, rate_limit_burst=10)
            )
            await connection.execute(
                insert(ApiKey).values(
                    id=key_id,
                    tenant_id=tenant_id,
                    name="k",
                    prefix="dfk_x",
                    last_four="abcd",
                    secret_hash="h" * 64,
                    role="reader",
                    scopes=[],
                    expires_at=datetime.now(UTC) + timedelta(days=1),
                )
            )
        await asyncio.to_thread(command.downgrade, alembic_config(migrated_url), "0003")
        async with engine.connect() as connection:
            keys = (await connection.execute(text("SELECT count(*) FROM api_keys"))).scalar_one()
        assert keys == 1
    finally:
        await engine.dispose()


async def test_every_revision_downgrades_and_upgrades_again(migrated_url: str) -> None:
    config = alembic_config(migrated_url)
    await asyncio.to_thread(command.downgrade, config, "base")
    await asyncio.to_thread(command.upgrade, config, "head")
    await asyncio.to_thread(command.check, config)
