"""Swing (pivot) detection shared by SMC, Fibonacci and CVD divergence.

A swing high at bar ``i`` needs ``high[i] > max(high[i+1 .. i+L])`` and ``high[i] >= max(high[i-L .. i-1])``
(mirrored for lows), so it is knowable only once bar ``i + L`` has closed: that close is its ``confirmed_time``.
Bars within ``L`` of either end of the series never become swings (no artificial edge pivots). With equal
highs the strict inequality on the right makes the last of them the pivot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from app.analytics.events import EventTable, build_events
from app.analytics.rangequery import MaxTable, MinTable, PriceTables, first_beyond
from app.analytics.types import Candles, FloatArray, IntArray

SWING_KINDS = ("swing_high", "swing_low")
LEVEL_DIRECTIONS = ("high", "low")


@dataclass(frozen=True, slots=True, eq=False)
class Swings:
    """Confirmed pivots ordered by pivot bar, highs before lows on the same bar."""

    length: int
    index: IntArray
    confirmed_index: IntArray
    is_high: NDArray[np.bool_]
    price: FloatArray

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def confirmed_by(self, bar: int) -> Swings:
        """The swings a run ending at ``bar`` (inclusive) had confirmed."""
        keep = self.confirmed_index <= bar
        return Swings(self.length, self.index[keep], self.confirmed_index[keep], self.is_high[keep], self.price[keep])


def _pivots(values: FloatArray, table: MaxTable, length: int) -> IntArray:
    n = values.shape[0]
    candidates = np.arange(length, n - length, dtype=np.int64)
    if candidates.size == 0:
        return candidates
    window = table.window_max(length)  # window[j] = max(values[j : j + length])
    left = window[candidates - length]
    right = window[candidates + 1]
    centre = values[candidates]
    pivots: IntArray = candidates[(centre > right) & (centre >= left)]
    return pivots


def detect_swings(
    high: FloatArray,
    low: FloatArray,
    length: int,
    *,
    high_table: MaxTable | None = None,
    low_table: MinTable | None = None,
) -> Swings:
    """All confirmed swing highs and lows with pivot length ``length`` (see the module docstring)."""
    if length < 1:
        raise ValueError("swing length must be at least 1")
    highs = _pivots(np.asarray(high, dtype=np.float64), high_table or MaxTable(high), length)
    # Lows are highs of the negated series; MinTable stores exactly that negation.
    negated_low = -np.asarray(low, dtype=np.float64)
    lows = _pivots(negated_low, MaxTable(negated_low) if low_table is None else low_table.negated, length)
    index = np.concatenate((highs, lows))
    is_high = np.concatenate((np.ones(highs.shape[0], bool), np.zeros(lows.shape[0], bool)))
    order = np.lexsort((~is_high, index))
    index, is_high = index[order], is_high[order]
    price = np.where(is_high, np.asarray(high)[index], np.asarray(low)[index])
    return Swings(length, index, index + length, is_high, price)


def swing_events(candles: Candles, swings: Swings, tables: PriceTables) -> EventTable:
    """Swings as events: swept when a later wick trades beyond the level, broken when a later close does."""
    after = swings.confirmed_index + 1
    level = swings.price
    high = swings.is_high
    swept = first_beyond(tables.high_max, tables.low_min, after, level, high)
    broken = first_beyond(tables.close_max, tables.close_min, after, level, high)
    return build_events(
        close_time=candles.close_time,
        open_time=candles.open_time,
        kinds=SWING_KINDS,
        direction_names=LEVEL_DIRECTIONS,
        zone=False,
        kind=np.where(high, 0, 1),
        direction=np.where(high, 1, -1),
        anchor_index=swings.index,
        confirmed_index=swings.confirmed_index,
        top=level,
        swept_index=swept,
        broken_index=broken,
    )
