"""Bars under clock skew, through the runtime against a live mock venue whose clock runs ahead of ours or behind.

The stream opens late in a minute, so that minute is observed only in part and must become the venue's own kline.
With the venue ahead, the next minute's first trade closes it while our clock is still seconds before its end; with
the venue behind, our clock has passed the minute's end while the venue is still trading in it. Either way every
minute must end up exactly the venue's, decided by the venue's clock; a venue that never gives the kline leaves the
partial bar, flagged, never a hole.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from redis.asyncio import Redis

from app.config import Settings
from app.market.runtime import IngestionHandle, start_ingestion
from app.market.store import read_candles, read_feed_status
from tests.conftest import TEST_REDIS_URL, make_settings
from tests.market.helpers import wait_for
from tests.market.mock_binance_live import MIN, LiveBinance, VirtualClock
from tests.market.test_runtime import _until

SYMBOL = "TESTUSDT"
SPEED = 20.0  # one market minute every three seconds
WINDOW_15M = 15 * MIN


def _minute(ms: int) -> int:
    return ms - ms % MIN


def _settings(mock: LiveBinance, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "redis_url": TEST_REDIS_URL,
        "feeds": f"binance:{SYMBOL}",
        "binance_ws_url": mock.ws_url,
        "binance_rest_url": mock.rest_url,
        "market_backfill_bars": 20,
        "market_close_grace_ms": 2000,  # 100 ms of real time at this speed
        "market_status_interval_seconds": 0.05,
        "market_lease_ttl_seconds": 1.0,
        "market_min_resync_interval_seconds": 0.01,
        "market_backoff_base_seconds": 0.01,
        "market_backoff_cap_seconds": 0.05,
    }
    return make_settings(**(base | overrides))


def _venue_and_host(skew_ms: int) -> tuple[VirtualClock, int]:
    """Our (virtual) clock, started so that the venue's starts 40 s into the first minute of a 15 m window (no 5 m
    bar closes during a test); and the venue's time at which to connect: 1.2 s before the next minute ends, so that
    minute is observed in part, one is closed for the backfill, and a host whose clock leads the venue's by 1.5 s
    backfills when by its clock that minute is over."""
    now = int(time.time() * 1000)
    venue_start = now - now % WINDOW_15M - 16 * WINDOW_15M + 40_000  # in the past: klines are closed
    return VirtualClock(start_ms=venue_start - skew_ms, speed=SPEED), venue_start + 2 * MIN - 40_000 - 1200


async def _run_until_closed(
    mock: LiveBinance, handle: IngestionHandle, redis: Redis, joined: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Let the venue trade into the minute after the partial one, stop it, and wait until its last minute is closed
    and every repair settled; returns the closed 1 m candles and the feed status written after that."""
    (ingestor,) = handle.ingestors
    await wait_for(lambda: mock.now() >= _minute(joined) + MIN + 30_000)
    mock.paused = True  # the market stops trading: its last minute closes by the clock
    last_traded = max(mock.market.minutes)

    async def all_closed() -> Any:
        candles = await read_candles(redis, "binance", SYMBOL, "1m", 100)
        closed = [c for c in candles if c["closed"]]
        settled = not ingestor.backfill.repairs_pending
        return closed if closed and closed[-1]["t"] == last_traded and settled else None

    closed: list[dict[str, Any]] = await _until(all_closed, limit_s=20.0)
    since = int(time.time() * 1000)

    async def written_since() -> Any:
        statuses = await read_feed_status(redis)
        return statuses[0] if statuses and statuses[0]["updated_ms"] > since else None

    status: dict[str, Any] = await _until(written_since)
    return closed, status


@pytest.mark.parametrize("skew_ms", [1500, 5000, -1500], ids=["venue 1.5 s ahead", "venue 5 s ahead", "venue behind"])
async def test_a_partial_first_minute_becomes_the_venues_exact_kline_whatever_the_clock_skew(
    redis_client: Redis, skew_ms: int
) -> None:
    clock, join_at = _venue_and_host(skew_ms)
    async with LiveBinance(SYMBOL, clock=clock, clock_offset_ms=skew_ms) as mock:
        await wait_for(lambda: mock.now() >= join_at)
        handle = start_ingestion(_settings(mock), redis_client, clock=clock)
        try:
            closed, status = await _run_until_closed(mock, handle, redis_client, join_at)
        finally:
            await handle.aclose()

    venue_minutes = mock.market.minutes
    assert len(venue_minutes) >= 3, "a backfilled minute, the partial one, the last"
    assert [c["t"] for c in closed] == sorted(venue_minutes), "every minute the venue traded, none missing"
    for candle in closed:
        bar = venue_minutes[candle["t"]]
        assert (candle["v"], candle["buy_v"], candle["trades"]) == (bar.volume, bar.buy, bar.trades), candle["t"]
        assert "partial" not in candle
    assert status["backfill"]["repaired"] >= 1
    assert status["backfill"]["repairs_failed"] == 0
    # A lower bound: the venue's stamps were made before we read them, by at most the loopback's transit time.
    assert skew_ms - 1000 <= status["clock_offset_ms"] <= skew_ms


async def test_a_repair_the_venue_answers_with_nothing_keeps_the_partial_bar_flagged_never_a_hole(
    redis_client: Redis,
) -> None:
    skew_ms = 1500
    clock, join_at = _venue_and_host(skew_ms)
    join_at -= 10_000  # 10 s of the minute seen live, so that minute is surely the first live one
    async with LiveBinance(SYMBOL, clock=clock, clock_offset_ms=skew_ms) as mock:
        partial_minute = _minute(join_at)
        mock.klines_from_ms = partial_minute  # the venue's klines stop before it: a repair gets nothing
        await wait_for(lambda: mock.now() >= join_at)
        settings = _settings(mock, market_repair_retry_seconds=0.3)
        handle = start_ingestion(settings, redis_client, clock=clock)
        try:
            closed, status = await _run_until_closed(mock, handle, redis_client, join_at)
        finally:
            await handle.aclose()

    venue_minutes = mock.market.minutes
    assert [c["t"] for c in closed] == sorted(venue_minutes), "the partial minute is kept: no hole"
    for candle in closed:
        bar = venue_minutes[candle["t"]]
        if candle["t"] == partial_minute:
            assert candle["partial"] is True
            assert 0 < candle["v"] < bar.volume, "what the stream saw of it"
        else:
            assert (candle["v"], candle["buy_v"], candle["trades"]) == (bar.volume, bar.buy, bar.trades), candle["t"]
            assert "partial" not in candle
    assert (status["backfill"]["repaired"], status["backfill"]["repairs_failed"]) == (0, 1)
    asked = [call for call in mock.kline_calls if f"startTime={partial_minute}" in call]
    assert len(asked) >= 2, "retried before giving up"
