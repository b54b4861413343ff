from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from app.analytics import (
    MODULES,
    AnalysisParams,
    Candles,
    Liquidations,
    SignalParams,
    SignalWeights,
    SmcParams,
    Trades,
    analyze,
)
from tests.analytics.real_data import hourly_candles
from tests.analytics.synthetic import HOUR_MS, ohlc_candles, random_walk


def strict_json(data: dict[str, Any]) -> dict[str, Any]:
    """Round-trip through JSON refusing NaN/inf, as an HTTP response would."""
    loaded: dict[str, Any] = json.loads(json.dumps(data, allow_nan=False))
    return loaded


def test_all_modules_on_real_candles_serialise_to_json() -> None:
    candles = hourly_candles().head(3000)
    data = strict_json(analyze(candles).to_dict())
    assert data["modules"] == list(MODULES)
    assert data["bar_count"] == 3000
    assert data["last_close_time"] == int(candles.close_time[-1])
    signal = data["signal"]
    assert signal["bias"] in {"long", "short", "neutral"}
    assert -1 <= signal["score"] <= 1
    assert 0 <= signal["confidence"] <= 1
    assert {component["name"] for component in signal["components"]} == set(MODULES)
    assert all(component["reasons"] for component in signal["components"])


@pytest.mark.parametrize("bars", [1, 2, 3, 10])
def test_every_component_explains_its_score_even_on_a_few_bars(bars: int) -> None:
    """A fresh feed has a handful of bars: a component with nothing to say yet says why, never an empty list."""
    signal = analyze(random_walk(bars)).to_dict()["signal"]
    assert {component["name"] for component in signal["components"]} == set(MODULES)
    for component in signal["components"]:
        assert component["reasons"], component
    indicators = next(c for c in signal["components"] if c["name"] == "indicators")
    if bars < 10:
        assert indicators["reasons"][0].startswith("warming up")


def test_analysis_is_deterministic() -> None:
    candles = random_walk(2000)
    first = analyze(candles).to_dict()
    assert analyze(candles).to_dict() == first


def test_unknown_modules_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown module"):
        analyze(random_walk(50), modules=["smc", "astrology"])


def test_only_requested_modules_run() -> None:
    data = analyze(random_walk(300), modules=["indicators"]).to_dict()
    assert data["modules"] == ["indicators"]
    assert "smc" not in data
    assert [component["name"] for component in data["signal"]["components"]] == ["indicators"]


def test_long_and_short_signals_have_levels_and_position_size() -> None:
    # The heuristic signal's threshold: random walks give it both sides (the calibrated one abstains on them).
    heuristic = SignalParams(account_equity=10_000.0, risk_pct=1.0, bias_threshold=0.05, calibrated=False)
    params = AnalysisParams(signal=heuristic)
    seen = set()
    for seed in range(12):
        result = analyze(random_walk(1500, seed=seed), params=params)
        signal = result.signal
        seen.add(signal.bias)
        if signal.levels is None:
            continue
        levels = signal.levels
        side = 1 if signal.bias == "long" else -1
        assert (levels.entry - levels.stop) * side > 0, "the stop must sit beyond the entry"
        assert all((target.price - levels.entry) * side > 0 for target in levels.targets)
        assert levels.position_size == pytest.approx(100.0 / abs(levels.entry - levels.stop))
        if levels.targets:
            expected = abs(levels.targets[0].price - levels.entry) / abs(levels.entry - levels.stop)
            assert levels.risk_reward == pytest.approx(expected)
    assert {"long", "short"} <= seen


def test_one_candle_analysis() -> None:
    candles = Candles.from_arrays(
        open_time=[0], open=[100.0], high=[101.0], low=[99.0], close=[100.5], volume=[3.0], interval_ms=HOUR_MS
    )
    data = strict_json(analyze(candles).to_dict())
    assert data["signal"]["levels"] is None  # no ATR on a single bar
    assert data["fibonacci"]["direction"] is None
    assert data["indicators"]["rsi"] == [None]
    assert data["cvd"]["delta"] == [3.0]


def test_flat_zero_volume_bars_analyse_cleanly() -> None:
    candles = ohlc_candles([(50.0, 50.0, 50.0, 50.0)] * 60, volume=0.0)
    data = strict_json(analyze(candles).to_dict())
    assert data["cvd"]["delta_pct"] == [None] * 60
    assert data["signal"]["bias"] == "neutral"
    assert data["orderflow"]["profile"]["total_volume"] == 0.0


def test_trades_and_liquidations_flow_through_analyze() -> None:
    candles = ohlc_candles([(100, 101, 99, 100.5), (100.5, 102, 100, 101.5)] * 20)
    rng = np.random.default_rng(3)
    times = np.sort(rng.integers(0, 40 * HOUR_MS, 500))
    trades = Trades.from_arrays(
        time=times, price=rng.uniform(99.5, 101.5, 500), qty=rng.random(500), side=rng.choice([-1, 1], 500)
    )
    liquidations = Liquidations.from_arrays(time=[5], qty=[1.0], side=[-1])
    result = analyze(candles, trades, liquidations=liquidations)
    data = strict_json(result.to_dict())
    assert data["cvd"]["side_source"] == "exchange_flag"
    assert data["orderflow"]["footprint"] is not None
    assert data["orderflow"]["liquidations"]["long_liquidated"][0] == 1.0
    assert result.cvd is not None
    assert result.cvd.delta.sum() == pytest.approx(float((trades.qty * trades.side).sum()))


def test_shared_swings_respect_each_module_length() -> None:
    candles = random_walk(800)
    params = AnalysisParams(smc=SmcParams(swing_length=3))
    result = analyze(candles, params=params)
    assert result.smc is not None
    assert result.fibonacci is not None
    assert result.smc.params.swing_length == 3
    assert result.fibonacci.params.swing_length == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bias_threshold": 0.0}, "bias_threshold"),
        ({"lookback_bars": 0}, "lookback_bars"),
        ({"stop_atr_buffer": -1.0}, "stop_atr_buffer"),
        ({"max_targets": 0}, "max_targets"),
        ({"min_target_atr": -1.0}, "min_target_atr"),
        ({"account_equity": 100.0}, "given together"),
        ({"account_equity": -5.0, "risk_pct": 1.0}, "account_equity"),
        ({"account_equity": 5.0, "risk_pct": 0.0}, "risk_pct"),
    ],
)
def test_signal_params_are_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SignalParams(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"smc": -0.1}, r"smc must be in \[0, 1000\]"), (dict.fromkeys(MODULES, 0.0), "positive")]
)
def test_signal_weights_are_validated(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SignalWeights(**kwargs)


def test_weights_change_the_score() -> None:
    candles = random_walk(1200, seed=4)
    only_indicators = AnalysisParams(signal=SignalParams(weights=SignalWeights(0, 1, 0, 0, 0)))
    result = analyze(candles, params=only_indicators)
    indicator_score = next(c.score for c in result.signal.components if c.name == "indicators")
    assert result.signal.score == pytest.approx(indicator_score)


def test_empty_or_out_of_range_trades_are_handled() -> None:
    candles = random_walk(100)
    empty = Trades.from_arrays(time=[], price=[], qty=[], side=[])
    data = strict_json(analyze(candles, empty).to_dict())
    assert data["cvd"]["side_source"] == "exchange_flag"
    assert data["orderflow"]["footprint"] is None
    late = Trades.from_arrays(time=[10**13], price=[30_000.0], qty=[1.0], side=[1])
    result = analyze(candles, late)
    assert result.cvd is not None
    assert result.cvd.unassigned_trades == 1
    assert float(result.cvd.delta.sum()) == 0.0


def test_kline_taker_volume_is_used_when_present() -> None:
    base = random_walk(60)
    candles = Candles.from_arrays(
        open_time=base.open_time, open=base.open, high=base.high, low=base.low, close=base.close,
        volume=base.volume, taker_buy_volume=base.volume * 0.25, interval_ms=base.interval_ms,
    )  # fmt: skip
    result = analyze(candles, modules=["cvd", "orderflow"])
    assert result.cvd is not None
    assert result.cvd.side_source == "kline_taker_volume"
    np.testing.assert_allclose(result.cvd.delta, -0.5 * base.volume)
    assert result.to_dict()["orderflow"]["side_source"] == "kline_taker_volume"
