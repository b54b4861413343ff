"""``signal_series`` replays ``analyze`` on every prefix: row ``t`` must be the signal of ``candles.head(t + 1)``."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.analytics import (
    AnalysisParams,
    Candles,
    CvdParams,
    FibonacciParams,
    IndicatorParams,
    OrderflowParams,
    SignalParams,
    SmcParams,
    analyze,
)
from app.analytics.series import SignalSeries, signal_series
from app.analytics.series.components import window_sums
from app.analytics.series.intervals import alive_max, alive_successor
from app.analytics.signals import COMPONENTS
from tests.analytics.real_data import cut_points, hourly_candles
from tests.analytics.synthetic import HOUR_MS, candles_from_closes, ohlc_candles, random_walk

BIAS = {"long": 1, "short": -1, "neutral": 0}
MODULE_SETS: list[list[str] | None] = [None, ["smc"], ["indicators"], ["cvd", "orderflow"], ["fibonacci", "smc"]]


def close_enough(expected: float, actual: float) -> bool:
    return (math.isnan(expected) and math.isnan(actual)) or math.isclose(expected, actual, rel_tol=1e-9)


def mismatches(
    candles: Candles,
    series: SignalSeries,
    bars: Iterable[int],
    modules: Sequence[str] | None = None,
    params: AnalysisParams | None = None,
) -> list[str]:
    """Every field of every listed row that differs from ``analyze`` on that prefix (empty when all agree)."""
    found = []
    for bar in bars:
        signal = analyze(candles.head(bar + 1), modules=modules, params=params).signal
        levels = signal.levels
        expected = {
            "score": signal.score,
            "confidence": signal.confidence,
            "stop": math.nan if levels is None else levels.stop,
            "target": math.nan if levels is None or not levels.targets else levels.targets[0].price,
            **dict.fromkeys(COMPONENTS, math.nan),
            **{component.name: component.score for component in signal.components},
        }
        if BIAS[signal.bias] != int(series.bias[bar]):
            found.append(f"bar {bar}: bias {signal.bias} != {series.bias[bar]}")
        for name, value in expected.items():
            actual = float(getattr(series, name)[bar])
            if name in ("stop", "target"):  # prices must be the very same level, not a close one
                same = value == actual or (math.isnan(value) and math.isnan(actual))
            else:
                same = close_enough(value, actual)
            if not same:
                found.append(f"bar {bar}: {name} {value!r} != {actual!r}")
        assert series.close_time[bar] == signal.close_time
    return found


@pytest.mark.parametrize("modules", MODULE_SETS)
def test_every_prefix_of_a_synthetic_walk_matches_analyze(modules: list[str] | None) -> None:
    candles = random_walk(600, seed=21)
    series = signal_series(candles, modules=modules)
    assert len(series) == 600
    assert mismatches(candles, series, range(600), modules) == []


@pytest.mark.slow
@pytest.mark.parametrize("modules", [None, ["smc"], ["indicators"]])
def test_real_candles_at_250_cut_points_match_analyze(modules: list[str] | None) -> None:
    candles = hourly_candles()
    # The default (calibrated) signal with every module; the single-module runs check those modules' replay with
    # the heuristic signal, which skips a model fit at each of the 20 000 bars (the learning is covered once).
    params = None if modules is None else AnalysisParams(signal=SignalParams(calibrated=False))
    series = signal_series(candles, params, modules=modules)
    cuts = [count - 1 for count in cut_points(len(candles), 250, minimum=1)]
    assert len(cuts) >= 200
    assert mismatches(candles, series, cuts, modules, params) == []


def test_real_candles_give_every_bias_and_levels() -> None:
    """The replay above would pass vacuously on an always-neutral series: the real one has both sides, with
    structure stops and targets."""
    series = signal_series(hourly_candles().head(4000))
    assert {-1, 0, 1} <= set(series.bias.tolist())
    directional = series.bias != 0
    assert np.isfinite(series.stop[directional][200:]).all()
    assert np.isfinite(series.target[directional]).mean() > 0.5
    assert np.isnan(series.stop[~directional]).all()
    priced = np.isfinite(series.stop)
    assert ((series.entry - series.stop)[priced] * series.bias[priced] > 0).all()


def test_non_default_parameters_are_replayed() -> None:
    params = AnalysisParams(
        signal=SignalParams(min_target_atr=0.0, lookback_bars=7, bias_threshold=0.05, stop_atr_buffer=0.0),
        smc=SmcParams(swing_length=2, fvg_min_size_atr=0.3),
        orderflow=OrderflowParams(value_area_method="single_row", volume_distribution="typical", absorption_lookback=5),
        cvd=CvdParams(estimate_method="clv", swing_length=3),
        fibonacci=FibonacciParams(swing_length=3),
        indicators=IndicatorParams(atr_period=5, ema_period=5, rsi_period=3, macd_fast=3, macd_slow=6, macd_signal=2),
    )
    candles = random_walk(500, seed=11)
    assert mismatches(candles, signal_series(candles, params), range(500), params=params) == []


def test_a_fixed_profile_tick_and_close_distribution_are_replayed() -> None:
    params = AnalysisParams(
        orderflow=OrderflowParams(profile_tick=5.0, volume_distribution="close"),
        signal=SignalParams(lookback_bars=200, max_targets=1),
    )
    candles = random_walk(400, seed=12)
    assert mismatches(candles, signal_series(candles, params), range(400), params=params) == []


def test_kline_taker_volume_is_replayed() -> None:
    base = random_walk(300, seed=13)
    candles = Candles.from_arrays(
        open_time=base.open_time, open=base.open, high=base.high, low=base.low, close=base.close,
        volume=base.volume, taker_buy_volume=base.volume * np.random.default_rng(2).random(300),
        interval_ms=base.interval_ms,
    )  # fmt: skip
    assert mismatches(candles, signal_series(candles), range(300)) == []


@pytest.mark.parametrize("count", [1, 2])
def test_one_and_two_bars(count: int) -> None:
    candles = random_walk(count)
    series = signal_series(candles)
    assert mismatches(candles, series, range(count)) == []
    assert np.isnan(series.stop).all()  # no ATR yet, so never levels


def test_flat_prices_and_zero_volume() -> None:
    flat = candles_from_closes([100.0] * 80)
    assert mismatches(flat, signal_series(flat), range(80)) == []
    still = ohlc_candles([(50.0, 50.0, 50.0, 50.0)] * 40, volume=0.0)
    series = signal_series(still)
    assert mismatches(still, series, range(40)) == []
    assert series.bias[-1] == 0


def test_repeating_prices_with_equal_volumes_hit_every_tie_rule() -> None:
    """Constant volumes on a few repeating prices make POC and value-area ties, equal levels and equal closes."""
    candles = candles_from_closes([100 + (i % 7) - (i % 3) for i in range(300)])
    assert mismatches(candles, signal_series(candles), range(300)) == []


def test_gaps_in_the_bars_are_replayed() -> None:
    walk = random_walk(300, seed=9)
    steps = np.random.default_rng(1).integers(1, 5, 300)  # up to three missing bars between two candles
    candles = Candles.from_arrays(
        open_time=np.cumsum(steps) * HOUR_MS, open=walk.open, high=walk.high, low=walk.low, close=walk.close,
        volume=walk.volume, interval_ms=HOUR_MS,
    )  # fmt: skip
    assert mismatches(candles, signal_series(candles), range(300)) == []


@settings(max_examples=25, deadline=None)
@given(
    steps=st.lists(st.integers(-3, 3), min_size=1, max_size=45),
    wicks=st.lists(st.integers(0, 2), min_size=45, max_size=45),
    volumes=st.lists(st.integers(0, 4), min_size=45, max_size=45),
)
def test_random_short_series_match_analyze_on_every_prefix(
    steps: list[int], wicks: list[int], volumes: list[int]
) -> None:
    """Small integer prices and volumes: ties everywhere, the hardest case for exact replay."""
    count = len(steps)
    close = 100.0 + np.cumsum(steps)
    open_ = np.concatenate(([100.0], close[:-1]))
    wick = np.asarray(wicks[:count], dtype=np.float64)
    candles = Candles.from_arrays(
        open_time=np.arange(count) * HOUR_MS, open=open_, high=np.maximum(open_, close) + wick,
        low=np.minimum(open_, close) - wick[::-1], close=close, volume=volumes[:count], interval_ms=HOUR_MS,
    )  # fmt: skip
    params = AnalysisParams(
        smc=SmcParams(swing_length=2), fibonacci=FibonacciParams(swing_length=2), cvd=CvdParams(swing_length=2)
    )
    assert mismatches(candles, signal_series(candles, params), range(count), params=params) == []


def test_components_that_did_not_run_are_nan() -> None:
    series = signal_series(random_walk(100), modules=["indicators"])
    assert series.modules == ("indicators",)
    assert np.isfinite(series.indicators).all()
    for name in ("smc", "cvd", "orderflow", "fibonacci"):
        assert np.isnan(series.component(name)).all()
    with pytest.raises(ValueError, match="unknown component"):
        series.component("astrology")
    with pytest.raises(ValueError, match="unknown module"):
        signal_series(random_walk(10), modules=["astrology"])


def test_window_sums_round_like_np_sum() -> None:
    values = np.random.default_rng(5).standard_normal(3000) * 1e6
    for lookback in (1, 8, 9, 20, 130, 500):
        expected = [np.sum(values[max(0, end - lookback + 1) : end + 1]) for end in range(values.shape[0])]
        assert window_sums(values, lookback).tolist() == [float(x) for x in expected]


def test_interval_queries_match_a_brute_force_scan() -> None:
    rng = np.random.default_rng(8)
    bars, rows = 300, 400
    start = rng.integers(0, bars, rows)
    stop = np.minimum(start + rng.integers(0, 80, rows), bars)
    value = rng.integers(0, 50, rows).astype(np.float64)
    at = rng.integers(0, bars, 1000)
    threshold = rng.integers(-5, 55, 1000).astype(np.float64)
    alive = (start[None, :] <= np.arange(bars)[:, None]) & (np.arange(bars)[:, None] < stop[None, :])
    assert alive_max(start, stop, value, bars).tolist() == np.where(alive, value, -np.inf).max(axis=1).tolist()
    candidates = np.where(alive[at] & (value[None, :] >= threshold[:, None]), value, np.inf).min(axis=1)
    expected = np.where(np.isfinite(candidates), candidates, np.nan)
    np.testing.assert_array_equal(alive_successor(start, stop, value, bars, at, threshold), expected)
