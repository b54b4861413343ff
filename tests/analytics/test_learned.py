"""The calibrated signal (`SignalParams.calibrated`, app/analytics/learned.py): prefix replay with the learning
included, a planted edge found, no edge abstained on, too few bars stated, and its levels following its bias."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.analytics import AnalysisParams, Candles, SignalParams, analyze
from app.analytics.model import ModelParams
from app.analytics.series import signal_series
from tests.analytics.synthetic import random_walk

# A small model so that the walk-forward reference (one fit per bar) stays quick.
SMALL = ModelParams(horizon=12, window=300, min_rows=100)


def _calibrated(model: ModelParams = SMALL) -> AnalysisParams:
    return AnalysisParams(signal=SignalParams(calibrated=True, model=model))


def _drifting(count: int, drift: float, seed: int) -> Candles:
    """Log-returns ``drift`` ± 0.5 % per bar; bars open at the previous close, wicks 0.1 % beyond the body."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(drift + 0.005 * rng.standard_normal(count)))
    open_ = np.concatenate(([100.0], close[:-1]))
    return Candles.from_arrays(
        open_time=np.arange(count, dtype=np.int64) * 3_600_000, open=open_, close=close,
        high=np.maximum(open_, close) * 1.001, low=np.minimum(open_, close) * 0.999,
        volume=1 + rng.random(count), taker_buy_volume=rng.random(count) * 0.5,
    )  # fmt: skip


def test_prefix_replay_a_run_on_the_first_bars_states_what_the_series_states_at_that_bar() -> None:
    candles = _drifting(520, drift=0.0005, seed=12)  # a small edge: long at most bars, neutral at the others
    params = _calibrated()
    series = signal_series(candles, params)
    decided = 0
    for t in range(150, 520, 9):  # before and after the first model (100 warm-up + 12 + 100 rows)
        signal = analyze(candles.head(t + 1), params=params).signal
        assert signal.bias == {1: "long", -1: "short", 0: "neutral"}[int(series.bias[t])], t
        assert signal.confidence == series.confidence[t], t
        assert signal.score == series.score[t], t
        if signal.levels is None:
            assert math.isnan(series.stop[t]), t
        else:
            decided += 1
            assert signal.levels.stop == series.stop[t], t
    assert signal.model is not None
    assert signal.model.calibration_rows > 0
    assert 0 < decided < len(range(150, 520, 9)), "the replay compared decided and neutral bars"


def test_a_series_rows_do_not_change_when_bars_are_appended() -> None:
    candles = random_walk(420, seed=5)
    params = _calibrated()
    short, long = signal_series(candles.head(380), params), signal_series(candles, params)
    assert np.array_equal(short.bias, long.bias[:380])
    assert np.array_equal(short.confidence, long.confidence[:380])


def test_a_planted_edge_is_found_and_followed() -> None:
    signal = analyze(_drifting(600, drift=0.003, seed=3), params=_calibrated()).signal
    assert signal.bias == "long"
    assert signal.model is not None
    assert signal.model.preferred == "long"
    assert signal.confidence == signal.model.win_probability
    assert signal.confidence > 0.8
    assert signal.model.expected_return is not None
    assert signal.model.expected_return > 0.01
    assert signal.model.reasons[0].startswith("long: expected +")
    assert signal.levels is not None
    assert signal.levels.stop < signal.levels.entry


def test_without_an_edge_it_abstains_and_says_why() -> None:
    # No drift, 60 bp round trip: no bin of ~60 outcomes clears the fees by chance.
    model = ModelParams(horizon=12, window=300, min_rows=100, cost_per_side=0.003)
    series = signal_series(_drifting(700, drift=0.0, seed=9), _calibrated(model))
    stated = np.flatnonzero(series.confidence > 0)
    assert stated.size > 200
    # Measured: 90 % of the stated bars abstain. The rest are chance: a 300-bar window holds ~25 independent 12-bar
    # outcomes, so an extreme bin of ~30 overlapping ones clears even 60 bp now and then.
    assert np.mean(series.bias[stated] == 0) >= 0.85
    signal = analyze(_drifting(700, drift=0.0, seed=9), params=_calibrated(model)).signal
    assert signal.bias == "neutral"
    assert signal.levels is None
    assert signal.model is not None
    assert signal.model.reasons[0].endswith("no edge")
    assert 0 < signal.confidence < 0.5, "the better side's probability of winning after 60 bp of fees"


def test_too_few_bars_for_a_model_are_neutral_with_the_count_that_was_missing() -> None:
    signal = analyze(random_walk(250), params=_calibrated(ModelParams(horizon=12, window=300, min_rows=200))).signal
    assert signal.bias == "neutral"
    assert signal.confidence == 0.0
    assert signal.levels is None
    assert signal.model is not None
    assert signal.model.calibration_rows == 0
    assert signal.model.preferred is None
    # 250 bars: 100 of warm-up, and the last 12 have no outcome yet.
    assert signal.model.reasons == ("neutral: no model, 138 bars with a known 12-bar outcome and 200 needed",)
    assert signal.to_dict()["model"]["fees_round_trip_bp"] == pytest.approx(20.0)


def test_the_heuristic_signal_has_no_model_block() -> None:
    signal = analyze(random_walk(300), params=AnalysisParams(signal=SignalParams(calibrated=False))).signal
    assert signal.model is None
    assert "model" not in signal.to_dict()
