"""Walk-forward predictions over a whole series: the model as it was known at each bar's close.

At every ``stride``-th bar ``T`` (from ``start``) the model is fitted on the window ending at ``T``
(``calibrated.fit_window``: only outcomes known at ``T``'s close) and predicts bars ``T .. T + stride - 1`` from
their own component scores. Each prediction therefore uses only bars up to its own, so appending bars never
changes it. ``stride = 1`` is exactly "the model refitted at every closed bar", which is what a signal calling the
model on the bars it is given computes; a larger stride trades freshness (the model is up to ``stride - 1`` bars
old) for study run time, and the study states the stride it used.
"""

from __future__ import annotations

import numpy as np

from app.analytics.model.calibrated import ModelParams, Predictions, fit_window
from app.analytics.types import FloatArray


def walk_forward(
    features: FloatArray, forward: FloatArray, params: ModelParams, *, start: int = 0, stride: int = 1
) -> Predictions:
    """Out-of-sample predictions for every bar (no model yet: side 0, NaN figures)."""
    if stride < 1:
        raise ValueError("stride must be at least 1")
    n = features.shape[0]
    preferred = np.zeros(n, dtype=np.int8)
    side = np.zeros(n, dtype=np.int8)
    probability, expected, score = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    for end in range(start, n, stride):
        model = fit_window(features, forward, end, params)
        if model is None:
            continue
        rows = slice(end, min(end + stride, n))
        predicted = model.predict(features[rows])
        preferred[rows], side[rows] = predicted.preferred, predicted.side
        probability[rows], expected[rows], score[rows] = (
            predicted.probability,
            predicted.expected_return,
            predicted.score,
        )
    return Predictions(preferred, side, probability, expected, score)
