"""Batched "first bar after k where price crosses x" queries, the workhorse of every lifecycle field.

A sparse table of running maxima (``table[k][i] = max(values[i : i + 2**k])``) answers thousands of
first-crossing queries at once by binary lifting: ``log2(n)`` vectorised steps instead of a Python loop per
event. Minima are maxima of the negated series.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from app.analytics.types import FloatArray, IntArray

NOT_FOUND = -1


class MaxTable:
    """Sparse table of window maxima over one series; build once, query many times."""

    __slots__ = ("_levels", "_size", "values")

    def __init__(self, values: FloatArray) -> None:
        self.values = np.asarray(values, dtype=np.float64)
        self._size = int(self.values.shape[0])
        levels = [self.values]
        width = 1
        while 2 * width <= self._size:
            previous = levels[-1]
            levels.append(np.maximum(previous[:-width], previous[width:]))
            width *= 2
        self._levels = levels

    def first_above(self, start: IntArray, threshold: FloatArray) -> IntArray:
        """For each query, the first index ``j >= start`` with ``values[j] > threshold``, else ``NOT_FOUND``."""
        position = np.asarray(start, dtype=np.int64).copy()
        limit = np.asarray(threshold, dtype=np.float64)
        if position.size == 0 or self._size == 0:
            return np.full(position.shape, NOT_FOUND, dtype=np.int64)
        # Greedy descent: jump a block of 2**k bars whenever the whole block stays at or below the threshold.
        for level in range(len(self._levels) - 1, -1, -1):
            block = self._levels[level]
            width = 1 << level
            inside = position + width <= self._size
            peek = block[np.minimum(position, block.shape[0] - 1)]
            position += np.where(inside & (peek <= limit), width, 0)
        in_range = position < self._size
        found = in_range & (self.values[np.minimum(position, self._size - 1)] > limit)
        return np.where(found, position, NOT_FOUND)

    def window_max(self, width: int) -> FloatArray:
        """``max(values[i : i + width])`` for every ``i`` with a full window (length ``n - width + 1``)."""
        level = width.bit_length() - 1
        block = self._levels[level]
        reach = width - (1 << level)
        result: FloatArray = np.maximum(block[: block.shape[0] - reach], block[reach:])
        return result

    def range_max(self, start: IntArray, stop: IntArray) -> FloatArray:
        """Maximum of ``values[start:stop]`` per query; ``-inf`` for empty ranges."""
        lo = np.asarray(start, dtype=np.int64)
        hi = np.asarray(stop, dtype=np.int64)
        length = hi - lo
        result = np.full(lo.shape, -np.inf)
        valid = length > 0
        if not valid.any():
            return result
        level = np.zeros(lo.shape, dtype=np.int64)
        level[valid] = np.floor(np.log2(length[valid])).astype(np.int64)
        for k in np.unique(level[valid]):
            rows = valid & (level == k)
            block = self._levels[int(k)]
            result[rows] = np.maximum(block[lo[rows]], block[hi[rows] - (1 << int(k))])
        return result


class MinTable:
    """Window minima via a :class:`MaxTable` over the negated series."""

    __slots__ = ("_negated",)

    def __init__(self, values: FloatArray) -> None:
        self._negated = MaxTable(-np.asarray(values, dtype=np.float64))

    @property
    def negated(self) -> MaxTable:
        """The underlying maxima table of ``-values``."""
        return self._negated

    def first_below(self, start: IntArray, threshold: FloatArray) -> IntArray:
        """First index ``j >= start`` with ``values[j] < threshold``, else ``NOT_FOUND``."""
        return self._negated.first_above(start, -np.asarray(threshold, dtype=np.float64))

    def range_min(self, start: IntArray, stop: IntArray) -> FloatArray:
        return -self._negated.range_max(start, stop)


def first_beyond(
    upper: MaxTable, lower: MinTable, start: IntArray, level: FloatArray, upward: NDArray[np.bool_]
) -> IntArray:
    """Per row: first index >= start trading above ``level`` in ``upper`` (upward rows) or below it in ``lower``."""
    result = np.full(np.shape(start), NOT_FOUND, dtype=np.int64)
    start = np.asarray(start, dtype=np.int64)
    level = np.asarray(level, dtype=np.float64)
    result[upward] = upper.first_above(start[upward], level[upward])
    result[~upward] = lower.first_below(start[~upward], level[~upward])
    return result


def at_or_below(threshold: FloatArray) -> FloatArray:
    """Turn a strict "below" query into "at or below" (the next float up is the strict bound)."""
    return np.nextafter(np.asarray(threshold, dtype=np.float64), np.inf)


def at_or_above(threshold: FloatArray) -> FloatArray:
    return np.nextafter(np.asarray(threshold, dtype=np.float64), -np.inf)


def last_true_at_or_before(mask: NDArray[np.bool_]) -> IntArray:
    """For each index, the latest index ``<= i`` where ``mask`` holds, else ``NOT_FOUND``."""
    indexes = np.where(mask, np.arange(mask.shape[0], dtype=np.int64), NOT_FOUND)
    return np.maximum.accumulate(indexes) if indexes.size else indexes


class PriceTables:
    """The four tables lifecycle queries need, built once per run and shared by every module."""

    __slots__ = ("close_max", "close_min", "high_max", "low_min")

    def __init__(self, high: FloatArray, low: FloatArray, close: FloatArray) -> None:
        self.high_max = MaxTable(high)
        self.low_min = MinTable(low)
        self.close_max = MaxTable(close)
        self.close_min = MinTable(close)
