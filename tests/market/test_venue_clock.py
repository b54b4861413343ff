"""The venue's clock: a lower bound learned from venue timestamps, which ages out and closes bars."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from app.market.events import BUY, Trade
from app.market.pipeline import Pipeline, PipelineLimits
from app.market.store import read_candles
from app.market.venue_clock import VenueClock

T0 = 1_700_000_040_000  # a minute's start
PERIOD = 60_000


class HostClock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def test_the_venues_time_is_ours_until_the_venue_stamps_something() -> None:
    host = HostClock(T0)
    clock = VenueClock(host, period_ms=PERIOD)
    assert (clock.now(), clock.offset_ms) == (T0, None)


@pytest.mark.parametrize("skew_ms", [5000, -1500], ids=["venue ahead", "venue behind"])
def test_the_offset_is_the_newest_venue_stamp_ahead_of_our_clock_when_read(skew_ms: int) -> None:
    host = HostClock(T0)
    clock = VenueClock(host, period_ms=PERIOD)
    clock.saw(T0 + skew_ms - 40)  # stamped 40 ms before we read it
    clock.saw(T0 + skew_ms - 300)  # one held up in a queue says less, and changes nothing
    assert clock.offset_ms == skew_ms - 40
    host.now_ms += 10_000
    assert clock.now() == T0 + 10_000 + skew_ms - 40, "a lower bound: never ahead of the venue"


def test_an_offset_from_before_our_clock_stepped_forward_ages_out_within_two_periods() -> None:
    host = HostClock(T0)
    clock = VenueClock(host, period_ms=PERIOD)
    clock.saw(T0 + 3000)
    host.now_ms += 3000  # our clock is corrected by 3 s: the venue is level with us now
    clock.saw(host.now_ms)
    assert clock.offset_ms == 3000, "this period still holds the stale observation"
    host.now_ms += PERIOD
    clock.saw(host.now_ms)
    assert clock.offset_ms == 3000, "the previous period still counts"
    host.now_ms += PERIOD
    clock.saw(host.now_ms)
    assert clock.offset_ms == 0


def test_a_quiet_period_keeps_the_last_offset() -> None:
    host = HostClock(T0)
    clock = VenueClock(host, period_ms=PERIOD)
    clock.saw(T0 + 2000)
    host.now_ms += 10 * PERIOD  # nothing stamped for ten periods
    assert clock.now() == host.now_ms + 2000


@pytest.mark.parametrize("skew_ms", [5000, -5000], ids=["venue ahead", "venue behind"])
async def test_a_quiet_bar_closes_by_the_venues_clock_after_the_grace_not_by_ours(
    redis_client: Redis, skew_ms: int
) -> None:
    host = HostClock(T0 + 30_000 - skew_ms)  # the venue is at T0 + 30 s
    clock = VenueClock(host, period_ms=PERIOD)
    limits = PipelineLimits(tick_interval_s=0.01, close_grace_ms=2000)
    pipeline = Pipeline(redis_client, [("binance", "BTCUSDT")], limits=limits, clock=clock.now, on_venue_time=clock.saw)
    pipeline.start()
    await pipeline.submit(Trade("binance", "BTCUSDT", T0 + 30_000, host(), 100.0, 1.0, BUY, 1))

    async def closed() -> list[bool]:
        return [c["closed"] for c in await read_candles(redis_client, "binance", "BTCUSDT", "1m", 5)]

    for _ in range(100):
        await asyncio.sleep(0.01)
        if clock.offset_ms is not None:
            break
    host.now_ms = T0 + 61_000 - skew_ms  # the venue's minute ended, but within the grace
    await asyncio.sleep(0.05)
    assert await closed() == [False]
    host.now_ms = T0 + 62_500 - skew_ms
    for _ in range(100):
        await asyncio.sleep(0.01)
        if await closed() == [True]:
            break
    else:
        pytest.fail("the quiet bar never closed")
    await pipeline.aclose()
