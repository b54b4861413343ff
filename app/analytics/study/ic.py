"""The information coefficient of a score with forward returns, and a t-statistic that survives overlap.

IC: Spearman's rank correlation over every bar where both are defined (``evaluation.stats.spearman``, average
ranks for ties). It equals the mean of ``u_t = z(rank x)_t · z(rank y)_t`` (ranks standardised with the population
standard deviation), which gives it a time series to test.

t-statistic: Newey-West (1987) HAC standard error of that mean with a Bartlett kernel. h-bar forward returns
overlap, so ``u_t`` is autocorrelated over at least ``h - 1`` lags; the component scores are persistent too. Lags:
``max(h, floor(4 · (n / 100)^(2/9)))`` — at least the horizon, and Newey & West's rule of thumb for the rest.
The evaluation's ``t_stat_adjusted`` (the iid t divided by sqrt(h)) is a coarser version of the same idea.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from app.analytics.evaluation.stats import average_ranks, spearman
from app.analytics.types import FloatArray


@dataclass(frozen=True, slots=True)
class InformationCoefficient:
    n: int
    ic: float
    t_stat: float  # Newey-West
    lags: int


def newey_west_lags(horizon: int, n: int) -> int:
    rule = float(4 * (max(n, 1) / 100) ** (2 / 9))  # a float power is typed Any
    return max(horizon, math.floor(rule))


def newey_west_t(values: FloatArray, lags: int) -> float:
    """t-statistic of ``values.mean()`` against zero with a Bartlett-kernel long-run variance; NaN when undefined."""
    n = values.shape[0]
    if n < 3:
        return math.nan
    centred = values - values.mean()
    variance = float(np.sum(centred * centred)) / n
    for lag in range(1, min(lags, n - 1) + 1):
        weight = 1 - lag / (lags + 1)
        variance += 2 * weight * float(np.sum(centred[lag:] * centred[:-lag])) / n
    if not variance > 0:
        return math.nan
    return float(values.mean()) / math.sqrt(variance / n)


def rank_ic(score: FloatArray, forward: FloatArray, horizon: int) -> InformationCoefficient:
    defined = np.isfinite(score) & np.isfinite(forward)
    x, y = score[defined], forward[defined]
    n = int(x.shape[0])
    lags = newey_west_lags(horizon, n)
    if n < 3 or x.min() == x.max() or y.min() == y.max():
        return InformationCoefficient(n, math.nan, math.nan, lags)
    rx, ry = average_ranks(x), average_ranks(y)
    u = (rx - rx.mean()) / rx.std() * ((ry - ry.mean()) / ry.std())
    return InformationCoefficient(n, spearman(x, y), newey_west_t(u, lags), lags)
