"""Migration 0011 on both backends: each market's cursor starts at the latest bar its rules were evaluated at, the
per-rule column goes without touching the events that point at the rules, and the downgrade gives it back."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from app.core.db import create_engine
from app.core.migrations import alembic_config
from app.models.types import UtcDateTime
from tests.conftest import make_settings

NOW = datetime(2026, 12, 1, tzinfo=UTC)
TENANTS = sa.table("tenants", sa.column("id", sa.Uuid), sa.column("name"), sa.column("created_at", UtcDateTime))
RULES = sa.table(
    "alert_rules",
    *(sa.column(name) for name in ("name", "venue", "symbol", "timeframe", "frequency", "destination_type")),
    *(sa.column(name, sa.Uuid) for name in ("id", "tenant_id")),
    sa.column("condition", sa.JSON),
    sa.column("cooldown_bars", sa.Integer),
    sa.column("enabled", sa.Boolean),
    sa.column("last_bar_ms", sa.BigInteger),
    *(sa.column(name, UtcDateTime) for name in ("created_at", "updated_at")),
)
EVENTS = sa.table(
    "alert_events",
    *(sa.column(name, sa.Uuid) for name in ("id", "tenant_id", "rule_id")),
    *(sa.column(name) for name in ("rule_name", "venue", "symbol", "timeframe", "sentence")),
    sa.column("bar_ms", sa.BigInteger),
    sa.column("snapshot", sa.JSON),
    sa.column("created_at", UtcDateTime),
)


@pytest.fixture(params=["postgres", "sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("fresh_postgres_url")
        return url
    return f"sqlite+aiosqlite:///{tmp_path}/cursor.db"


async def test_the_market_cursor_migration_keeps_the_state_both_ways(database_url: str) -> None:
    config = alembic_config(database_url)
    await asyncio.to_thread(command.upgrade, config, "0010")
    engine = create_engine(make_settings(database_url=database_url))
    tenant = uuid.uuid4()
    rules = {name: uuid.uuid4() for name in ("a1", "a2", "b", "never")}
    markets = {"a1": "BTCUSDT", "a2": "BTCUSDT", "b": "ETHUSDT", "never": "SOLUSDT"}
    last = {"a1": 120_000, "a2": 180_000, "b": 60_000, "never": None}
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.insert(TENANTS).values(id=tenant, name="acme", created_at=NOW))
            for name, rule_id in rules.items():
                await connection.execute(sa.insert(RULES).values(
                    id=rule_id, tenant_id=tenant, name=name, venue="binance", symbol=markets[name], timeframe="1m",
                    condition={"event": "bos"}, frequency="on_change", destination_type="none", cooldown_bars=0,
                    enabled=True, last_bar_ms=last[name], created_at=NOW, updated_at=NOW,
                ))  # fmt: skip
            await connection.execute(sa.insert(EVENTS).values(
                id=uuid.uuid4(), tenant_id=tenant, rule_id=rules["a1"], rule_name="a1", venue="binance",
                symbol="BTCUSDT", timeframe="1m", sentence="s", bar_ms=120_000, snapshot={}, created_at=NOW,
            ))  # fmt: skip
        await asyncio.to_thread(command.upgrade, config, "head")
        async with engine.connect() as connection:
            cursors = (await connection.execute(sa.text("SELECT symbol, last_bar_ms FROM alert_market_cursors"))).all()
            assert sorted(map(tuple, cursors)) == [("BTCUSDT", 180_000), ("ETHUSDT", 60_000)]
            kept = (await connection.execute(sa.select(EVENTS.c.rule_id))).scalars().all()
            assert kept == [rules["a1"]], "the event still names its rule"
        await asyncio.to_thread(command.downgrade, config, "0010")
        async with engine.connect() as connection:
            back = dict((await connection.execute(sa.select(RULES.c.name, RULES.c.last_bar_ms))).all())
            assert back == {"a1": 180_000, "a2": 180_000, "b": 60_000, "never": None}
    finally:
        await engine.dispose()
