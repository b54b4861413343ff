"""The bounded pipeline: backpressure for depth diffs and liquidations, coalescing for trades, batching to Redis,
and nothing lost under a burst or a slow or failing Redis."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from app.market.aggregation import Bar
from app.market.book import OrderBook
from app.market.events import BUY, SELL, BookSnapshot, BookUpdate, Kline, Liquidation, MarketEvent, Trade
from app.market.pipeline import Pipeline, PipelineLimits, default_tick
from app.market.store import read_candles, read_footprints, read_orderbook

T0 = 1_700_000_040_000
FEED = [("binance", "BTCUSDT")]


class _SlowPipe:
    def __init__(self, inner: Any, delay_s: float, fail: list[int]) -> None:
        self._inner = inner
        self._delay_s = delay_s
        self._fail = fail

    async def __aenter__(self) -> _SlowPipe:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._inner.__aexit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def execute(self) -> list[Any]:
        await asyncio.sleep(self._delay_s)
        if self._fail and self._fail[0] > 0:
            self._fail[0] -= 1
            raise RedisConnectionError("injected: Redis went away")
        result: list[Any] = await self._inner.execute()
        return result


class SlowRedis:
    """A real client whose pipelines take ``delay_s`` longer (a slow or remote Redis) or fail ``fail`` times."""

    def __init__(self, inner: Redis, delay_s: float = 0.0, fail: int = 0) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self.fail = [fail]
        self.executes = 0

    def pipeline(self, transaction: bool = True) -> _SlowPipe:
        self.executes += 1
        return _SlowPipe(self.inner.pipeline(transaction=transaction), self.delay_s, self.fail)


def _burst(n: int) -> tuple[list[MarketEvent], float, OrderBook]:
    """Trades over three minutes with a depth diff every 4th message and a liquidation every 50th; the total
    trade volume and the book the diffs build, for comparison."""
    events: list[MarketEvent] = [BookSnapshot("binance", "BTCUSDT", T0, T0, 100, ((99.0, 1.0),), ((101.0, 1.0),))]
    book = OrderBook()
    book.apply_snapshot(events[0])  # type: ignore[arg-type]
    volume, update_id = 0.0, 100
    for i in range(n):
        ts = T0 + i * 180  # 1 000 messages span three minutes
        if i % 4 == 3:
            update_id += 1
            diff = BookUpdate(
                "binance",
                "BTCUSDT",
                ts,
                ts,
                update_id,
                update_id,
                None,
                ((99.0 - i % 7, float(i % 5)),),
                ((101.0 + i % 3, 2.0),),
            )
            book.apply_update(diff)
            events.append(diff)
        elif i % 50 == 49:
            events.append(Liquidation("binance", "BTCUSDT", ts, ts, 100.0, 0.5, SELL))
        else:
            qty = (i % 16 + 1) / 16
            volume += qty
            events.append(Trade("binance", "BTCUSDT", ts, ts, 100.0 + (i % 9) * 0.5, qty, BUY if i % 3 else SELL, i))
    return events, volume, book


async def _stored_volume(redis: Redis) -> tuple[float, int]:
    candles = await read_candles(redis, "binance", "BTCUSDT", "1m", 100)
    return sum(c["v"] for c in candles), sum(c["trades"] for c in candles)


@pytest.mark.parametrize("delay_s", [0.0, 0.03], ids=["fast-redis", "slow-redis"])
async def test_a_burst_loses_no_trade_volume_and_no_depth_diff(redis_client: Redis, delay_s: float) -> None:
    events, volume, book = _burst(1000)
    slow = SlowRedis(redis_client, delay_s=delay_s)
    pipeline = Pipeline(cast(Redis, slow), FEED, limits=PipelineLimits(queue_size=100, batch_size=25), clock=None)
    pipeline.start()
    waited = 0.0
    for event in events:
        started = time.perf_counter()
        await pipeline.submit(event)
        waited += time.perf_counter() - started
    await pipeline.aclose()

    stored, trades = await _stored_volume(redis_client)
    assert stored == volume
    assert trades == sum(isinstance(e, Trade) for e in events)
    read = await read_orderbook(redis_client, "binance", "BTCUSDT", 50)
    assert read is not None
    assert read["last_update_id"] == book.last_update_id, "every diff reached the stored book"
    assert read["bids"] == [list(level) for level in book.bids(50)]
    assert read["asks"] == [list(level) for level in book.asks(50)]
    assert pipeline.stats.liquidations == sum(isinstance(e, Liquidation) for e in events)
    if delay_s:
        assert pipeline.stats.coalesced > 0, "a full queue coalesces trades"
        assert waited > 5 * delay_s, "depth diffs and liquidations waited for room: backpressure"
        assert slow.executes < len(events) / 10, "writes are batched"


async def test_coalesced_trades_keep_the_same_bars_and_footprints(redis_client: Redis) -> None:
    events, _, _ = _burst(600)
    trades = [e for e in events if isinstance(e, Trade)]
    results = []
    for queue_size, delay_s, prefix in ((10_000, 0.0, "a"), (4, 0.05, "b")):
        await redis_client.flushdb()
        pipeline = Pipeline(
            cast(Redis, SlowRedis(redis_client, delay_s)),
            FEED,
            limits=PipelineLimits(queue_size=queue_size),
            clock=None,
        )
        pipeline.start()
        for trade in trades:
            await pipeline.submit(trade)
        await pipeline.aclose()
        results.append(
            (
                await read_candles(redis_client, "binance", "BTCUSDT", "1m", 10),
                await read_footprints(redis_client, "binance", "BTCUSDT", "1m", 10),
                pipeline.stats.coalesced > 0,
                prefix,
            )
        )
    (candles_a, footprints_a, coalesced_a, _), (candles_b, footprints_b, coalesced_b, _) = results
    assert (coalesced_a, coalesced_b) == (False, True)
    assert candles_a == candles_b
    assert footprints_a == footprints_b


async def test_a_failing_redis_is_retried_without_losing_bars(redis_client: Redis) -> None:
    events, volume, _ = _burst(200)
    slow = SlowRedis(redis_client, fail=3)
    pipeline = Pipeline(
        cast(Redis, slow), FEED, limits=PipelineLimits(retry_delay_s=0.01, flush_interval_s=0.001), clock=None
    )
    pipeline.start()
    for event in events:
        await pipeline.submit(event)
    await pipeline.aclose()
    assert pipeline.stats.write_errors >= 1
    assert (await _stored_volume(redis_client))[0] == volume


async def test_a_quiet_feed_closes_its_bar_by_the_clock_after_the_grace(redis_client: Redis) -> None:
    now = [T0 + 30_000]
    limits = PipelineLimits(tick_interval_s=0.01, close_grace_ms=2000)
    pipeline = Pipeline(redis_client, FEED, limits=limits, clock=lambda: now[0])
    pipeline.start()
    await pipeline.submit(Trade("binance", "BTCUSDT", T0, T0, 100.0, 1.0, BUY, 1))
    await asyncio.sleep(0.05)
    assert [c["closed"] for c in await read_candles(redis_client, "binance", "BTCUSDT", "1m", 5)] == [False]
    now[0] = T0 + 61_000  # the window ended, but within the grace
    await asyncio.sleep(0.05)
    assert [c["closed"] for c in await read_candles(redis_client, "binance", "BTCUSDT", "1m", 5)] == [False]
    now[0] = T0 + 62_500
    for _ in range(100):
        await asyncio.sleep(0.01)
        if [c["closed"] for c in await read_candles(redis_client, "binance", "BTCUSDT", "1m", 5)] == [True]:
            break
    else:
        pytest.fail("the quiet bar never closed")
    await pipeline.aclose()


async def test_a_bar_that_began_before_the_pipeline_goes_to_the_partial_handler(redis_client: Redis) -> None:
    partial: list[Bar] = []
    pipeline = Pipeline(redis_client, FEED, clock=None, on_partial=partial.append)
    pipeline.start()
    first = T0 + 30_000  # mid-minute: the minute's first half was never seen
    for i, ts in enumerate((first, T0 + 60_000, T0 + 120_000)):
        await pipeline.submit(Trade("binance", "BTCUSDT", ts, ts, 100.0, 1.0, BUY, i))
    await pipeline.aclose()
    # 22:14:30 is mid-minute, and mid-way through the 22:10 5 m and the 22:00 15 m windows, which 22:15 closes.
    assert {(b.timeframe, b.open_time) for b in partial} == {("1m", T0), ("5m", T0 - 240_000), ("15m", T0 - 840_000)}
    candles = await read_candles(redis_client, "binance", "BTCUSDT", "1m", 5)
    assert [(c["t"], c["closed"]) for c in candles] == [(T0 + 60_000, True), (T0 + 120_000, False)]


async def test_bars_spanning_a_stream_break_go_to_the_partial_handler_and_the_break_to_the_gap_hook(
    redis_client: Redis,
) -> None:
    partial: list[Bar] = []
    gaps: list[tuple[int, int]] = []
    pipeline = Pipeline(redis_client, FEED, clock=None, on_partial=partial.append, on_gap=lambda *g: gaps.append(g))
    pipeline.start()
    # T0 is 22:14:00. Seen: 22:14:00-22:15:10, then a break, then 22:17:20 on; 22:15:10-22:17:20 was missed.
    before = [T0, T0 + 30_000, T0 + 70_000]
    after = [T0 + 200_000, T0 + 230_000, T0 + 250_000, T0 + 300_000, T0 + 360_000]
    for i, ts in enumerate(before):
        await pipeline.submit(Trade("binance", "BTCUSDT", ts, ts, 100.0, 1.0, BUY, i))
    await pipeline.mark_gap("binance", "BTCUSDT")
    await pipeline.mark_gap("binance", "BTCUSDT")  # every failed reconnect says so again: one break
    for i, ts in enumerate(after):
        await pipeline.submit(Trade("binance", "BTCUSDT", ts, ts, 100.0, 1.0, BUY, 10 + i))
    await pipeline.aclose()
    assert gaps == [(T0 + 70_000, T0 + 200_000)]
    one_minute = sorted(b.open_time for b in partial if b.timeframe == "1m")
    assert one_minute == [T0 + 60_000, T0 + 180_000], "the bar the break cut and the one the reconnect joined"
    assert ("5m", T0 + 60_000) in {(b.timeframe, b.open_time) for b in partial}, "22:15-22:20 spans the break"
    candles = await read_candles(redis_client, "binance", "BTCUSDT", "1m", 10)
    # Stored: the fully observed 22:14, 22:18 and 22:19 bars; the forming 22:20. Not the partial 22:15 and 22:17.
    assert [(c["t"], c["closed"]) for c in candles] == [
        (T0, True),
        (T0 + 240_000, True),
        (T0 + 300_000, True),
        (T0 + 360_000, False),
    ]


async def test_a_break_without_a_partial_handler_is_ignored(redis_client: Redis) -> None:
    pipeline = Pipeline(redis_client, FEED, clock=None)
    pipeline.start()
    await pipeline.submit(Trade("binance", "BTCUSDT", T0, T0, 100.0, 1.0, BUY, 1))
    await pipeline.mark_gap("binance", "BTCUSDT")  # no klines to repair from: bars are stored as observed
    await pipeline.submit(Trade("binance", "BTCUSDT", T0 + 90_000, T0 + 90_000, 100.0, 1.0, BUY, 2))
    await pipeline.aclose()
    candles = await read_candles(redis_client, "binance", "BTCUSDT", "1m", 10)
    assert [(c["t"], c["closed"], c["v"]) for c in candles] == [(T0, True, 1.0), (T0 + 60_000, False, 1.0)]


async def test_other_feeds_and_klines_are_ignored(redis_client: Redis) -> None:
    pipeline = Pipeline(redis_client, FEED, clock=None)
    pipeline.start()
    await pipeline.submit(Trade("binance", "ETHUSDT", T0, T0, 1.0, 1.0, BUY, 1))
    kline = Kline("binance", "BTCUSDT", T0, T0, "1m", T0, T0 + 59_999, 1, 1, 1, 1, 1, 1, 1, 1, 1, True)
    await pipeline.submit(kline)
    await pipeline.aclose()
    assert pipeline.stats.ignored == 2
    assert await redis_client.keys("*") == []


@pytest.mark.parametrize(("price", "tick"), [(60_000.0, 1.0), (3_000.0, 0.1), (0.1234, 0.00001), (0.0, 1.0)])
def test_default_tick_is_about_five_significant_digits(price: float, tick: float) -> None:
    assert default_tick(price) == pytest.approx(tick)
