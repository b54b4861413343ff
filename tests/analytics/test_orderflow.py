from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.analytics import Candles, Liquidations, OrderflowParams, Trades
from app.analytics.footprint import build_footprint, footprint_from_trades, level_index, nice_tick, tick_for_rows
from app.analytics.orderflow import absorption, compute_orderflow
from app.analytics.profile import (
    MAX_PROFILE_LEVELS,
    point_of_control,
    profile_from_candles,
    profile_from_levels,
    value_area,
)
from tests.analytics.synthetic import HOUR_MS, ohlc_candles


def test_golden_footprint_imbalances_and_stacked_zone() -> None:
    tick = 0.5
    levels = level_index(np.array([100.0, 100.5, 101.0, 101.5, 102.0]), tick)
    footprint = build_footprint(
        np.zeros(5, dtype=np.int64), levels, np.array([12.0, 9, 8, 5, 0]), np.array([3.0, 4, 30, 25, 18]),
        bar_open_time=np.array([0]), tick=tick, ratio=3.0,
    )  # fmt: skip
    bar = footprint.to_dict()[0]
    assert [level["price"] for level in bar["levels"] if level["bid_imbalance"]] == [100.0]
    assert [level["price"] for level in bar["levels"] if level["ask_imbalance"]] == [101.0, 101.5, 102.0]
    assert bar["stacked_imbalances"] == [{"side": "ask", "low": 101.0, "high": 102.0}]
    assert bar["delta"] == 46.0
    assert bar["volume"] == 114.0
    assert bar["poc"] == 101.0


def test_min_volume_filter_and_gap_levels() -> None:
    # Levels 10 and 12 traded, 11 did not: 12's diagonal bid (at 11) is empty.
    footprint = build_footprint(
        np.zeros(2, dtype=np.int64), np.array([10, 12]), np.array([1.0, 0.0]), np.array([0.0, 2.0]),
        bar_open_time=np.array([0]), tick=1.0, min_volume=3.0,
    )  # fmt: skip
    assert not footprint.ask_imbalance.any()
    relaxed = build_footprint(
        np.zeros(2, dtype=np.int64), np.array([10, 12]), np.array([1.0, 0.0]), np.array([0.0, 2.0]),
        bar_open_time=np.array([0]), tick=1.0,
    )  # fmt: skip
    assert relaxed.ask_imbalance.tolist() == [False, True]
    # Level 10: bid 1 against an empty level 11 above; level 12 is the top edge.
    assert relaxed.bid_imbalance.tolist() == [True, False]


def test_binning_rule_keeps_prices_on_their_level() -> None:
    assert level_index(np.array([100.3, 100.35, 0.3, 99.99]), 0.1).tolist() == [1003, 1003, 3, 999]
    assert level_index(np.array([100.0, 100.49, 100.5]), 0.5).tolist() == [200, 200, 201]


def test_nice_tick_is_a_1_2_5_step() -> None:
    assert nice_tick(60_000.0) == 5.0
    assert nice_tick(3_000.0) == 0.2
    assert nice_tick(0.05) == 0.000005


@pytest.mark.parametrize(
    ("spread", "rows", "tick"),
    [(30.0, 100, 0.5), (100.0, 100, 1.0), (100.01, 100, 2.0), (0.7, 7, 0.1), (250.0, 100, 5.0), (3e-15, 1, 1e-12)],
)
def test_the_default_profile_tick_is_the_smallest_1_2_5_step_giving_at_most_the_rows(
    spread: float, rows: int, tick: float
) -> None:
    assert tick_for_rows(spread, rows) == tick


def test_the_default_profile_tick_is_within_a_step_of_range_over_rows() -> None:
    rng = np.random.default_rng(7)
    for spread, rows in zip(10 ** rng.uniform(-6, 6, 2000), rng.integers(1, 500, 2000), strict=True):
        tick = tick_for_rows(float(spread), int(rows))
        # At most `rows` rows, and no coarser than the next step needs (1, 2, 5, 10: at most 2.5 times the exact tick).
        assert spread / tick <= rows * (1 + 1e-9)
        assert tick < 2.5 * spread / rows * (1 + 1e-9)


def test_footprint_from_trades_spans_bars() -> None:
    footprint = footprint_from_trades(
        np.array([0, 0, 0, 1, 1]), np.array([100.2, 100.7, 100.4, 99.0, 99.0]), np.array([1.0, 2.0, 3.0, 4.0, 5.0]),
        np.array([1, -1, 1, -1, 1], dtype=np.int8), bar_open_time=np.array([0, HOUR_MS, 2 * HOUR_MS]), tick=0.5,
    )  # fmt: skip
    bars = footprint.to_dict()
    assert [level["price"] for level in bars[0]["levels"]] == [100.0, 100.5]
    assert bars[0]["levels"][0] == {
        "price": 100.0, "bid": 0.0, "ask": 4.0, "delta": 4.0, "ask_imbalance": False, "bid_imbalance": False,
    }  # fmt: skip
    assert bars[1]["delta"] == 1.0
    assert bars[2] == {"open_time": 2 * HOUR_MS, "volume": 0.0, "delta": 0.0, "poc": None, "levels": [],
                       "stacked_imbalances": []}  # fmt: skip


def test_bar_poc_tie_goes_to_the_centre_then_the_lower_price() -> None:
    footprint = build_footprint(
        np.zeros(4, dtype=np.int64), np.array([1, 2, 3, 4]), np.array([5.0, 0, 0, 5]), np.array([0.0, 5, 5, 0]),
        bar_open_time=np.array([0]), tick=1.0,
    )  # fmt: skip
    assert footprint.bar_poc.tolist() == [2.0]


PROFILE_VOLUMES = [5.0, 10, 20, 40, 60, 80, 70, 30, 25, 10, 5]


@pytest.mark.parametrize(
    ("method", "expected_low", "expected_high"), [("two_row", 103.0, 107.0), ("single_row", 103.0, 106.0)]
)
def test_golden_value_area(method: str, expected_low: float, expected_high: float) -> None:
    profile = profile_from_levels(
        np.arange(100, 111), np.array(PROFILE_VOLUMES), tick=1.0, source="trades", distribution=None,
        method=method,  # type: ignore[arg-type]
    )  # fmt: skip
    assert profile.poc == 105.0
    assert (profile.value_area_low, profile.value_area_high) == (expected_low, expected_high)


@pytest.mark.parametrize(
    ("volumes", "expected_row"),
    [([1.0, 5, 5, 1], 1), ([5.0, 1, 1, 1, 5], 0), ([1.0, 5, 1, 5, 1], 1), ([3.0, 1, 3, 1, 3], 2), ([0.0, 0], 0)],
)
def test_profile_poc_tie_rule(volumes: list[float], expected_row: int) -> None:
    assert point_of_control(np.array(volumes)) == expected_row


def test_two_row_tie_adds_the_higher_side() -> None:
    assert value_area(np.array([10.0, 10, 50, 10, 10]), 0.6) == (2, 2, 4)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=60),
    st.sampled_from(["two_row", "single_row"]),
    st.floats(0.05, 1.0),
)
def test_value_area_contains_the_poc_and_enough_volume(volumes: list[float], method: str, pct: float) -> None:
    volume = np.array(volumes)
    poc, low, high = value_area(volume, pct, method)  # type: ignore[arg-type]
    assert low <= poc <= high
    assert volume[poc] == volume.max()
    assert volume[low : high + 1].sum() >= pct * volume.sum() * (1 - 1e-12)


def test_profile_from_candles_records_the_distribution() -> None:
    candles = ohlc_candles([(10, 12, 10, 12), (12, 12, 11, 11)], volume=6.0)
    uniform = profile_from_candles(candles, 1.0, "uniform")
    assert uniform.distribution == "uniform"
    assert uniform.price.tolist() == [10.0, 11.0, 12.0]
    np.testing.assert_allclose(uniform.volume, [2.0, 5.0, 5.0])
    close = profile_from_candles(candles, 1.0, "close")
    assert close.volume.tolist() == [0.0, 6.0, 6.0]
    typical = profile_from_candles(candles, 1.0, "typical")
    assert typical.volume.tolist() == [0.0, 12.0, 0.0]  # typical prices 11.33 and 11.33
    assert typical.to_dict()["distribution"] == "typical"


def test_profile_refuses_absurd_level_counts() -> None:
    candles = ohlc_candles([(10, 12, 10, 12)])
    with pytest.raises(ValueError, match=str(MAX_PROFILE_LEVELS)):
        profile_from_candles(candles, 1e-9, "uniform")


def absorption_candles() -> tuple[Candles, np.ndarray]:
    rows = [(100.0, 102.0, 98.0, 100.0)] * 25 + [(100.0, 100.5, 99.5, 99.8)]
    candles = ohlc_candles(rows)
    delta = np.array([1.0, -1.0] * 12 + [1.0] + [9.0])
    return candles, delta


def test_absorption_flags_large_delta_in_a_narrow_bar_that_fails_to_extend() -> None:
    candles, delta = absorption_candles()
    events = absorption(candles, delta, np.full(len(candles), 4.0), OrderflowParams())
    rows = events.to_dict()
    assert len(rows) == 1
    assert rows[0]["direction"] == "bearish"  # buyers absorbed
    assert rows[0]["confirmed_time"] == 26 * HOUR_MS
    assert rows[0]["delta"] == 9.0


@pytest.mark.parametrize(
    ("delta_last", "atr", "close_last"),
    [(1.5, 4.0, 99.8), (9.0, 1.0, 99.8), (9.0, 4.0, 100.4)],
    ids=["delta-not-large", "range-not-small", "price-extended"],
)
def test_absorption_needs_every_condition(delta_last: float, atr: float, close_last: float) -> None:
    candles, delta = absorption_candles()
    delta[-1] = delta_last
    rows = [(100.0, 102.0, 98.0, 100.0)] * 25 + [(100.0, 100.5, 99.5, close_last)]
    events = absorption(ohlc_candles(rows), delta, np.full(len(candles), atr), OrderflowParams())
    assert len(events) == 0


def test_orderflow_with_trades_and_liquidations() -> None:
    candles = ohlc_candles([(100, 101, 99, 100.5), (100.5, 102, 100, 101.5)])
    trades = Trades.from_arrays(
        time=[1, 2, HOUR_MS + 5], price=[100.0, 100.5, 101.0], qty=[1.0, 2.0, 3.0], side=[1, -1, 1]
    )
    liquidations = Liquidations.from_arrays(time=[10, HOUR_MS + 1, HOUR_MS + 2], qty=[5.0, 1.0, 2.0], side=[-1, 1, -1])
    result = compute_orderflow(candles, trades, OrderflowParams(tick=0.5, profile_tick=0.5), liquidations=liquidations)
    data = result.to_dict()
    assert data["side_source"] == "exchange_flag"
    assert data["footprint"]["tick"] == 0.5
    assert [bar["delta"] for bar in data["footprint"]["bars"]] == [-1.0, 3.0]
    assert data["profile"]["source"] == "trades"
    assert data["profile"]["poc"] == 101.0
    assert data["liquidations"]["long_liquidated"] == [5.0, 2.0]
    assert data["liquidations"]["short_liquidated"] == [0.0, 1.0]


def test_orderflow_from_ohlcv_uses_the_named_distribution() -> None:
    candles = ohlc_candles([(100, 101, 99, 100.5), (100.5, 102, 100, 101.5)])
    data = compute_orderflow(candles, params=OrderflowParams(volume_distribution="close")).to_dict()
    assert data["footprint"] is None
    assert data["liquidations"] is None
    assert data["profile"]["source"] == "ohlcv"
    assert data["profile"]["distribution"] == "close"
    assert data["side_source"] == "ohlcv_estimate"


def test_flat_zero_volume_candles_still_give_a_profile() -> None:
    candles = Candles.from_arrays(
        open_time=[0, HOUR_MS], open=[5.0, 5.0], high=[5.0, 5.0], low=[5.0, 5.0], close=[5.0, 5.0], volume=[0, 0]
    )
    data = compute_orderflow(candles).to_dict()
    assert data["profile"]["poc"] == data["profile"]["value_area_low"] == data["profile"]["value_area_high"]
    assert data["profile"]["total_volume"] == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tick": 0.0}, "tick"),
        ({"profile_tick": -1.0}, "profile_tick"),
        ({"imbalance_ratio": 1.0}, "imbalance_ratio"),
        ({"imbalance_min_volume": -1.0}, "imbalance_min_volume"),
        ({"stacked_min_levels": 1}, "stacked_min_levels"),
        ({"profile_rows": 0}, "profile_rows"),
        ({"value_area_pct": 1.5}, "value_area_pct"),
        ({"value_area_method": "three_row"}, "value_area_method"),
        ({"volume_distribution": "gaussian"}, "volume_distribution"),
        ({"absorption_lookback": 1}, "absorption_lookback"),
        ({"absorption_delta_multiple": 0.0}, "absorption_delta_multiple"),
        ({"absorption_range_atr": 0.0}, "absorption_range_atr"),
        ({"atr_period": 1}, "atr_period"),
    ],
)
def test_orderflow_params_are_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OrderflowParams(**kwargs)  # type: ignore[arg-type]
