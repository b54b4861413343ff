"""Component scores at every bar: what ``signals``' component functions return for a run ending at that bar.

The module results come from one run over the whole series; their events are causal (an event confirmed at bar
``t`` and its lifecycle up to ``t`` are exactly what a run over bars ``0..t`` reports, see ``EventTable.as_of``),
so "as of bar t" is a filter on confirmation and lifecycle bars. The arithmetic repeats ``signals``' expressions
operation for operation, so every score is bit-identical to ``compute_signal``'s on the prefix.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

from app.analytics.cvd import CvdResult
from app.analytics.events import EventTable
from app.analytics.fibonacci import FibonacciParams
from app.analytics.indicators import IndicatorResult
from app.analytics.series.intervals import alive_max, alive_min, alive_span, known_count
from app.analytics.smc import SmcResult
from app.analytics.swings import Swings
from app.analytics.types import Candles, FloatArray, IntArray


def latest_direction(events: EventTable, bars: int) -> FloatArray:
    """Direction of the last row confirmed at or before each bar (0 before the first)."""
    if len(events) == 0:
        return np.zeros(bars)
    count = known_count(events.confirmed_index, bars)
    result: FloatArray = np.where(count > 0, events.direction[np.maximum(count - 1, 0)], 0).astype(np.float64)
    return result


def recent_direction(events: EventTable, since_index: IntArray) -> FloatArray:
    """``signals._recent_direction``: the direction of the latest row when it was confirmed since ``since``."""
    bars = since_index.shape[0]
    if len(events) == 0:
        return np.zeros(bars)
    count = known_count(events.confirmed_index, bars)
    last = np.maximum(count - 1, 0)
    recent = (count > 0) & (events.confirmed_index[last] >= since_index)
    result: FloatArray = np.where(recent, events.direction[last], 0).astype(np.float64)
    return result


def _close_inside(zones: EventTable, close: FloatArray, close_time: IntArray, direction: int) -> NDArray[np.bool_]:
    """Whether the close sits inside an active zone of ``direction`` (``signals._inside``), per bar.

    A bullish zone is broken by the first later close below its bottom, so while it is active every later close
    is at or above the bottom and "inside" reduces to "at or below its top": the highest top among the active
    zones decides. On the confirmation bar itself the bottom is checked explicitly. Bearish zones mirror this.
    """
    bars = close.shape[0]
    rows = zones.direction == direction
    start, stop = alive_span(zones.select(rows), close_time)
    top, bottom = zones.top[rows], zones.bottom[rows]
    if direction > 0:
        start = start + (bottom > close[start])  # on its own bar a zone counts only when the close is above it
        result: NDArray[np.bool_] = alive_max(start, stop, top, bars) >= close
    else:
        start = start + (top < close[start])
        result = alive_min(start, stop, bottom, bars) <= close
    return result


def smc_scores(smc: SmcResult, candles: Candles) -> FloatArray:
    close, close_time, bars = candles.close, candles.close_time, len(candles)
    trend_score = latest_direction(smc.structure, bars)
    zone = np.zeros(bars)
    for direction in (1, -1):
        inside = _close_inside(smc.order_blocks, close, close_time, direction)
        inside |= _close_inside(smc.fair_value_gaps, close, close_time, direction)
        zone = zone + np.where(inside, float(direction), 0.0)
    result: FloatArray = 0.6 * trend_score + 0.4 * zone
    return result


def indicator_scores(result: IndicatorResult, close: FloatArray) -> FloatArray:
    ema, hist, rsi = result.ema, result.macd_hist, result.rsi
    parts = [
        (np.isfinite(ema), np.where(close > ema, 1.0, np.where(close < ema, -1.0, 0.0))),
        (np.isfinite(hist), np.sign(hist)),
        (np.isfinite(rsi), (rsi - 50.0) / 50.0),
    ]
    total = np.zeros(close.shape[0])
    count = np.zeros(close.shape[0])
    for present, part in parts:  # sum(parts) in order; a missing part adds 0.0, which changes no sum
        total = total + np.where(present, part, 0.0)
        count += present
    with np.errstate(invalid="ignore", divide="ignore"):
        scores: FloatArray = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    return scores


def window_sums(values: FloatArray, lookback: int) -> FloatArray:
    """``np.sum(values[max(0, t - lookback + 1) : t + 1])`` for every ``t``, rounded exactly like ``np.sum``.

    Each full window is summed by ``np.sum``'s own pairwise routine (a reduction over the last axis of a
    sliding view); the shorter windows at the start are summed one by one.
    """
    bars = values.shape[0]
    sums = np.empty(bars)
    for end in range(min(lookback - 1, bars)):
        sums[end] = np.sum(values[: end + 1])
    if bars >= lookback:
        sums[lookback - 1 :] = sliding_window_view(values, lookback).sum(axis=1)
    return sums


def cvd_scores(cvd: CvdResult, lookback: int, since_index: IntArray) -> FloatArray:
    delta = window_sums(cvd.delta, lookback)
    volume = window_sums(cvd.buy_volume + cvd.sell_volume, lookback)
    with np.errstate(invalid="ignore", divide="ignore"):
        pressure = np.where(volume > 0, np.clip(2 * delta / np.where(volume > 0, volume, 1.0), -1, 1), 0.0)
    result: FloatArray = 0.7 * pressure + 0.3 * recent_direction(cvd.divergences, since_index)
    return result


def orderflow_scores(
    absorption: EventTable, close: FloatArray, value_low: FloatArray, value_high: FloatArray, since_index: IntArray
) -> FloatArray:
    placement = np.where(close > value_high, 1.0, np.where(close < value_low, -1.0, 0.0))
    result: FloatArray = 0.6 * recent_direction(absorption, since_index) + 0.4 * placement
    return result


class FibonacciLegs:
    """The Fibonacci levels a run ending at each bar computed: one leg per confirmed swing.

    ``fibonacci_from_swings`` anchors on the latest confirmed swing and the opposite swings pivoting before it,
    so the levels change only when a swing is confirmed: they are computed once per swing (``levels`` holds
    retracements, extensions and projections, NaN where absent) and looked up per bar through ``leg``.
    """

    def __init__(self, swings: Swings, params: FibonacciParams, bars: int) -> None:
        index, high, price = swings.index, swings.is_high, swings.price
        previous = np.full(index.shape[0], -1, dtype=np.int64)
        for side in (True, False):  # latest swing of the other side pivoting strictly before each swing
            rows = np.flatnonzero(high == side)
            others = np.flatnonzero(high != side)
            if others.size:
                before = np.searchsorted(index[others], index[rows], side="left")
                previous[rows] = np.where(before > 0, others[np.maximum(before - 1, 0)], -1)
        second = previous
        third = np.where(second >= 0, previous[np.maximum(second, 0)], -1)
        up = high
        last_price, second_price = price, price[np.maximum(second, 0)]
        top = np.where(up, last_price, second_price)[:, None]
        bottom = np.where(up, second_price, last_price)[:, None]
        span = top - bottom
        retracement = np.asarray(params.retracements, dtype=np.float64)[None, :]
        extension = np.asarray(params.extensions, dtype=np.float64)[None, :]
        upward = up[:, None]
        self.retracements = np.where(upward, top - retracement * span, bottom + retracement * span)
        extensions = np.where(upward, bottom + extension * span, top - extension * span)
        a = price[np.maximum(third, 0)][:, None]
        projections = np.where(
            (third >= 0)[:, None], last_price[:, None] + extension * (second_price[:, None] - a), np.nan
        )
        self.levels = np.concatenate((self.retracements, extensions, projections), axis=1)
        count = known_count(swings.confirmed_index, bars)
        leg = np.maximum(count - 1, 0)
        valid = np.zeros(bars, dtype=bool)
        if index.shape[0]:
            valid = (count > 0) & (second[leg] >= 0)
        self.leg = np.where(valid, leg, -1)  # -1: no completed leg yet
        self.side = np.where(valid, np.where(up[leg] if index.shape[0] else False, 1.0, -1.0), 0.0)
        ratios = np.asarray(params.retracements)
        self.pocket = np.flatnonzero((ratios >= 0.5) & (ratios <= 0.786))

    def scores(self, close: FloatArray) -> FloatArray:
        result = np.zeros(close.shape[0])
        if self.pocket.size == 0 or self.retracements.shape[0] == 0:
            return result
        rows = np.flatnonzero(self.leg >= 0)
        pocket = self.retracements[self.leg[rows]][:, self.pocket]
        inside = (pocket.min(axis=1) <= close[rows]) & (close[rows] <= pocket.max(axis=1))
        result[rows] = np.where(inside, self.side[rows], 0.0)
        return result
