"""Isotonic regression by pool-adjacent-violators (PAV), and the binned step function the model calibrates with.

``pav(values, weights)`` returns the non-decreasing sequence closest to ``values`` in weighted least squares: scan
left to right keeping blocks of pooled means; whenever a new block's mean is below the previous block's, merge
them (repeatedly). O(n) merges. The fit of a non-increasing relation is ``-pav(-values)``.

The model feeds PAV equal-count bins of out-of-fold scores rather than single rows: PAV on raw rows ends in tiny
blocks at both extremes (one lucky row makes its own block), exactly where the decisions are taken. With ``count``
equal-count bins every block holds at least ``rows / count`` outcomes (10 bins of ~100 rows in a 1 000-bar
window: a hit rate's standard error is then ~5 points, the issue's calibration tolerance). The bins are computed
once and shared by the three maps the model fits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.analytics.types import FloatArray, IntArray


def pav(values: FloatArray, weights: FloatArray) -> FloatArray:
    """The weighted non-decreasing least-squares fit of ``values`` (in the order given)."""
    means: list[float] = []
    totals: list[float] = []
    sizes: list[int] = []
    for value, weight in zip(values.tolist(), weights.tolist(), strict=True):
        means.append(value)
        totals.append(weight)
        sizes.append(1)
        while len(means) > 1 and means[-2] > means[-1]:  # a violation: pool the last two blocks
            weight_sum = totals[-2] + totals[-1]
            means[-2] = (means[-2] * totals[-2] + means[-1] * totals[-1]) / weight_sum
            totals[-2] = weight_sum
            sizes[-2] += sizes[-1]
            del means[-1], totals[-1], sizes[-1]
    result: FloatArray = np.repeat(np.asarray(means), sizes)
    return result


@dataclass(frozen=True, slots=True, eq=False)
class StepFunction:
    """A monotone map of a score to a value: bin ``i`` covers scores up to ``upper[i]`` (the last one, all above)."""

    upper: FloatArray
    value: FloatArray

    def __call__(self, score: FloatArray) -> FloatArray:
        index = np.minimum(np.searchsorted(self.upper, score, side="left"), self.value.shape[0] - 1)
        result: FloatArray = self.value[index]
        return result


@dataclass(frozen=True, slots=True, eq=False)
class Bins:
    """``count`` equal-count bins of a set of scores (sizes differ by at most 1), lowest scores first; ties are
    sorted stably by row, so the bins are a pure function of the inputs. Computed once, shared by every map."""

    order: IntArray  # rows sorted by score
    starts: IntArray  # first position (in ``order``) of each bin
    sizes: FloatArray
    upper: FloatArray  # the highest score of each bin


def equal_count_bins(scores: FloatArray, count: int) -> Bins:
    n = scores.shape[0]
    count = min(count, max(1, n))
    order = np.argsort(scores, kind="stable")
    sizes = np.full(count, n // count)
    sizes[: n % count] += 1  # the split np.array_split makes: the first n % count bins one larger
    ends = np.cumsum(sizes)
    return Bins(order=order, starts=ends - sizes, sizes=sizes.astype(np.float64), upper=scores[order[ends - 1]])


def shrunk_means(
    means: FloatArray, sizes: FloatArray, outcomes: FloatArray, overlap: int, prior: float | None = None
) -> FloatArray:
    """The bin means pulled toward what the evidence supports (empirical Bayes, method of moments).

    ``outcomes`` are in bin order. Rows whose outcomes overlap ``overlap`` bars (h-bar forward returns of
    consecutive bars share h - 1 bars) are worth about one independent row per ``overlap``: a bin of ``n`` rows has
    the noise variance ``w / (n / overlap)``, ``w`` the pooled within-bin variance.

    * Between bins: the variance of the true bin means, ``tau2``, is what the spread of the bin means shows beyond
      that noise (0 if none); each bin keeps the share ``tau2 / (tau2 + noise)`` of its deviation from the pooled
      mean. No evidence of a difference: every bin states the pooled value.
    * The pooled value itself, with a ``prior`` (the no-edge value: 0 for a mean return, the side-free rate for a
      win probability), is shrunk toward it by the positive-part James-Stein factor ``max(0, 1 - 1 / t^2)``, ``t``
      its deviation from the prior over its standard error: a trailing window's drift is kept only as far as it is
      distinguishable from noise (1 000 hourly bars at a 24-bar horizon are ~42 independent outcomes)."""
    total = max(1.0, float(sizes.sum()))
    pooled = float(np.dot(means, sizes) / total)
    within = float(np.sum((outcomes - np.repeat(means, sizes.astype(np.int64))) ** 2) / total)
    noise = within / np.maximum(sizes / max(1, overlap), 1.0)
    tau2 = max(0.0, float(np.mean((means - pooled) ** 2) - np.mean(noise)))
    keep = tau2 / (tau2 + noise) if tau2 > 0 else np.zeros_like(means)
    centre = pooled
    if prior is not None:
        deviation = pooled - prior
        pooled_noise = within / max(total / max(1, overlap), 1.0)
        factor = max(0.0, 1.0 - pooled_noise / deviation**2) if deviation != 0 else 0.0
        centre = prior + factor * deviation
    shrunk: FloatArray = centre + keep * (means - pooled)
    return shrunk


def binned_isotonic(
    bins: Bins,
    outcomes: FloatArray,
    *,
    increasing: bool = True,
    shrink_overlap: int | None = None,
    prior: float | None = None,
) -> StepFunction:
    """A monotone step function of the binned scores fitted to ``outcomes`` (one per scored row) by PAV; with
    ``shrink_overlap`` the bin means are first shrunk toward the pooled mean (``shrunk_means``)."""
    ordered = outcomes[bins.order]
    means = np.add.reduceat(ordered, bins.starts) / bins.sizes
    if shrink_overlap is not None:
        means = shrunk_means(means, bins.sizes, ordered, shrink_overlap, prior)
    fitted = pav(means, bins.sizes) if increasing else -pav(-means, bins.sizes)
    return StepFunction(upper=bins.upper, value=fitted)
