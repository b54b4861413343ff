"""Migrations: they match the models (`alembic check`) and run down and up again, on both backends."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic import command

from app.core.migrations import alembic_config, upgrade_to_head


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


async def test_every_revision_downgrades_and_upgrades_again(migrated_url: str) -> None:
    config = alembic_config(migrated_url)
    await asyncio.to_thread(command.downgrade, config, "base")
    await asyncio.to_thread(command.upgrade, config, "head")
    await asyncio.to_thread(command.check, config)
