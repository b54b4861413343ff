"""A signal's track record on a candle series: the per-bar signal replayed causally, then evaluated.

One function joins the two engines: :func:`app.analytics.series.signal_series` (the signal as known at the close of
every bar, equal to ``analyze`` on that prefix) and :func:`app.analytics.evaluation.evaluate` (what following it
earned, against the baselines). `POST /v1/analyze` with `evaluate`, `GET /v1/signals/…/track-record` and
`deltaflow evaluate` all call it, so the three agree to the byte on the same bars.

Decisions:
- the signals evaluated are those of bars ``first..last`` (a range of the series); their outcomes read the bars
  after them up to the longest horizon, as a follower would have lived them, so the series is cut at
  ``last + max(horizons)``, never earlier;
- a stop or target at or below zero (a fallback stop ``2 ATR`` under a price that fell by more than that) is no
  price a follower could place: that bar gets no R outcome (NaN), its return figures still count.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from app.analytics.engine import AnalysisParams
from app.analytics.evaluation import Evaluation, EvaluationParams, evaluate
from app.analytics.evaluation import SignalSeries as EvaluatedSeries
from app.analytics.model import KnownPredictions
from app.analytics.series import SignalSeries, signal_series
from app.analytics.types import Candles, FloatArray


@dataclass(frozen=True, slots=True, eq=False)
class TrackRecord:
    signals: SignalSeries  # every bar of the input, for include_series
    evaluation: Evaluation
    first: int  # index of the first evaluated signal
    last: int  # index of the last evaluated signal


def _price_or_nan(values: FloatArray) -> FloatArray:
    return np.where(np.isfinite(values) & (values > 0), values, np.nan)


def track_record(
    candles: Candles,
    evaluation: EvaluationParams,
    *,
    params: AnalysisParams | None = None,
    modules: Iterable[str] | None = None,
    first: int = 0,
    last: int | None = None,
    known: KnownPredictions | None = None,
) -> TrackRecord:
    """Replay the signal over ``candles`` and evaluate the signals of bars ``first..last`` (inclusive); ``known``
    as for ``signal_series`` (the calibrated model's predictions of an earlier replay, not refitted)."""
    count = len(candles)
    last = count - 1 if last is None else last
    if not 0 <= first <= last < count:
        raise ValueError(f"the evaluated bars {first}..{last} are not within the {count} bars")
    signals = signal_series(candles, params, modules=modules, known=known)
    end = min(count, last + 1 + max(evaluation.horizons))
    window = slice(first, end)
    series = EvaluatedSeries.from_arrays(
        open_time=candles.open_time[window],
        open=candles.open[window],
        high=candles.high[window],
        low=candles.low[window],
        close=candles.close[window],
        bias=signals.bias[window],
        score=signals.score[window],
        confidence=signals.confidence[window],
        stop=_price_or_nan(signals.stop[window]),
        target=_price_or_nan(signals.target[window]),
        interval_ms=candles.interval_ms,
        # Signals after `last` are not evaluated: those bars only serve the earlier signals' outcomes.
        evaluated_rows=last + 1 - first,
    )
    return TrackRecord(signals, evaluate(series, evaluation), first, last)
