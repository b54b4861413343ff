"""Coalesced trades build the same bars as the trades one by one."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.market.aggregation import BarAggregator
from app.market.coalesce import Coalescer
from app.market.events import BUY, SELL, Trade, TradeGroup

T0 = 1_700_000_040_000


def _trades(seed: int, n: int, *, symbols: tuple[str, ...] = ("X",)) -> list[Trade]:
    rng = random.Random(seed)
    ts, price, out = T0 + rng.randrange(60_000), 100.0, []
    for i in range(n):
        ts += rng.choice((0, 0, 5, 900, 20_000))
        price = round(price + rng.choice((-0.5, -0.25, 0.0, 0.25, 0.5)), 2)
        # Multiples of 1/64: sums are exact in binary floating point, so grouping cannot change them.
        qty = rng.randint(1, 64) / 64
        out.append(Trade("sim", rng.choice(symbols), ts, ts, price, qty, BUY if rng.random() < 0.5 else SELL, i))
    return out


def _coalesced(trades: list[Trade], tick: float, cut: list[int]) -> list[Trade | TradeGroup]:
    """Trades with the runs between the cut points merged, as the pipeline does under a full queue."""
    coalescer = Coalescer(max_groups=10_000, max_bins=100_000)
    out: list[Trade | TradeGroup] = []
    for index, trade in enumerate(trades):
        if index in cut:
            while (group := coalescer.pop()) is not None:
                out.append(group)
        assert coalescer.add(trade, tick)
    while (group := coalescer.pop()) is not None:
        out.append(group)
    return out


def _bars(items: list[Trade | TradeGroup], tick: float) -> dict[str, list[object]]:
    agg = BarAggregator(tick_size=tick, max_footprint_levels=10_000)
    for item in items:
        if isinstance(item, Trade):
            agg.add_trade(item)
        else:
            agg.add_group(item)
    return {tf: list(agg.bars(tf)) for tf in agg.timeframes}


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 300), cuts=st.lists(st.integers(0, 300), max_size=8))
def test_groups_build_exactly_the_bars_of_their_trades(seed: int, n: int, cuts: list[int]) -> None:
    trades = _trades(seed, n)
    assert _bars(_coalesced(trades, 0.25, cuts), 0.25) == _bars(list(trades), 0.25)


def test_a_group_keeps_open_close_high_low_count_and_bins() -> None:
    prices = [(101.0, 1.0, BUY), (103.0, 2.0, SELL), (99.0, 3.0, BUY), (101.5, 4.0, SELL)]
    trades = [Trade("sim", "X", T0 + i, T0 + i, p, q, s, i) for i, (p, q, s) in enumerate(prices)]
    (group,) = _coalesced(trades, 1.0, [])
    assert isinstance(group, TradeGroup)
    assert (group.open, group.high, group.low, group.close, group.count) == (101.0, 103.0, 99.0, 101.5, 4)
    assert (group.buy_volume, group.sell_volume) == (4.0, 6.0)
    assert group.quote_volume == 101 + 206 + 297 + 406
    assert group.bins == ((99, 0.0, 3.0), (101, 4.0, 1.0), (103, 2.0, 0.0))
    assert (group.first_ts, group.last_ts) == (T0, T0 + 3)


def test_a_new_minute_or_symbol_starts_a_new_group() -> None:
    coalescer = Coalescer(max_groups=10, max_bins=100)
    for ts, symbol in ((T0, "X"), (T0 + 1, "Y"), (T0 + 2, "X"), (T0 + 60_000, "X")):
        assert coalescer.add(Trade("sim", symbol, ts, ts, 100.0, 1.0, BUY, 0), 1.0)
    assert len(coalescer) == 3
    assert [g.count for g in iter(coalescer.pop, None)] == [2, 1, 1]
    assert coalescer.bins == 0


def test_bounds_refuse_a_trade_without_changing_anything() -> None:
    coalescer = Coalescer(max_groups=1, max_bins=2)
    assert coalescer.add(Trade("sim", "X", T0, T0, 100.0, 1.0, BUY, 0), 1.0)
    assert not coalescer.add(Trade("sim", "Y", T0, T0, 100.0, 1.0, BUY, 1), 1.0), "a second group is over the bound"
    assert coalescer.add(Trade("sim", "X", T0, T0, 101.0, 1.0, BUY, 2), 1.0)
    assert not coalescer.add(Trade("sim", "X", T0, T0, 102.0, 1.0, BUY, 3), 1.0), "a third bin is over the bound"
    assert coalescer.trades == 2
    with pytest.raises(ValueError, match="at least 1"):
        Coalescer(max_groups=0, max_bins=1)


def test_a_group_binned_at_another_tick_is_refused_by_the_aggregator() -> None:
    (group,) = _coalesced([Trade("sim", "X", T0, T0, 100.0, 1.0, BUY, 0)], 0.5, [])
    assert isinstance(group, TradeGroup)
    with pytest.raises(ValueError, match="tick"):
        BarAggregator(tick_size=1.0).add_group(group)
