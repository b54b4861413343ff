"""What the study measures on one candle series: per-bar component scores and forward returns per horizon.

* Component scores and the combined score: ``series.signal_series`` (the signal known at each bar's close, equal
  to ``analyze`` on that prefix), every module run. They have no fitted parameters, so their IC is out of sample
  by construction.
* Forward returns: the evaluation's own rule (``evaluation.compute_outcomes``): entry at the open of ``t + 1``,
  exit at the close of ``t + h``, ``close[t + h] / open[t + 1] - 1``, gross; NaN where ``t + h`` is past the end.
* Warm-up: the first ``WARMUP_BARS`` bars are left out of every figure (their scores are NaN here): MACD needs
  26 + 9 bars, swing-based components their first confirmed swings; 100 bars covers both with room.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.analytics.evaluation import SignalSeries as EvaluatedSeries
from app.analytics.evaluation import compute_outcomes
from app.analytics.series import signal_series
from app.analytics.series.features import WARMUP_BARS, model_features
from app.analytics.signals import COMPONENTS
from app.analytics.types import Candles, FloatArray


@dataclass(frozen=True, slots=True, eq=False)
class StudyInputs:
    bars: int
    features: FloatArray  # n x len(COMPONENTS), in COMPONENTS order; NaN during the warm-up
    score: FloatArray  # the combined score; NaN during the warm-up
    forward: dict[int, FloatArray]  # horizon -> forward return per bar

    def column(self, name: str) -> FloatArray:
        """A component's scores, or ``"score"`` for the combined one."""
        if name == "score":
            return self.score
        result: FloatArray = self.features[:, COMPONENTS.index(name)]
        return result


def study_inputs(candles: Candles, horizons: tuple[int, ...]) -> StudyInputs:
    signals = signal_series(candles)
    n = len(candles)
    zeros = np.zeros(n)
    evaluated = EvaluatedSeries.from_arrays(
        open_time=candles.open_time, open=candles.open, high=candles.high, low=candles.low, close=candles.close,
        bias=zeros, score=zeros, confidence=zeros, stop=np.full(n, np.nan), target=np.full(n, np.nan),
        interval_ms=candles.interval_ms,
    )  # fmt: skip
    # Forward returns do not depend on the bias or on costs: neutral rows and zero cost read them plainly.
    outcomes = compute_outcomes(evaluated, horizons, 0.0)
    features = model_features({name: signals.component(name) for name in COMPONENTS}, n)
    score = np.array(signals.score, dtype=np.float64)
    score[:WARMUP_BARS] = np.nan
    return StudyInputs(
        bars=n,
        features=features,
        score=score,
        forward={h: outcomes[h].forward_return for h in horizons},
    )
