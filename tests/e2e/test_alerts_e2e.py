"""Alert evaluation across two real `deltaflow serve` processes on Postgres and Redis: a rule whose condition holds
at every close fires exactly once per close with both instances following the closes, and killing (SIGKILL) the
instance holding a close's claim before its commit loses no event (the other takes the close over).

Bars are written to Redis and announced exactly as ingestion does (the closed-bars ZSET, then a PUBLISH on the
feed's bar-close channel), one per step instead of one per minute. To catch the claim holder mid-close for
certain, the test holds the rule's row lock while the close is announced: the holder's transaction waits on it,
with its claim taken and no done mark, when it is killed."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime

import orjson
import pytest
from redis.asyncio import Redis
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from app.alerts.claims import claim_key, done_key
from app.keys.admin import ensure_tenant
from app.market.keys import FeedKeys
from app.models import AlertEvent, AlertRule
from tests.conftest import TEST_REDIS_URL, truncate_all
from tests.e2e.test_serve import serve

pytestmark = pytest.mark.e2e

VENUE, SYMBOL, TIMEFRAME = "sim", "BTCUSDT", "1m"
MARKET = (VENUE, SYMBOL, TIMEFRAME)
MINUTE = 60_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE
HISTORY = 300
KEYS = FeedKeys(VENUE, SYMBOL)


def bar(open_ms: int, close: float) -> bytes:
    return orjson.dumps(
        {"t": open_ms, "o": close, "h": close + 5, "l": close - 5, "c": close, "v": 3.0, "buy_v": 2.0,
         "sell_v": 1.0, "delta": 1.0, "trades": 7, "vwap": close, "closed": True}
    )  # fmt: skip


def open_of(index: int) -> int:
    return T0 + (HISTORY + index) * MINUTE


async def close_bar(redis: Redis, index: int) -> int:
    """Store bar `index` (after the history) and announce it, as ingestion's bar-closing script does."""
    open_ms = open_of(index)
    await redis.zadd(KEYS.bars[TIMEFRAME], {bar(open_ms, 100.0 + index % 5): open_ms})
    await redis.publish(KEYS.bar_closed, f"{TIMEFRAME}:{open_ms}")
    return open_ms


async def until(check: object, what: str, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what} within {within} s"
        await asyncio.sleep(0.02)  # the outcome is in another process: polled


@pytest.fixture
async def database(postgres_url: str, redis_client: Redis) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(postgres_url, poolclass=NullPool)
    try:
        yield engine
    finally:
        await engine.dispose()
        await truncate_all(postgres_url)


async def setup_rule(engine: AsyncEngine, redis: Redis) -> uuid.UUID:
    sessions = async_sessionmaker(engine)
    async with sessions() as session, session.begin():
        tenant = await ensure_tenant(session, "alerts-e2e")
        rule = AlertRule(
            tenant_id=tenant.id,
            name="every close",
            venue=VENUE,
            symbol=SYMBOL,
            timeframe=TIMEFRAME,
            condition={"field": "volume", "op": "gte", "value": 0},
            frequency="once_per_bar",
            destination_type="none",
            # Created after the history closed: only the bars this test closes concern it.
            created_at=datetime.fromtimestamp((open_of(0) + 1) / 1000, UTC),
        )
        session.add(rule)
        await session.flush()
        rule_id = rule.id
    history = {bar(T0 + i * MINUTE, 100.0 + i % 5): T0 + i * MINUTE for i in range(HISTORY)}
    await redis.zadd(KEYS.bars[TIMEFRAME], history)
    return rule_id


async def fired_bars(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as connection:
        rows = await connection.execute(select(AlertEvent.bar_ms).order_by(AlertEvent.bar_ms))
        return [row[0] for row in rows]


@pytest.mark.timeout(120)
async def test_two_instances_fire_once_per_close_and_a_killed_holder_loses_nothing(
    database: AsyncEngine, postgres_url: str, redis_client: Redis
) -> None:
    started = time.monotonic()
    rule_id = await setup_rule(database, redis_client)
    env = {
        "DELTAFLOW_DATABASE_URL": postgres_url,
        "DELTAFLOW_REDIS_URL": TEST_REDIS_URL,
        "DELTAFLOW_FEEDS": f"{VENUE}:{SYMBOL}",
        "DELTAFLOW_DRAIN_SECONDS": "0",
        "DELTAFLOW_SIGNAL_BARS": str(HISTORY),
        "DELTAFLOW_ALERT_SWEEP_SECONDS": "0.2",
        "DELTAFLOW_ALERT_CLAIM_TTL_SECONDS": "2",
        "DELTAFLOW_ALERT_LISTEN_POLL_SECONDS": "0.1",
    }
    async with AsyncExitStack() as stack:
        (first, _), (second, _) = await asyncio.gather(  # started side by side: start-up is most of the time
            stack.enter_async_context(serve(env=env)), stack.enter_async_context(serve(env=env))
        )
        instances = {first.pid: first, second.pid: second}
        live = time.monotonic()

        # Both instances follow every close: each close fires exactly once.
        closes = []
        for index in range(4):  # one by one, as closes of a timeframe come
            open_ms = await close_bar(redis_client, index)
            await until(lambda o=open_ms: redis_client.exists(done_key(*MARKET, o)), f"close {open_ms} done")
            closes.append(open_ms)
        assert await fired_bars(database) == [open_ms + MINUTE for open_ms in closes]

        # The claim holder dies mid-close: its transaction waits on the rule's row, which this test holds.
        async with database.connect() as blocker:
            transaction = await blocker.begin()
            await blocker.execute(text("SELECT id FROM alert_rules WHERE id = :id FOR UPDATE"), {"id": rule_id})
            killed = await close_bar(redis_client, 4)
            claim = claim_key(*MARKET, killed)
            await until(lambda: redis_client.exists(claim), "the close claimed")
            token = await redis_client.get(claim)
            assert isinstance(token, bytes)
            holder = int(token.split(b":")[0])  # the token names the holder's pid
            group = os.getpgid(holder)
            assert group in instances, "an API process holds the claim"
            os.killpg(group, signal.SIGKILL)
            instances.pop(group).wait(timeout=10)
            assert not await redis_client.exists(done_key(*MARKET, killed)), "killed before its commit"
            await transaction.rollback()

        # The survivor's sweep takes the close over once the dead holder's claim expires; later closes follow.
        await until(lambda: redis_client.exists(done_key(*MARKET, killed)), "the killed close taken over")
        after = await close_bar(redis_client, 5)
        await until(lambda: redis_client.exists(done_key(*MARKET, after)), "the next close done")
        expected = [open_ms + MINUTE for open_ms in [*closes, killed, after]]
        assert await fired_bars(database) == expected
    took = f"servers live after {live - started:.1f} s, closes and the take-over {time.monotonic() - live:.1f} s"
    print(f"alerts e2e: {took}")
    assert time.monotonic() - started < 60
