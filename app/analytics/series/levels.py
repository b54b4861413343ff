"""Stop and first target at every bar with a bias, as ``signals._stop`` and ``signals._targets`` place them.

Rows are the bars to price (``at``), each with its side (+1 long, -1 short), entry (the close) and ATR.

* Stop: the structure a long is invalidated below is the nearer of the latest swing low under the entry (the
  last such row of the swing table, active or not, as ``_stop`` reads it) and the highest bottom of an active
  bullish order block under the entry; shorts mirror this.
* First target: the target list is sorted by distance, so its first price is the nearest accepted level:
  ``(price - entry) · side > min_target_atr · ATR``. That test is monotone in the price, so it is turned into
  the exact float bound it implies and the nearest level beyond the bound is looked up among the Fibonacci
  levels of the bar's leg and the active liquidity of the bar (swings, equal highs/lows, previous day/week).
  Distinct prices on one side of the entry are at distinct float distances from it (their differences with
  the entry are exact unless a level lies beyond twice the entry), so no tie on distance can reorder them.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from app.analytics.rangequery import NOT_FOUND
from app.analytics.series.components import FibonacciLegs
from app.analytics.series.intervals import alive_predecessor, alive_span, alive_successor, known_count, last_row_beyond
from app.analytics.signals import SignalParams
from app.analytics.smc import SmcResult
from app.analytics.types import Candles, FloatArray, IntArray

# The bound starts within an ulp or two of the exact answer; more steps than this means a logic error.
_MAX_BOUND_STEPS = 64


def _nearest_structure(smc: SmcResult, candles: Candles, at: IntArray, side: FloatArray) -> FloatArray:
    """Per row: the stop's structure level (NaN when there is none)."""
    entry, bars = candles.close[at], len(candles)
    level = np.full(at.shape, np.nan)
    swings, blocks = smc.swings, smc.order_blocks
    for bias in (1, -1):
        rows = np.flatnonzero(side == bias)
        if rows.size == 0:
            continue
        x = entry[rows]
        # A long is invalidated below the latest swing low under the entry, a short above the latest high.
        lows = np.flatnonzero(swings.direction == -bias)
        known = known_count(swings.confirmed_index[lows], bars)[at[rows]]
        found, swing_level = last_row_beyond(swings.top[lows], known, x, above=bias < 0)
        chosen = np.where(found != NOT_FOUND, swing_level, np.nan)
        own = blocks.select(blocks.direction == bias)
        start, stop = alive_span(own, candles.close_time)
        if bias > 0:  # the highest bullish block bottom strictly under the entry
            block = alive_predecessor(start, stop, own.bottom, bars, at[rows], np.nextafter(x, -np.inf))
            chosen = np.fmax(chosen, block)
        else:
            block = alive_successor(start, stop, own.top, bars, at[rows], np.nextafter(x, np.inf))
            chosen = np.fmin(chosen, block)
        level[rows] = chosen
    return level


def stops(
    candles: Candles, at: IntArray, side: FloatArray, atr: FloatArray, params: SignalParams, smc: SmcResult | None
) -> FloatArray:
    entry = candles.close[at]
    level = np.full(at.shape, np.nan) if smc is None else _nearest_structure(smc, candles, at, side)
    beyond = level - side * params.stop_atr_buffer * atr
    fallback = entry - side * params.fallback_stop_atr * atr
    result: FloatArray = np.where(np.isnan(level), fallback, beyond)
    return result


def target_bound(entry: FloatArray, distance: FloatArray, side: FloatArray) -> FloatArray:
    """The accepted price nearest the entry: for a long the smallest ``p`` with ``(p - entry) · 1 > distance``,
    for a short the largest with ``(p - entry) · -1 > distance``, in float arithmetic."""

    def accepted(price: FloatArray) -> NDArray[np.bool_]:
        result: NDArray[np.bool_] = (price - entry) * side > distance
        return result

    inward = np.where(side > 0, -np.inf, np.inf)
    bound = entry + side * distance
    for _ in range(_MAX_BOUND_STEPS):
        ok = accepted(bound)
        nearer = np.nextafter(bound, inward)
        step_in = ok & accepted(nearer)
        step_out = ~ok
        if not (step_in.any() or step_out.any()):
            return bound
        bound = np.where(step_in, nearer, np.where(step_out, np.nextafter(bound, -inward), bound))
    raise AssertionError("target bound did not converge")  # pragma: no cover - float arithmetic is monotone


def first_targets(
    candles: Candles,
    at: IntArray,
    side: FloatArray,
    atr: FloatArray,
    params: SignalParams,
    smc: SmcResult | None,
    fibonacci: FibonacciLegs | None,
) -> FloatArray:
    entry, bars = candles.close[at], len(candles)
    bound = target_bound(entry, params.min_target_atr * atr, side)
    best = np.where(side > 0, np.inf, -np.inf)
    if fibonacci is not None and fibonacci.levels.shape[0]:
        rows = np.flatnonzero(fibonacci.leg[at] >= 0)
        levels = fibonacci.levels[fibonacci.leg[at[rows]]]
        row_side = side[rows][:, None]
        accepted = (levels - entry[rows][:, None]) * row_side > (params.min_target_atr * atr[rows])[:, None]
        nearest_up = np.where(accepted, levels, np.inf).min(axis=1)
        nearest_down = np.where(accepted, levels, -np.inf).max(axis=1)
        best[rows] = np.where(side[rows] > 0, nearest_up, nearest_down)
    if smc is not None:
        tables = (smc.swings, smc.liquidity, smc.previous_levels)
        for bias in (1, -1):
            rows = np.flatnonzero(side == bias)
            if rows.size == 0:
                continue
            spans = [alive_span(table.select(table.direction == bias), candles.close_time) for table in tables]
            start = np.concatenate([span[0] for span in spans])
            stop = np.concatenate([span[1] for span in spans])
            price = np.concatenate([table.top[table.direction == bias] for table in tables])
            if bias > 0:
                found = alive_successor(start, stop, price, bars, at[rows], bound[rows])
                best[rows] = np.fmin(best[rows], found)
            else:
                found = alive_predecessor(start, stop, price, bars, at[rows], bound[rows])
                best[rows] = np.fmax(best[rows], found)
    result: FloatArray = np.where(np.isfinite(best), best, np.nan)
    return result
