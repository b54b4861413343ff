"""Ingestion end to end in-process: settings → lease → the real Binance connector against the mock exchange →
pipeline → Redis, read back with the functions the routes will call; REST kline backfill; an unreachable venue."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from app.config import Settings
from app.market.aggregation import TIMEFRAMES
from app.market.backfill import BackfillError, parse_klines
from app.market.runtime import FeedConfigError, IngestionHandle, configured_feeds, start_ingestion
from app.market.store import read_candles, read_feed_status, read_orderbook
from tests.conftest import TEST_REDIS_URL, make_settings
from tests.market.mock_bybit import BybitSession, LiveBook, MockBybit, trade_frame
from tests.market.mock_exchange import Capture, MockExchange, synthetic_capture
from tests.market.test_binance_connector import _final_book

SYMBOL = "TESTUSDT"
MIN = 60_000


def _settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "redis_url": TEST_REDIS_URL,
        "feeds": f"binance:{SYMBOL}",
        "market_status_interval_seconds": 0.05,
        "market_lease_ttl_seconds": 1.0,
        "market_min_resync_interval_seconds": 0.01,
    }
    return make_settings(**(base | overrides))


def _kline(open_time: int, buy: float, volume: float, trades: int) -> list[object]:
    # Binance's REST layout: open time, o, h, l, c, volume, close time, quote volume, trades, taker buy base, …
    return [open_time, "100.0", "102.0", "99.0", "101.0", str(volume), open_time + MIN - 1, str(volume * 100), trades,
            str(buy), str(buy * 100), "0"]  # fmt: skip


def _capture_with_trades(now_ms: int) -> tuple[Capture, dict[int, float]]:
    """The synthetic depth capture plus aggTrades over the last three whole minutes, the first starting half-way
    through its minute (as if ingestion started then). Returns live volume per minute."""
    depth = synthetic_capture(diffs=40)
    minute = now_ms - now_ms % MIN
    frames, stamps = list(depth.frames), list(depth.receive_ts)
    volume: dict[int, float] = {}
    trade_id = 0
    for start in (minute - 3 * MIN + 30_000, minute - 2 * MIN, minute - MIN):
        window = start - start % MIN
        for k in range(10):
            trade_id += 1
            qty = (k + 1) / 8
            volume[window] = volume.get(window, 0.0) + qty
            data = {"e": "aggTrade", "E": start + k * 1000, "s": SYMBOL, "a": trade_id, "p": f"{100 + k}.5",
                    "q": str(qty), "f": trade_id, "l": trade_id, "T": start + k * 1000, "m": k % 3 == 0}  # fmt: skip
            frames.append(json.dumps({"stream": f"{SYMBOL.lower()}@aggTrade", "data": data}))
            stamps.append(stamps[-1])
    return Capture(depth.url, tuple(frames), tuple(stamps), depth.snapshots), volume


async def _until(check: Callable[[], Any], limit_s: float = 10.0) -> Any:
    async with asyncio.timeout(limit_s):
        while True:
            result = await check()
            if result:
                return result
            await asyncio.sleep(0.05)


async def test_the_real_connector_writes_candles_and_books_readable_by_the_api(redis_client: Redis) -> None:
    now = int(time.time() * 1000)
    minute = now - now % MIN
    capture, live_volume = _capture_with_trades(now)
    rows = [_kline(minute - i * MIN, buy=1.0 + i, volume=4.0 + i, trades=i) for i in range(10, 2, -1)]
    async with MockExchange(capture, klines={"1m": rows}) as mock:
        handle = start_ingestion(_settings(binance_ws_url=mock.ws_url, binance_rest_url=mock.rest_url), redis_client)
        try:
            final_bids, final_asks = _final_book(synthetic_capture(diffs=40), SYMBOL)

            async def book_done() -> Any:
                book = await read_orderbook(redis_client, "binance", SYMBOL, 50)
                return book if book and book["last_update_id"] == 1039 else None

            book = await _until(book_done)
            assert book["bids"] == [list(level) for level in final_bids[:50]]
            assert book["asks"] == [list(level) for level in final_asks[:50]]

            async def bars_done() -> Any:
                candles = await read_candles(redis_client, "binance", SYMBOL, "1m", 20)
                closed = [c for c in candles if c["closed"]]
                return candles if len(closed) == 10 else None

            candles = await _until(bars_done)
            by_time = {c["t"]: c for c in candles}
            for i in range(10, 3, -1):  # backfilled: exact delta from the taker-buy volume
                bar = by_time[minute - i * MIN]
                assert (bar["v"], bar["buy_v"], bar["sell_v"], bar["trades"]) == (4.0 + i, 1.0 + i, 3.0, i)
                assert bar["delta"] == (1.0 + i) - 3.0
            partial = by_time[minute - 3 * MIN]
            assert partial["v"] == 7.0, "the minute seen only in part is the venue's kline, not the live half"
            for window in (minute - 2 * MIN, minute - MIN):
                assert by_time[window]["v"] == live_volume[window]
                assert by_time[window]["trades"] == 10

            statuses = await _until(lambda: _status_with(redis_client, "backfill"))
            status = statuses[0]
            assert status["connected"] is True
            assert status["state"] == "streaming"
            assert status["backfill"]["state"] == "done"
            assert status["breaker"] == "closed"
            assert status["queue_depth"] >= 0
            assert any("klines" in call and "startTime" not in call for call in mock.kline_calls)
        finally:
            await handle.aclose()
    assert await redis_client.get(f"md:{{binance:{SYMBOL}}}:lease") is None


async def _status_with(redis: Redis, field: str) -> list[dict[str, Any]] | None:
    statuses = await read_feed_status(redis)
    return (
        statuses
        if statuses and field in statuses[0] and statuses[0].get("backfill", {}).get("state") == "done"
        else None
    )


async def test_an_unreachable_venue_is_reported_and_retried_while_reads_keep_working(redis_client: Redis) -> None:
    # A bound socket that never listens: connections are refused, and no other test can take the port meanwhile.
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    settings = _settings(binance_ws_url=f"ws://127.0.0.1:{port}", binance_rest_url=f"http://127.0.0.1:{port}")
    handle = start_ingestion(settings, redis_client)
    try:

        async def unreachable() -> Any:
            statuses = await read_feed_status(redis_client)
            status = statuses[0] if statuses else {}
            return status if status.get("state") == "unreachable" and status["backfill"]["attempts"] >= 1 else None

        status = await _until(unreachable)
        assert status["connected"] is False
        assert status["last_error"]
        assert status["backfill"]["state"] == "failed"
        assert "unreachable" in status["backfill"]["error"]
        assert await read_candles(redis_client, "binance", SYMBOL, "1m", 10) == []
        first_attempts = status["backfill"]["attempts"]
        await _until(lambda: _attempts_above(redis_client, first_attempts), limit_s=6.0)  # it keeps retrying
    finally:
        await handle.aclose()
        closed.close()
    (stopped,) = await read_feed_status(redis_client)
    assert stopped["state"] == "stopped"


async def _attempts_above(redis: Redis, attempts: int) -> bool:
    (status,) = await read_feed_status(redis)
    return bool(status["backfill"]["attempts"] > attempts or status["reconnects"] > 1)


async def test_a_sim_feed_ingests_without_rest(redis_client: Redis) -> None:
    handle: IngestionHandle = start_ingestion(_settings(feeds="sim:BTCUSDT", sim_rate=500), redis_client)
    try:
        candles = await _until(lambda: read_candles(redis_client, "sim", "BTCUSDT", "1m", 5))
        assert candles[-1]["closed"] is False
        assert handle.held() == [("sim", "BTCUSDT")]
        (status,) = await _until(lambda: read_feed_status(redis_client))
        assert status["simulated"] is True
        assert status["backfill"]["state"] == "n/a"
    finally:
        await handle.aclose()


@pytest.mark.parametrize(
    ("feeds", "overrides", "message"),
    [
        ("binance:BTCUSDT;coinapi:XYZ", {}, "DELTAFLOW_COINAPI_SYMBOL_MAP"),
        ("coinapi:BTCUSDT", {"coinapi_symbol_prefix": "BINANCE"}, "DELTAFLOW_COINAPI_SYMBOL_PREFIX"),
        (
            "coinapi:BTCUSDT,XBTUSDT",
            {"coinapi_symbol_map": {"XBTUSDT": "BINANCE_SPOT_BTC_USDT"}},
            "both map to BINANCE_SPOT_BTC_USDT",
        ),
    ],
)
def test_coinapi_symbols_that_cannot_be_mapped_are_a_clear_configuration_error(
    feeds: str, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(FeedConfigError, match=message):
        configured_feeds(make_settings(feeds=feeds, **overrides))


def test_empty_feeds_mean_nothing_to_ingest() -> None:
    assert configured_feeds(make_settings(feeds="")) == ()


def test_klines_parse_to_closed_bars_with_exact_delta_and_drop_the_forming_row() -> None:
    rows = [_kline(0, buy=3.0, volume=5.0, trades=7), _kline(MIN, buy=1.0, volume=1.0, trades=1)]
    (bar,) = parse_klines(json.dumps(rows).encode(), "1m", now_ms=MIN + 10)
    assert (bar.volume, bar.buy_volume, bar.sell_volume, bar.delta, bar.trade_count) == (5.0, 3.0, 2.0, 1.0, 7)
    assert bar.vwap == 100.0
    assert bar.closed
    with pytest.raises(BackfillError, match="malformed"):
        parse_klines(b"{", "1m", now_ms=0)
    assert set(TIMEFRAMES) == {"1m", "5m", "15m", "1h", "4h", "1d"}


async def test_a_bybit_feed_runs_through_the_same_runtime(redis_client: Redis) -> None:
    book = LiveBook("BTCUSDT", levels=5)
    now = int(time.time() * 1000)

    async def script(session: BybitSession) -> None:
        await session.wait_subscribed()
        await session.send(trade_frame("BTCUSDT", [("Buy", "100.5", "0.25", "1"), ("Sell", "100.0", "0.5", "2")], now))
        for _ in range(5):
            await session.send_delta(book)
        await asyncio.Event().wait()

    async with MockBybit(script, books=[book]) as mock:
        handle = start_ingestion(_settings(feeds="bybit:BTCUSDT", bybit_ws_url=mock.ws_url), redis_client)
        try:
            candles = await _until(lambda: read_candles(redis_client, "bybit", "BTCUSDT", "1m", 5))
            assert (candles[-1]["v"], candles[-1]["delta"]) == (0.75, -0.25)
            bids, _ = book.levels()
            ob = await _until(lambda: read_orderbook(redis_client, "bybit", "BTCUSDT", 5))
            assert ob["bids"] == [list(level) for level in bids[:5]]
            (status,) = await _until(lambda: _connected(redis_client))
            assert status["breaker"] == "n/a"
            assert status["backfill"]["state"] == "n/a"
        finally:
            await handle.aclose()


async def _connected(redis: Redis) -> list[dict[str, Any]] | None:
    statuses = await read_feed_status(redis)
    return statuses if statuses and statuses[0].get("connected") else None
