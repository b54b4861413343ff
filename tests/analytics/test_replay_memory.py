"""The calibrated replay's memory (`model.replay` with `KnownPredictions`, `signal_series(known=…)`): remembered bars
are copied, not refitted, and a replay that remembers an earlier one's bars states exactly what a replay from
scratch states."""

from __future__ import annotations

import numpy as np
import pytest

from app.analytics import AnalysisParams, SignalParams
from app.analytics.model import KnownPredictions, ModelParams, Predictions, replay, walk_forward
from app.analytics.series import signal_series
from tests.analytics.synthetic import random_walk
from tests.analytics.test_learned import _drifting

SMALL = ModelParams(horizon=12, window=300, min_rows=100)
PARAMS = AnalysisParams(signal=SignalParams(model=SMALL))


def _same(a: Predictions, b: Predictions) -> None:
    assert np.array_equal(a.side, b.side)
    assert np.array_equal(a.preferred, b.preferred)
    for mine, theirs in ((a.probability, b.probability), (a.expected_return, b.expected_return), (a.score, b.score)):
        assert np.array_equal(mine, theirs, equal_nan=True)


def test_a_replay_remembering_a_prefix_fits_only_the_new_bars_and_states_the_same() -> None:
    candles = _drifting(480, drift=0.0005, seed=12)  # a small edge: some bars decided
    scratch = signal_series(candles, PARAMS)
    earlier = signal_series(candles.head(430), PARAMS)
    assert scratch.model is not None
    assert earlier.model is not None
    assert (scratch.fitted, earlier.fitted) == (480, 430)  # no memory: one fit (or no-model check) a bar
    known = KnownPredictions(candles.open_time[:430], earlier.model)
    resumed = signal_series(candles, PARAMS, known=known)
    assert resumed.fitted == 50
    assert resumed.model is not None
    _same(resumed.model, scratch.model)
    assert np.array_equal(resumed.bias, scratch.bias)
    assert np.array_equal(resumed.confidence, scratch.confidence)
    assert np.array_equal(resumed.stop, scratch.stop, equal_nan=True)
    assert int(np.count_nonzero(scratch.bias)) > 0, "the replay compared some decided bars"


def test_remembered_predictions_are_copied_as_they_are_not_recomputed() -> None:
    # A memory that disagrees with the bars (as after a store's retention dropped their history) wins: it is
    # the point-in-time record. Planted: every remembered bar says long with probability 0.99.
    candles = random_walk(400, seed=8)
    n = 360
    planted = Predictions(
        np.ones(n, dtype=np.int8), np.ones(n, dtype=np.int8), np.full(n, 0.99), np.full(n, 0.01), np.zeros(n)
    )
    series = signal_series(candles, PARAMS, known=KnownPredictions(candles.open_time[:n], planted))
    assert series.fitted == 40
    assert np.all(series.bias[:n] == 1)
    assert np.all(series.confidence[:n] == 0.99)


def test_replay_matches_on_open_time_not_position() -> None:
    rng = np.random.default_rng(4)
    features = rng.standard_normal((420, 3))
    features[:100] = np.nan
    forward = 0.01 * rng.standard_normal(420)
    forward[-SMALL.horizon :] = np.nan
    open_time = np.arange(420, dtype=np.int64) * 60_000
    reference = walk_forward(features, forward, SMALL)
    # Memory of bars 350..399 only (an older replay that started later and stopped earlier).
    rows = slice(350, 400)
    known = KnownPredictions(open_time[rows], reference.take(rows))
    predictions, fitted = replay(features, forward, SMALL, open_time, known)
    assert fitted == 420 - 50
    _same(predictions, reference)


def test_known_predictions_refuse_unordered_times_and_a_length_mismatch() -> None:
    empty = Predictions.empty(3)
    with pytest.raises(ValueError, match="increasing"):
        KnownPredictions(np.array([0, 2, 1], dtype=np.int64), empty)
    with pytest.raises(ValueError, match="one open time"):
        KnownPredictions(np.array([0, 1], dtype=np.int64), empty)


def test_the_heuristic_series_has_no_model_to_remember() -> None:
    series = signal_series(random_walk(200, seed=2), AnalysisParams(signal=SignalParams(calibrated=False)))
    assert series.model is None
    assert series.fitted == 0
