"""The calibrated model's inputs on a series: component-score features and forward returns.

* Features: the component scores of the modules that ran, in ``signals.COMPONENTS`` order, NaN during the first
  ``WARMUP_BARS`` bars (MACD needs 26 + 9 bars, swing-based components their first confirmed swings; 100 covers
  both with room). A component whose module did not run is left out rather than kept as NaN, which would drop
  every row.
* Forward returns: the evaluation's rule, entry at the open of ``t + 1`` and exit at the close of ``t + h``,
  ``close[t + h] / open[t + 1] - 1``; NaN where ``t + h`` is past the last bar.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from app.analytics.signals import COMPONENTS
from app.analytics.types import Candles, FloatArray

WARMUP_BARS = 100


def model_features(scores: Mapping[str, FloatArray], bars: int) -> FloatArray:
    """``bars`` x k: the scores of the k components present, warm-up rows NaN. With no component at all, one NaN
    column: no row is usable, so there is no model (one fitted on nothing would only learn the drift)."""
    columns = [scores[name] for name in COMPONENTS if name in scores]
    features = np.column_stack(columns).astype(np.float64) if columns else np.full((bars, 1), np.nan)
    features[:WARMUP_BARS] = np.nan
    return features


def forward_returns(candles: Candles, horizon: int) -> FloatArray:
    n = len(candles)
    forward = np.full(n, np.nan)
    if horizon < n:
        forward[: n - horizon] = candles.close[horizon:] / candles.open[1 : n - horizon + 1] - 1
    return forward
