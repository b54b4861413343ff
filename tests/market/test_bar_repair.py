"""Bars across a mid-session outage, through the runtime against a live mock venue on a fast virtual clock.

The connection drops and the venue refuses reconnects for a few minutes of market time while it keeps trading.
Afterwards every closed bar in Redis must equal the venue's own: minutes fully missed are backfilled from REST
klines, and the bars that were observed only in part (the one the drop cut, the one the reconnect joined, and
every higher-timeframe bar spanning the outage) are the venue's klines too — never the partial live bar, which
the pipeline does not store (closed bars are immutable: a partial one stored first could never be corrected).
"""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio import Redis

from app.market.runtime import start_ingestion
from app.market.store import read_candles, read_feed_status
from tests.conftest import TEST_REDIS_URL, make_settings
from tests.market.helpers import wait_for
from tests.market.mock_binance_live import MIN, LiveBinance, VirtualClock
from tests.market.test_runtime import _until

SYMBOL = "TESTUSDT"
SPEED = 30.0  # one market minute every two seconds


def _minute(ms: int) -> int:
    return ms - ms % MIN


async def test_bars_missed_or_cut_by_a_reconnect_are_repaired_from_klines(redis_client: Redis) -> None:
    now = int(time.time() * 1000)
    clock = VirtualClock(start_ms=_minute(now) - 240 * MIN, speed=SPEED)  # in the past: klines are closed
    async with LiveBinance(SYMBOL, clock=clock) as mock:
        settings = make_settings(
            redis_url=TEST_REDIS_URL,
            feeds=f"binance:{SYMBOL}",
            binance_ws_url=mock.ws_url,
            binance_rest_url=mock.rest_url,
            market_backfill_bars=20,
            # 30 s of market time is 1 s of real time: ample for a trade to reach the writer before its bar closes.
            market_close_grace_ms=30_000,
            market_status_interval_seconds=0.05,
            market_lease_ttl_seconds=1.0,
            market_min_resync_interval_seconds=0.01,
            market_backoff_base_seconds=0.01,
            market_backoff_cap_seconds=0.05,
        )
        await wait_for(lambda: clock() >= clock.start_ms + MIN // 2)  # the venue traded before we connected
        handle = start_ingestion(settings, redis_client, clock=clock)
        (ingestor,) = handle.ingestors
        try:
            await wait_for(lambda: ingestor.pipeline is not None and ingestor.pipeline.stats.trades > 100)
            await wait_for(lambda: clock() >= _minute(clock()) + 20_000)  # mid-minute
            mock.refusing = True
            mock.drop_all()
            outage_from = clock()
            # Three and a half minutes: from anywhere in a minute's second to last 40 s, at least two whole
            # minutes pass without a connection (two and a half left one when the drop came early in a minute).
            await wait_for(lambda: clock() >= outage_from + 3 * MIN + 30_000)
            mock.refusing = False
            outage_to = clock()
            await wait_for(lambda: clock() >= outage_to + 2 * MIN)
            mock.paused = True  # the market stops trading: its last minute closes by the clock
            last_traded = max(mock.market.minutes)
            await wait_for(lambda: _minute(clock()) - 60_000 > last_traded + MIN)

            async def all_closed() -> Any:
                candles = await read_candles(redis_client, "binance", SYMBOL, "1m", 100)
                closed = [c for c in candles if c["closed"]]
                repairs_done = not ingestor.backfill.repairs_pending
                return closed if closed and closed[-1]["t"] == last_traded and repairs_done else None

            closed = await _until(all_closed, limit_s=20.0)
            (status,) = await read_feed_status(redis_client)
        finally:
            await handle.aclose()

    venue_minutes = mock.market.minutes
    assert [c["t"] for c in closed] == sorted(venue_minutes), "every minute the venue traded, none missing"
    for candle in closed:
        bar = venue_minutes[candle["t"]]
        assert (candle["v"], candle["buy_v"], candle["trades"]) == (bar.volume, bar.buy, bar.trades), candle["t"]
    missed = [t for t in venue_minutes if outage_from < t and t + MIN <= outage_to]
    assert len(missed) >= 2, "whole minutes passed without a connection"
    # 1 m alone: the first live bar, the bar the drop cut, the bar the reconnect joined, the missed range.
    assert ingestor.backfill.repaired >= 4

    # Higher timeframes: every closed 5 m bar spanning the outage equals the venue's 5 m kline.
    klines = {int(str(row[0])): row for row in mock.market.klines("5m")}
    candles_5m = [c for c in await read_candles(redis_client, "binance", SYMBOL, "5m", 100) if c["closed"]]
    assert candles_5m
    for candle in candles_5m:
        row = klines[candle["t"]]
        assert (candle["v"], candle["buy_v"], candle["trades"]) == (float(str(row[5])), float(str(row[9])), row[8])
    assert any(c["t"] < outage_to and c["t"] + 5 * MIN > outage_from for c in candles_5m)
    assert status["reconnects"] >= 1
