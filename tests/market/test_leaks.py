"""Leak-freedom: a 1 000 000-message run through the real pipeline into the real Redis loses no trade volume and
its RSS stays flat; 100 forced reconnects through the real runtime and connector leave the same file descriptors
and asyncio tasks as before.

RSS is read from /proc/self/statm (resident pages): these tests need Linux's /proc and are skipped elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from app.market.events import BUY, SELL, BookSnapshot, BookUpdate, MarketEvent, Trade
from app.market.pipeline import Pipeline
from app.market.runtime import start_ingestion
from app.market.store import read_candles
from app.market.venues.binance_client import BinanceConnector
from tests.conftest import TEST_REDIS_URL, make_settings
from tests.market.helpers import wait_for
from tests.market.mock_binance_live import LiveBinance

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads RSS and FDs through /proc")

T0 = 1_700_000_040_000
MESSAGES = 1_000_000
RSS_GROWTH_LIMIT = 5_000_000  # bytes, between the 100 000th and the 1 000 000th message


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def redis_sockets(port: int) -> int:
    """Open sockets of this process connected to the Redis port (from /proc/net/tcp's inodes)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            count += target.startswith("socket:[") and target[8:-1] in inodes
    return count


def _events(n: int) -> Iterator[MarketEvent]:
    """Generated lazily (a list of a million events would itself be the biggest allocation): trades 10 ms apart
    (about 170 one-minute bars) with a depth diff every 20th message. Quantities are multiples of 1/16, so every
    volume sum is exact whatever the grouping."""
    yield BookSnapshot("binance", "BTCUSDT", T0, T0, 0, ((99.0, 1.0),), ((101.0, 1.0),))
    for i in range(1, n):
        ts = T0 + i * 10
        if i % 20 == 0:
            yield BookUpdate("binance", "BTCUSDT", ts, ts, i, i, None, ((99.0 - i % 7, float(i % 5)),), ())
        else:
            yield Trade(
                "binance", "BTCUSDT", ts, ts, 100.0 + (i % 9) * 0.5, (i % 16 + 1) / 16, BUY if i % 3 else SELL, i
            )


@pytest.mark.slow
async def test_a_million_messages_lose_no_volume_and_rss_stays_flat(redis_client: Redis) -> None:
    pipeline = Pipeline(redis_client, [("binance", "BTCUSDT")], clock=None)
    pipeline.start()
    volume, trades = 0.0, 0
    rss_at: dict[int, int] = {}
    started = time.perf_counter()
    for count, event in enumerate(_events(MESSAGES), start=1):
        if isinstance(event, Trade):
            volume += event.quantity
            trades += 1
        await pipeline.submit(event)
        if count % 64 == 0:
            await asyncio.sleep(0)  # a socket reader yields between frames
        if count in (100_000, MESSAGES):
            gc.collect()
            rss_at[count] = rss_bytes()
    elapsed = time.perf_counter() - started
    await pipeline.aclose(flush_timeout_s=30.0)

    candles = await read_candles(redis_client, "binance", "BTCUSDT", "1m", 1000)
    assert sum(c["v"] for c in candles) == volume, "no trade volume lost"
    assert sum(c["trades"] for c in candles) == trades
    assert pipeline.stats.received == MESSAGES
    growth = rss_at[MESSAGES] - rss_at[100_000]
    print(
        f"\n{MESSAGES} messages in {elapsed:.1f} s ({MESSAGES / elapsed:,.0f} msg/s); RSS growth {growth / 1e6:+.2f} MB"
    )
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew {growth / 1e6:.2f} MB from the 100 000th message"


# What the ingestion (or a library it drives) could leave behind. The suite shares one event loop, so a task an
# earlier test left finishing — or one of its periodic helpers — must not count as this runtime's leak (seen
# once in CI: 11 → 12 tasks, not reproducible alone or under CPU load).
LEAK_SUSPECTS = ("/app/market/", "/app/core/", "/websockets/", "/httpx/", "/httpcore/", "/redis/")


def _ingestion_tasks() -> list[asyncio.Task[Any]]:
    tasks = []
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        if code is None or any(part in code.co_filename for part in LEAK_SUSPECTS):
            tasks.append(task)
    return tasks


def _task_names() -> list[str]:
    return sorted(task.get_name() for task in _ingestion_tasks())


def _steady(connector: BinanceConnector) -> bool:
    return connector.stats.connected and not connector.syncs["TESTUSDT"].needs_snapshot


@pytest.mark.slow
async def test_fds_and_tasks_are_the_same_after_100_forced_reconnects_through_the_runtime(
    redis_client: Redis,
) -> None:
    async with LiveBinance("TESTUSDT", tick_interval_s=0.005) as mock:
        settings = make_settings(
            redis_url=TEST_REDIS_URL,
            feeds="binance:TESTUSDT",
            binance_ws_url=mock.ws_url,
            binance_rest_url=mock.rest_url,
            market_backfill_bars=5,
            market_status_interval_seconds=0.05,
            market_lease_ttl_seconds=1.0,
            market_min_resync_interval_seconds=0.0,
            market_backoff_base_seconds=0.001,
            market_backoff_cap_seconds=0.01,
        )
        handle = start_ingestion(settings, redis_client)
        (ingestor,) = handle.ingestors
        try:
            await wait_for(lambda: isinstance(ingestor.source, BinanceConnector) and _steady(ingestor.source))
            connector = ingestor.source
            assert isinstance(connector, BinanceConnector)
            await wait_for(lambda: ingestor.backfill.state == "done")
            await asyncio.sleep(0.2)  # let the first status writes and lease renewals settle their connections
            redis_port = redis_client.connection_pool.connection_kwargs.get("port", 6379)

            def counts() -> tuple[int, int]:
                # Redis connections are pooled: the pool opens one more whenever the ingestor's writers (pipeline
                # flush, status, lease, kline repairs) happen to overlap, and keeps it. They are counted apart:
                # bounded, not leaked per reconnect.
                return open_fds() - redis_sockets(redis_port), len(_ingestion_tasks())

            before = counts()
            tasks_before = _task_names()

            for i in range(100):
                seen = mock.connections
                if i % 2:
                    mock.drop_all()  # the venue drops us
                else:
                    await connector.force_reconnect()  # we drop it (a stale feed, say)
                await wait_for(lambda: mock.connections > seen and _steady(connector))  # noqa: B023

            after: Any = None
            for _ in range(50):  # transient tasks (a status write, a lease renewal) come and go: poll
                await wait_for(lambda: _steady(connector) and not ingestor.backfill.repairs_pending)
                after = counts()
                if after == before:
                    break
                await asyncio.sleep(0.1)
            pooled = redis_sockets(redis_port)
            print(f"\nFDs (besides {pooled} pooled Redis connections) {before[0]} → {after[0]},"
                  f" tasks {before[1]} → {after[1]} after 100 reconnects")  # fmt: skip
            assert after == before, f"tasks before {tasks_before}, after {_task_names()}"
            assert pooled <= 8, "Redis connections stay bounded by the ingestor's concurrent writers"
            assert connector.stats.disconnects == 100
            assert ingestor.keeper.acquisitions == 1, "the reconnects stayed inside the connector"
        finally:
            await handle.aclose()
