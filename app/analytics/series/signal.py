"""``signal_series``: the signal as it was known at the close of every bar, for a whole series in one pass.

Row ``t`` of the result equals ``analyze(candles.head(t + 1), modules=modules, params=params).signal`` — bias,
score, confidence, the component scores, the stop and the first target — without running the analysis on each
of the ``n`` prefixes (O(n²)). The modules run once over the whole series; their causal events are read "as of"
each bar (see ``components``), the order-flow value area is grown as an expanding profile (see ``profile``),
and the combination repeats ``compute_signal``'s arithmetic with arrays. Reasons texts are not produced.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from app.analytics.engine import AnalysisParams, AnalysisResult, analyze, normalise_modules
from app.analytics.indicators import atr as wilder_atr
from app.analytics.model import KnownPredictions, Predictions, replay
from app.analytics.series import components
from app.analytics.series.features import forward_returns, model_features
from app.analytics.series.levels import first_targets, stops
from app.analytics.series.profile import value_area_series
from app.analytics.signals import COMPONENTS
from app.analytics.swings import detect_swings
from app.analytics.types import Candles, FloatArray, IntArray


@dataclass(frozen=True, slots=True, eq=False)
class SignalSeries:
    """One row per bar ``t``: the signal a run over bars ``0..t`` gave at that bar's close.

    ``bias`` is +1 long, -1 short, 0 neutral. ``entry`` is the bar's close. ``stop`` and ``target`` (the first
    target) are NaN when the bias is neutral or the ATR is still warming up (no levels), and ``target`` also when
    no level qualifies. Component columns are NaN when their module did not run.
    """

    modules: tuple[str, ...]
    open_time: IntArray
    close_time: IntArray
    bias: NDArray[np.int8]
    score: FloatArray
    confidence: FloatArray
    entry: FloatArray
    stop: FloatArray
    target: FloatArray
    smc: FloatArray
    indicators: FloatArray
    cvd: FloatArray
    orderflow: FloatArray
    fibonacci: FloatArray
    # The calibrated model's prediction at every bar (None for the heuristic signal), and how many of them this
    # replay fitted (the others were copied from ``known``).
    model: Predictions | None = None
    fitted: int = 0

    def __len__(self) -> int:
        return int(self.close_time.shape[0])

    def component(self, name: str) -> FloatArray:
        """The score column of component ``name`` (one of ``signals.COMPONENTS``)."""
        if name not in COMPONENTS:
            raise ValueError(f"unknown component {name!r}; expected one of {', '.join(COMPONENTS)}")
        column: FloatArray = getattr(self, name)
        return column


def fibonacci_legs(candles: Candles, params: AnalysisParams) -> components.FibonacciLegs:
    swings = detect_swings(candles.high, candles.low, params.fibonacci.swing_length)
    return components.FibonacciLegs(swings, params.fibonacci, len(candles))


def component_scores(
    candles: Candles,
    result: AnalysisResult,
    params: AnalysisParams,
    legs: components.FibonacciLegs | None,
    first: int = 0,
) -> dict[str, FloatArray]:
    """Every component's score at every bar, for the modules that ran in ``result`` (a run over ``candles``).

    Bars before ``first`` may be left NaN (the order-flow score is: its value areas are the costly part), for a
    caller that reads only the later bars; the others are the same whatever ``first`` is."""
    bars, close = len(candles), candles.close
    lookback = params.signal.lookback_bars
    since_index = np.maximum(0, np.arange(bars, dtype=np.int64) + 1 - lookback)
    scores: dict[str, FloatArray] = {}
    if result.smc is not None:
        scores["smc"] = components.smc_scores(result.smc, candles)
    if result.indicators is not None:
        scores["indicators"] = components.indicator_scores(result.indicators, close)
    if result.cvd is not None:
        scores["cvd"] = components.cvd_scores(result.cvd, lookback, since_index)
    if result.orderflow is not None:
        value_low, value_high = value_area_series(candles, params.orderflow, first)
        scores["orderflow"] = components.orderflow_scores(
            result.orderflow.absorption, close, value_low, value_high, since_index
        )
        scores["orderflow"][:first] = np.nan
    if legs is not None:
        scores["fibonacci"] = legs.scores(close)
    return {name: np.clip(score, -1, 1) for name, score in scores.items()}


def signal_series(
    candles: Candles,
    params: AnalysisParams | None = None,
    *,
    modules: Iterable[str] | None = None,
    known: KnownPredictions | None = None,
) -> SignalSeries:
    """The signal at every bar of ``candles`` (see the module docstring); ``modules`` as for ``analyze``.

    Candles only: trades and liquidations are not replayed per prefix. ``known``: the calibrated model's
    predictions an earlier replay of the same bars made (``model.replay``); their bars are not refitted.
    """
    names = normalise_modules(modules)
    p = params or AnalysisParams()
    sp = p.signal
    bars = len(candles)
    # One run over the whole series; its events are read "as of" every bar below (its own last-bar signal is not
    # used, so it is the cheap heuristic one).
    result = analyze(candles, modules=names, params=replace(p, signal=replace(sp, calibrated=False)))
    legs = fibonacci_legs(candles, p) if "fibonacci" in names else None
    scores = component_scores(candles, result, p, legs)
    # compute_signal's sums, in its component order; a component that did not run adds nothing.
    used_weight = 0.0
    weighted = np.zeros(bars)
    for name in COMPONENTS:
        if name in scores:
            weight = getattr(sp.weights, name)
            used_weight += weight
            weighted = weighted + weight * scores[name]
    total_weight = sum(getattr(sp.weights, name) for name in COMPONENTS)
    score = weighted / used_weight if used_weight > 0 else np.zeros(bars)
    sign = np.sign(score)
    agreeing = np.zeros(bars)
    for name in COMPONENTS:
        if name in scores:
            agrees = (sign != 0) & (np.sign(scores[name]) == sign)
            agreeing = agreeing + np.where(agrees, getattr(sp.weights, name), 0.0)
    agreement = agreeing / used_weight if used_weight else np.zeros(bars)
    confidence = np.abs(score) * agreement * (used_weight / total_weight)
    bias = np.where(score >= sp.bias_threshold, 1, np.where(score <= -sp.bias_threshold, -1, 0)).astype(np.int8)
    predictions, fitted = None, 0
    if sp.calibrated:
        # The model refitted at every bar (stride 1), as analyze on each prefix fits it: one fit per bar not known.
        features, forward = model_features(scores, bars), forward_returns(candles, sp.model.horizon)
        predictions, fitted = replay(features, forward, sp.model, candles.open_time, known)
        bias = predictions.side
        confidence = np.where(np.isfinite(predictions.probability), predictions.probability, 0.0)
    if result.indicators is not None:  # the engine's ATR for the levels, already computed with the indicators
        atr = result.indicators.atr
    else:
        atr = wilder_atr(candles.high, candles.low, candles.close, p.indicators.atr_period)
    at = np.flatnonzero((bias != 0) & np.isfinite(atr))
    side = bias[at].astype(np.float64)
    stop, target = np.full(bars, np.nan), np.full(bars, np.nan)
    if at.size:
        stop[at] = stops(candles, at, side, atr[at], sp, result.smc)
        target[at] = first_targets(candles, at, side, atr[at], sp, result.smc, legs)
    missing = np.full(bars, np.nan)
    return SignalSeries(
        modules=names,
        open_time=candles.open_time,
        close_time=candles.close_time,
        bias=bias,
        score=np.clip(score, -1, 1),
        confidence=np.clip(confidence, 0, 1),
        entry=candles.close,
        stop=stop,
        target=target,
        **{name: scores.get(name, missing) for name in COMPONENTS},
        model=predictions,
        fitted=fitted,
    )
