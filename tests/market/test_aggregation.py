"""Trades → bars: OHLCV with taker sides, VWAP, footprint, liquidations, rollups and bounds."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.market.aggregation import TIMEFRAMES, BarAggregator, bin_index, rollup
from app.market.events import BUY, SELL, Liquidation, Side, Trade

T0 = 1_700_000_040_000  # 2023-11-14T22:14:00Z, a minute boundary that is not an hour boundary
MIN = 60_000


def _trade(ts: int, price: float, qty: float, side: Side, trade_id: int = 0) -> Trade:
    return Trade("sim", "X", ts, ts, price, qty, side, trade_id)


def _liq(ts: int, qty: float, side: Side, price: float = 100.0) -> Liquidation:
    return Liquidation("sim", "X", ts, ts, price, qty, side)


def test_one_minute_bar_fields() -> None:
    agg = BarAggregator(tick_size=1.0, timeframes=["1m"])
    agg.add_trades(
        [
            _trade(T0 + 1, 100.0, 1.0, BUY),
            _trade(T0 + 2, 103.0, 2.0, SELL),
            _trade(T0 + 3, 99.0, 3.0, BUY),
            _trade(T0 + 4, 101.0, 4.0, SELL),
        ]
    )
    (bar,) = agg.bars("1m")
    assert (bar.open_time, bar.open, bar.high, bar.low, bar.close) == (T0, 100.0, 103.0, 99.0, 101.0)
    assert (bar.volume, bar.buy_volume, bar.sell_volume, bar.delta, bar.trade_count) == (10.0, 4.0, 6.0, -2.0, 4)
    assert bar.vwap == pytest.approx((100 + 206 + 297 + 404) / 10)
    assert not bar.closed
    assert bar.close_time == T0 + MIN


def test_the_next_window_closes_the_bar_and_closed_bars_are_immutable() -> None:
    agg = BarAggregator(tick_size=1.0, timeframes=["1m"])
    agg.add_trade(_trade(T0, 100.0, 1.0, BUY))
    agg.add_trade(_trade(T0 + 3 * MIN + 5, 105.0, 1.0, SELL))  # two empty minutes produce no bar
    first, second = agg.bars("1m")
    assert first.closed
    assert not second.closed
    assert second.open_time == T0 + 3 * MIN
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.close = 1.0  # type: ignore[misc]
    assert agg.forming("1m") == second


def test_advance_closes_a_quiet_bar_and_late_trades_keep_their_volume() -> None:
    agg = BarAggregator(tick_size=1.0, timeframes=["1m"])
    agg.add_trade(_trade(T0, 100.0, 1.0, BUY))
    agg.advance(T0 + MIN - 1)
    assert agg.forming("1m") is not None
    agg.advance(T0 + MIN)
    assert agg.forming("1m") is None
    assert agg.bars("1m")[0].closed
    agg.add_trade(_trade(T0 + 10, 101.0, 2.0, SELL))  # belongs to the closed minute: goes to a new forming bar
    closed, forming = agg.bars("1m")
    assert closed.volume == 1.0
    assert forming.volume == 2.0
    assert forming.open_time == T0 + MIN
    agg.add_trade(_trade(T0 + MIN + 1, 101.0, 1.0, SELL))
    agg.add_trade(_trade(T0 + 20, 101.0, 1.0, SELL))  # late within the forming bar's lifetime
    assert agg.late_trades == 2
    assert sum(b.volume for b in agg.bars("1m")) == 5.0
    assert agg.bars("1m", limit=1) == [agg.forming("1m")]
    assert agg.bars("1m", limit=0) == []


@pytest.mark.parametrize("timeframe", list(TIMEFRAMES))
def test_bars_are_aligned_to_utc(timeframe: str) -> None:
    agg = BarAggregator(tick_size=1.0, timeframes=[timeframe])
    agg.add_trade(_trade(T0 + 7 * MIN + 123, 1.0, 1.0, BUY))
    (bar,) = agg.bars(timeframe)
    assert bar.open_time % TIMEFRAMES[timeframe] == 0
    assert bar.open_time <= T0 + 7 * MIN + 123 < bar.close_time


def test_footprint_bins_by_floor_of_price_over_tick() -> None:
    agg = BarAggregator(tick_size=0.001, timeframes=["1m"])
    agg.add_trades(
        [
            _trade(T0, 7.611, 1.0, BUY),  # 7.611 / 0.001 is 7610.999… in floats: must still bin at 7.611
            _trade(T0, 7.6115, 2.0, SELL),
            _trade(T0, 7.6129, 4.0, BUY),
        ]
    )
    (bar,) = agg.bars("1m")
    assert [(lv.price, lv.bid_volume, lv.ask_volume) for lv in bar.footprint] == [
        (7.611, 2.0, 1.0),
        (7.612, 0.0, 4.0),
    ]
    assert bin_index(7.611, 0.001) == 7611


def test_footprint_is_bounded_by_coarsening_without_losing_volume() -> None:
    agg = BarAggregator(tick_size=1.0, timeframes=["1m"], max_footprint_levels=10)
    agg.add_trades(_trade(T0, float(p), 1.0, BUY if p % 2 else SELL) for p in range(100))
    (bar,) = agg.bars("1m")
    assert len(bar.footprint) <= 10
    assert bar.footprint_tick == 16.0
    assert sum(lv.bid_volume + lv.ask_volume for lv in bar.footprint) == 100.0
    assert all(lv.price % 16 == 0 for lv in bar.footprint)


def test_liquidations_split_into_long_and_short() -> None:
    agg = BarAggregator(tick_size=1.0, timeframes=["1m", "5m"])
    B = T0 - T0 % (5 * MIN)  # noqa: N806
    agg.add_trade(_trade(B, 100.0, 1.0, BUY))
    agg.add_liquidation(_liq(B + 1, 2.0, SELL))  # forced sell: a long closed
    agg.add_liquidation(_liq(B + 2, 3.0, BUY))
    agg.add_liquidation(_liq(B + MIN, 4.0, SELL, price=90.0))  # opens a bar that has no trade yet
    first, second = agg.bars("1m")
    assert (first.long_liquidations, first.short_liquidations) == (2.0, 3.0)
    assert second.trade_count == 0
    assert second.open == 100.0
    agg.add_trade(_trade(B + MIN + 1, 95.0, 1.0, SELL))
    second = agg.bars("1m")[1]
    assert (second.open, second.low, second.high, second.long_liquidations) == (95.0, 95.0, 95.0, 4.0)
    (five,) = agg.bars("5m")
    assert (five.long_liquidations, five.short_liquidations) == (6.0, 3.0)
    agg.advance(B + 10 * MIN)
    agg.add_liquidation(_liq(B, 1.0, BUY))
    assert agg.late_liquidations == 1


def test_closed_bars_held_are_bounded() -> None:
    agg = BarAggregator(tick_size=1.0, timeframes=["1m"], max_bars=5)
    agg.add_trades(_trade(T0 + i * MIN, 1.0, 1.0, BUY) for i in range(20))
    bars = agg.bars("1m")
    assert len(bars) == 6  # five closed plus the forming one
    assert bars[0].open_time == T0 + 14 * MIN


def test_a_thousand_trade_burst_loses_no_volume() -> None:
    rng = random.Random(7)
    trades = [
        _trade(
            T0 + rng.randrange(0, 3 * MIN),
            round(rng.uniform(99, 101), 2),
            rng.randrange(1, 1000) / 100,
            BUY if rng.random() < 0.5 else SELL,
            i,
        )
        for i in range(1000)
    ]
    trades.sort(key=lambda t: t.exchange_ts)
    agg = BarAggregator(tick_size=0.01)
    agg.add_trades(trades)
    buy = sum(t.quantity for t in trades if t.side == BUY)
    sell = sum(t.quantity for t in trades if t.side == SELL)
    for timeframe in TIMEFRAMES:
        bars = agg.bars(timeframe)
        assert sum(b.buy_volume for b in bars) == pytest.approx(buy, rel=1e-12)
        assert sum(b.sell_volume for b in bars) == pytest.approx(sell, rel=1e-12)
        assert sum(b.trade_count for b in bars) == 1000
        footprint = sum(lv.bid_volume + lv.ask_volume for b in bars for lv in b.footprint)
        assert footprint == pytest.approx(buy + sell, rel=1e-12)


def test_rollup_of_one_minute_bars_equals_direct_aggregation() -> None:
    rng = random.Random(3)
    trades = sorted(
        (
            _trade(
                T0 + rng.randrange(0, 130 * MIN),
                rng.choice([99.5, 100.0, 100.25]),
                1.0 + rng.random(),
                BUY if rng.random() < 0.5 else SELL,
            )
            for _ in range(400)
        ),
        key=lambda t: t.exchange_ts,
    )
    agg = BarAggregator(tick_size=0.25, max_footprint_levels=4)
    agg.add_trades(trades)
    agg.add_liquidation(_liq(trades[-1].exchange_ts, 1.0, SELL))
    ones = agg.bars("1m")
    for timeframe in ("5m", "15m", "1h"):
        direct = agg.bars(timeframe)
        rolled = rollup(ones, timeframe, tick_size=0.25, max_footprint_levels=4)
        assert [b.open_time for b in rolled] == [b.open_time for b in direct]
        for got, want in zip(rolled, direct, strict=True):
            assert (got.open, got.high, got.low, got.close, got.trade_count, got.closed) == (
                want.open,
                want.high,
                want.low,
                want.close,
                want.trade_count,
                want.closed,
            )
            assert got.volume == pytest.approx(want.volume)
            assert got.delta == pytest.approx(want.delta)
            assert got.vwap == pytest.approx(want.vwap)
            assert got.long_liquidations == want.long_liquidations
            assert sum(lv.ask_volume for lv in got.footprint) == pytest.approx(want.buy_volume)
    assert rollup([], "5m", tick_size=1.0) == []


def test_rollup_of_a_window_ending_on_its_last_minute_is_closed() -> None:
    agg = BarAggregator(tick_size=1.0, timeframes=["1m"])
    agg.add_trade(_trade(T0 - T0 % (5 * MIN) + 4 * MIN, 1.0, 1.0, BUY))
    agg.advance(T0 + 10 * MIN)
    (five,) = rollup(agg.bars("1m"), "5m", tick_size=1.0)
    assert five.closed


def test_aggregator_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="tick_size"):
        BarAggregator(tick_size=0)
    with pytest.raises(ValueError, match="unknown timeframes"):
        BarAggregator(tick_size=1.0, timeframes=["2m"])
    with pytest.raises(ValueError, match="max_bars"):
        BarAggregator(tick_size=1.0, max_bars=0)
    assert BarAggregator(tick_size=1.0, timeframes=["1h", "1m"]).timeframes == ["1h", "1m"]


@given(
    st.lists(
        st.tuples(st.integers(0, 10 * MIN), st.integers(1, 50), st.integers(1, 100), st.booleans()),
        min_size=1,
        max_size=100,
    )
)
def test_volume_is_conserved_for_any_trade_order(rows: list[tuple[int, int, int, bool]]) -> None:
    agg = BarAggregator(tick_size=1.0, timeframes=["1m", "5m"], max_footprint_levels=3)
    for ts, price, qty, buy in rows:
        agg.add_trade(_trade(T0 + ts, float(price), float(qty), BUY if buy else SELL))
    total = sum(qty for _, _, qty, _ in rows)
    for timeframe in ("1m", "5m"):
        bars = agg.bars(timeframe)
        assert sum(b.volume for b in bars) == total
        assert [b.open_time for b in bars] == sorted({b.open_time for b in bars})
        assert all(b.low <= min(b.open, b.close) and b.high >= max(b.open, b.close) for b in bars)
