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


def binned_isotonic(bins: Bins, outcomes: FloatArray, *, increasing: bool = True) -> StepFunction:
    """A monotone step function of the binned scores fitted to ``outcomes`` (one per scored row) by PAV."""
    means = np.add.reduceat(outcomes[bins.order], bins.starts) / bins.sizes
    fitted = pav(means, bins.sizes) if increasing else -pav(-means, bins.sizes)
    return StepFunction(upper=bins.upper, value=fitted)
