"""Small statistics over numpy arrays: ranks, Spearman, per-trade figures and the non-overlapping trade set.

Conventions: NaN means "not defined" (too few values, zero variance, no losing trade for the profit factor); the
report turns it into JSON null. Sharpe is per trade (mean / sample standard deviation, not annualised: trade
frequency differs by horizon and by signal, and an annualised figure would hide that). Max drawdown is the largest
peak-to-trough fall of the compounded equity ``Π(1 + r)`` starting at 1, as a positive fraction.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from app.analytics.evaluation.inputs import FloatArray, IntArray


def average_ranks(values: FloatArray) -> FloatArray:
    """Ranks 1…n, ties sharing the mean of the ranks they span (the convention of Spearman's rho)."""
    n = values.shape[0]
    order = np.argsort(values)  # ties are found by value below, so the sort need not be stable
    ordered = values[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    ends = np.append(starts[1:], n)
    ranks = np.empty(n)
    ranks[order] = np.repeat((starts + ends + 1) / 2, ends - starts)
    return ranks


def pearson(x: FloatArray, y: FloatArray) -> float:
    if x.shape[0] < 2:
        return math.nan
    dx, dy = x - x.mean(), y - y.mean()
    # Sums of products rather than `@`: a BLAS dot spreads over threads, which a busy server makes slower.
    denominator = math.sqrt(float(np.sum(dx * dx)) * float(np.sum(dy * dy)))
    return float(np.sum(dx * dy)) / denominator if denominator > 0 else math.nan


def spearman(x: FloatArray, y: FloatArray) -> float:
    """Spearman's rank correlation; NaN when either side is constant or there are fewer than 2 pairs."""
    return pearson(average_ranks(x), average_ranks(y))


def correlation_t(rho: float, n: int) -> float:
    """``rho · sqrt((n - 2) / (1 - rho²))``; NaN below 3 pairs or at |rho| = 1."""
    if n < 3 or not math.isfinite(rho) or abs(rho) >= 1:
        return math.nan
    return rho * math.sqrt((n - 2) / (1 - rho * rho))


def hit_rate(returns: FloatArray) -> float:
    """Share of returns strictly above zero (a flat trade is not a hit)."""
    return float(np.mean(returns > 0)) if returns.size else math.nan


def profit_factor(returns: FloatArray) -> float:
    """Sum of gains over the absolute sum of losses; NaN when nothing was lost."""
    losses = -float(returns[returns < 0].sum())
    return float(returns[returns > 0].sum()) / losses if losses > 0 else math.nan


def sharpe(returns: FloatArray) -> float:
    # Identical returns have no dispersion; their computed std is rounding noise, not a number to divide by.
    if returns.size < 2 or returns.min() == returns.max():
        return math.nan
    return float(np.mean(returns)) / float(np.std(returns, ddof=1))


def max_drawdown(returns: FloatArray) -> float:
    if returns.size == 0:
        return math.nan
    equity = np.concatenate(([1.0], np.cumprod(1 + returns)))
    return float(np.max(1 - equity / np.maximum.accumulate(equity)))


def non_overlapping(bars: IntArray, horizon: int) -> IntArray:
    """Positions in ``bars`` (sorted bar indices with a trade) of the trades a single account can follow: take a
    trade, skip every signal until its exit. A trade from bar t exits at the close of t + h, so the next one may
    be the signal of bar t + h (it enters at the open of t + h + 1)."""
    if horizon == 1 or bars.size == 0:
        return np.arange(bars.size)
    following = np.searchsorted(bars, bars + horizon).tolist()
    taken: list[int] = []
    position = 0
    while position < bars.size:
        taken.append(position)
        position = following[position]
    return np.asarray(taken, dtype=np.int64)


def valid(values: FloatArray, mask: NDArray[np.bool_] | None = None) -> FloatArray:
    """The finite values (within ``mask``), in bar order."""
    keep = np.isfinite(values) if mask is None else mask & np.isfinite(values)
    result: FloatArray = values[keep]
    return result
