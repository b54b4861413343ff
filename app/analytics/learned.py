"""The calibrated signal (``SignalParams.calibrated``): bias and confidence learned from the analysed bars.

Every component's score at every bar of the run (``series.component_scores``, the same causal "as of" reading the
signal series uses) is the feature matrix; each bar's forward return at the model's horizon is its outcome. The
model (``model.calibrated``) is fitted on the rows whose outcome was known at the last bar's close and predicts the
last bar. So the result is a pure function of the bars given, and prefix replay stays exact: a run on the first
``t + 1`` bars states what the signal series states at bar ``t`` (``tests/analytics/test_learned.py``).

* ``bias`` is the side whose expected return after fees is positive, else ``neutral`` (the reason says why).
* ``confidence`` is the calibrated probability that following the better side wins after fees over the horizon;
  a neutral signal states it too (what following the better side would have meant). 0 when there is no model.
* ``model`` says how it was fitted (horizon, window, fees, l2, calibration sample) and what it expected.
* Levels follow the model's bias with the usual rules (``signals.signal_levels``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from app.analytics.engine import AnalysisParams, AnalysisResult
from app.analytics.model.calibrated import ModelParams, fit_window, known_rows, window_first
from app.analytics.model.verdict import ModelVerdict
from app.analytics.series.features import forward_returns, model_features
from app.analytics.series.signal import component_scores, fibonacci_legs
from app.analytics.signals import Signal, signal_levels
from app.analytics.types import Candles, FloatArray

SIDES = {1: "long", -1: "short", 0: "neutral"}


def _verdict(mp: ModelParams, rows: int, found: tuple[int, float, float] | None, why: str) -> ModelVerdict:
    preferred, probability, expected = found if found is not None else (0, None, None)
    return ModelVerdict(
        horizon_bars=mp.horizon,
        window_bars=mp.window,
        cost_per_side=mp.cost_per_side,
        l2=mp.l2,
        calibration_rows=rows,
        shrinkage_bars_per_outcome=mp.bars_per_outcome,
        preferred=SIDES[preferred] if found is not None else None,
        win_probability=probability,
        expected_return=expected,
        reasons=(why,),
    )


def calibrated_signal(candles: Candles, result: AnalysisResult, params: AnalysisParams, atr: FloatArray) -> Signal:
    """``result.signal`` with the model's bias, confidence, levels and ``model`` block (see the module docstring)."""
    mp = params.signal.model
    legs = fibonacci_legs(candles, params) if result.fibonacci is not None else None
    end = len(candles) - 1
    # The model reads the rows of its window only (known_rows): the earlier bars' scores are not computed.
    scores = component_scores(candles, result, params, legs, window_first(end, mp))
    features = model_features(scores, len(candles))
    forward = forward_returns(candles, mp.horizon)
    fitted = fit_window(features, forward, end, mp)
    fees = f"{2 * mp.cost_per_side * 10_000:.0f} bp fees"
    bias, confidence = 0, 0.0
    if fitted is None:
        known = int(known_rows(features, forward, end, mp).shape[0])
        why = f"neutral: no model, {known} bars with a known {mp.horizon}-bar outcome and {mp.min_rows} needed"
        verdict = _verdict(mp, 0, None, why)
    else:
        predicted = fitted.predict(features[end:])
        probability, expected = float(predicted.probability[0]), float(predicted.expected_return[0])
        if not np.isfinite(probability):
            why = "neutral: a component score is missing at the last bar (still warming up)"
            verdict = _verdict(mp, fitted.rows, None, why)
        else:
            preferred, bias, confidence = int(predicted.preferred[0]), int(predicted.side[0]), probability
            outlook = f"{expected * 10_000:+.1f} bp after {fees} over {mp.horizon} bars"
            if bias:
                why = f"{SIDES[bias]}: expected {outlook}; wins after fees with probability {probability:.2f}"
            else:
                why = f"neutral: the better side, {SIDES[preferred]}, is expected to return {outlook}: no edge"
            verdict = _verdict(mp, fitted.rows, (preferred, probability, expected), why)
    close = float(candles.close[-1])
    levels = signal_levels(bias, close, float(atr[-1]), params.signal, result.smc, result.fibonacci)
    return replace(result.signal, bias=SIDES[bias], confidence=confidence, levels=levels, model=verdict)
