"""The market-data store contract, run on real Redis and on the embedded `memory://` backend: candles oldest first
with the forming bar last, immutable closed bars, retention, books, feed status, and a bounded, hash-tagged layout.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from app.core.redis import RedisClient, create_redis
from app.market.aggregation import Bar, FootprintLevel
from app.market.book import OrderBook
from app.market.events import BUY, SELL, BookSnapshot, Liquidation, Trade
from app.market.keys import FEEDS_KEY, FeedKeys, InvalidFeed
from app.market.pipeline import Pipeline
from app.market.store import (
    FeedWriter,
    StoreLimits,
    candle,
    list_feeds,
    read_candles,
    read_candles_json,
    read_feed_status,
    read_footprints,
    read_liquidations,
    read_orderbook,
)
from tests.conftest import TEST_REDIS_URL, make_settings

T0 = 1_700_000_040_000
MIN = 60_000
CANDLE_KEYS = ["t", "o", "h", "l", "c", "v", "buy_v", "sell_v", "delta", "trades", "vwap", "closed"]


@pytest.fixture(params=["redis", "memory"])
def redis_url(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        request.getfixturevalue("redis_client")  # flushes the test index
        return TEST_REDIS_URL
    return f"memory://store-{uuid.uuid4().hex}"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisClient]:
    client = create_redis(make_settings(redis_url=redis_url))
    try:
        yield client
    finally:
        await client.aclose()


def _bar(t: int, close: float = 100.0, *, closed: bool = True, tf: str = "1m", liq: float = 0.0) -> Bar:
    return Bar(
        timeframe=tf,
        open_time=t,
        open=99.0,
        high=101.0,
        low=98.0,
        close=close,
        volume=3.0,
        buy_volume=2.0,
        sell_volume=1.0,
        quote_volume=300.0,
        trade_count=3,
        long_liquidations=liq,
        short_liquidations=0.0,
        closed=closed,
        footprint=(FootprintLevel(99.0, 1.0, 0.0), FootprintLevel(100.0, 0.0, 2.0)),
        footprint_tick=1.0,
    )


async def _write(redis: Redis, writer: FeedWriter, *bars: Bar, forming: Bar | None = None) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for bar in bars:
            writer.close_bar(pipe, bar)
        if forming is not None:
            writer.set_forming(pipe, forming.timeframe, forming)
        await pipe.execute()


async def test_candles_are_oldest_first_with_the_forming_bar_last(redis: Redis) -> None:
    writer = FeedWriter("sim", "BTCUSDT", StoreLimits())
    await _write(redis, writer, _bar(T0 + MIN), _bar(T0), forming=_bar(T0 + 2 * MIN, closed=False))
    candles = await read_candles(redis, "sim", "BTCUSDT", "1m", 10)
    assert [c["t"] for c in candles] == [T0, T0 + MIN, T0 + 2 * MIN]
    assert [c["closed"] for c in candles] == [True, True, False]
    assert list(candles[0]) == CANDLE_KEYS
    assert candles[0] == candle(_bar(T0))
    assert candles[0]["delta"] == 1.0
    assert candles[0]["vwap"] == 100.0
    assert [c["t"] for c in await read_candles(redis, "sim", "BTCUSDT", "1m", 2)] == [T0 + MIN, T0 + 2 * MIN]
    assert await read_candles(redis, "sim", "ETHUSDT", "1m", 10) == []


async def test_a_forming_bar_that_is_not_newer_than_the_last_closed_is_not_returned(redis: Redis) -> None:
    writer = FeedWriter("sim", "BTCUSDT", StoreLimits())
    await _write(redis, writer, _bar(T0), forming=_bar(T0, closed=False))
    assert [c["closed"] for c in await read_candles(redis, "sim", "BTCUSDT", "1m", 10)] == [True]
    assert await read_candles_json(redis, "sim", "BTCUSDT", "5m", 10) == b"[]"


async def test_closed_bars_are_immutable(redis: Redis) -> None:
    writer = FeedWriter("sim", "BTCUSDT", StoreLimits())
    await _write(redis, writer, _bar(T0, close=100.0, liq=1.0))
    await _write(redis, writer, _bar(T0, close=555.0, liq=9.0))  # a replay, a backfill or a second ingestor
    (stored,) = await read_candles(redis, "sim", "BTCUSDT", "1m", 10)
    assert stored["c"] == 100.0
    assert await read_liquidations(redis, "sim", "BTCUSDT", "1m", 10) == [{"t": T0, "long": 1.0, "short": 0.0}]
    assert await redis.zcard(writer.keys.bars["1m"]) == 1


async def test_only_a_new_newest_closed_bar_is_announced_on_the_bar_close_channel(redis: Redis) -> None:
    writer = FeedWriter("sim", "BTCUSDT", StoreLimits())
    pubsub = redis.pubsub()
    await pubsub.subscribe(writer.keys.bar_closed)
    try:
        subscribed = await pubsub.get_message(timeout=1.0)
        assert subscribed is not None
        assert subscribed["type"] == "subscribe"
        await _write(redis, writer, _bar(T0 + MIN))
        await _write(redis, writer, _bar(T0))  # older (a backfill): stored, not announced
        await _write(redis, writer, _bar(T0 + MIN, close=1.0))  # already stored: immutable, not announced
        await _write(redis, writer, _bar(T0 + 5 * MIN, tf="5m"))
        messages = []
        while (message := await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.3)) is not None:
            messages.append(message["data"])
        assert messages == [f"1m:{T0 + MIN}".encode(), f"5m:{T0 + 5 * MIN}".encode()]
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_retention_keeps_the_newest_bars_per_timeframe(redis: Redis) -> None:
    limits = StoreLimits(bar_retention=10, bar_retention_by_timeframe={"5m": 12}, footprint_retention=4)
    writer = FeedWriter("sim", "BTCUSDT", limits)
    await _write(redis, writer, *(_bar(T0 + i * MIN) for i in range(25)))
    await _write(redis, writer, *(_bar(T0 + i * 5 * MIN, tf="5m") for i in range(25)))
    candles = await read_candles(redis, "sim", "BTCUSDT", "1m", 100, max_limit=100)
    assert [c["t"] for c in candles] == [T0 + i * MIN for i in range(15, 25)]
    assert await redis.zcard(writer.keys.bars["5m"]) == 12
    footprints = await read_footprints(redis, "sim", "BTCUSDT", "1m", 100, max_limit=100)
    assert [f["t"] for f in footprints] == [T0 + i * MIN for i in range(21, 25)]
    assert footprints[-1]["levels"] == [[99.0, 1.0, 0.0], [100.0, 0.0, 2.0]]


async def test_forming_footprint_and_liquidations_are_read_after_the_closed_ones(redis: Redis) -> None:
    writer = FeedWriter("sim", "BTCUSDT", StoreLimits())
    await _write(redis, writer, _bar(T0, liq=2.0), forming=_bar(T0 + MIN, closed=False, liq=3.0))
    footprints = await read_footprints(redis, "sim", "BTCUSDT", "1m", 10)
    assert [f["t"] for f in footprints] == [T0, T0 + MIN]
    liquidations = await read_liquidations(redis, "sim", "BTCUSDT", "1m", 10)
    assert liquidations == [{"t": T0, "long": 2.0, "short": 0.0}, {"t": T0 + MIN, "long": 3.0, "short": 0.0}]
    await _write(redis, writer, forming=None)


async def test_orderbook_is_read_best_first_at_the_requested_depth(redis: Redis) -> None:
    writer = FeedWriter("sim", "BTCUSDT", StoreLimits(book_depth=5))
    book = OrderBook()
    bids = tuple((100.0 - i, 1.0 + i) for i in range(10))
    asks = tuple((101.0 + i, 2.0 + i) for i in range(10))
    book.apply_snapshot(BookSnapshot("sim", "BTCUSDT", T0, T0, 42, bids, asks))
    async with redis.pipeline(transaction=False) as pipe:
        writer.set_book(pipe, book.top(5), book.last_update_id, T0)
        await pipe.execute()
    read = await read_orderbook(redis, "sim", "BTCUSDT", 3)
    assert read == {
        "bids": [[100.0, 1.0], [99.0, 2.0], [98.0, 3.0]],
        "asks": [[101.0, 2.0], [102.0, 3.0], [103.0, 4.0]],
        "last_update_id": 42,
        "ts": T0,
    }
    assert await read_orderbook(redis, "sim", "ETHUSDT", 3) is None


async def test_feed_status_lists_live_feeds_and_expected_ones_without_an_ingestor(redis: Redis) -> None:
    writer = FeedWriter("sim", "BTCUSDT", StoreLimits(status_ttl_ms=30_000))
    now = 1_800_000_000_000
    async with redis.pipeline(transaction=False) as pipe:
        writer.set_status(
            pipe, {"venue": "sim", "symbol": "BTCUSDT", "connected": True, "last_message_ms": now - 1500}, now
        )
        await pipe.execute()
    assert await list_feeds(redis, now_ms=now) == ["sim:BTCUSDT"]
    statuses = await read_feed_status(redis, [("binance", "ETHUSDT")], now_ms=now)
    assert statuses[0] == {"venue": "binance", "symbol": "ETHUSDT", "state": "no_ingestor", "connected": False}
    assert statuses[1]["last_message_age_s"] == 1.5
    assert await list_feeds(redis, now_ms=now + 31_000) == [], "a feed whose ingestor stopped writing drops out"


@pytest.mark.parametrize(
    ("venue", "symbol", "timeframe", "limit"),
    [
        ("nope", "BTCUSDT", "1m", 1),
        ("sim", "btc{x}", "1m", 1),
        ("sim", "BTCUSDT", "2m", 1),
        ("sim", "BTCUSDT", "1m", 0),
    ],
)
async def test_reads_reject_unknown_venues_symbols_timeframes_and_limits(
    redis: Redis, venue: str, symbol: str, timeframe: str, limit: int
) -> None:
    with pytest.raises(ValueError, match=r"valid|invalid|limit"):
        await read_candles(redis, venue, symbol, timeframe, limit)


def test_invalid_feed_is_a_value_error_naming_the_valid_values() -> None:
    with pytest.raises(InvalidFeed, match="binance-futures"):
        FeedKeys("kraken", "BTCUSDT")


async def test_every_key_written_is_bounded_and_carries_the_feed_hash_tag(redis: Redis) -> None:
    limits = StoreLimits(bar_retention=20, footprint_retention=5, liquidation_stream_len=10)
    pipeline = Pipeline(redis, [("sim", "BTCUSDT")], store_limits=limits, clock=None)
    pipeline.start()
    for i in range(400):
        ts = T0 + i * 7_000  # 46 minutes of trades: more closed 1m bars than the retention
        await pipeline.submit(Trade("sim", "BTCUSDT", ts, ts, 100.0 + i % 7, 0.5, BUY if i % 3 else SELL, i))
        if i % 2 == 0:
            await pipeline.submit(Liquidation("sim", "BTCUSDT", ts, ts, 100.0, 1.0, SELL))
    await pipeline.submit(BookSnapshot("sim", "BTCUSDT", T0, T0, 1, ((99.0, 1.0),), ((101.0, 1.0),)))
    await pipeline.aclose()
    async with redis.pipeline(transaction=False) as pipe:
        FeedWriter("sim", "BTCUSDT", limits).set_status(pipe, {"venue": "sim", "symbol": "BTCUSDT"}, T0)
        await pipe.execute()

    keys = sorted(k.decode() if isinstance(k, bytes) else k for k in await redis.keys("*"))
    assert len(keys) >= 6 * 4 + 3
    slots = set()
    for key in keys:
        kind_raw = await redis.type(key)
        kind = kind_raw.decode() if isinstance(kind_raw, bytes) else kind_raw
        ttl = await redis.pttl(key)
        if key == FEEDS_KEY:
            assert ttl > 0
            continue
        assert "{sim:BTCUSDT}" in key, key
        slots.add(key_slot(key.encode()))
        if kind == "string":
            assert 0 < ttl <= max(limits.forming_ttl_ms, limits.book_ttl_ms, limits.status_ttl_ms), key
        elif kind == "zset":
            cap = limits.footprint_retention if ":fp:" in key else limits.bar_retention
            assert await redis.zcard(key) <= cap, key
        else:
            assert kind == "stream", key
            # MAXLEN ~ trims whole radix-tree nodes (stream-node-max-entries, 100 by default): 200 were added.
            assert await redis.xlen(key) <= limits.liquidation_stream_len + 100, key
    assert len(slots) == 1, "every key of a feed lives in one cluster slot"
    assert await redis.zcard(FeedKeys("sim", "BTCUSDT").bars["1m"]) == 20
