"""Liquidity levels: equal highs/lows (resting stops) and the previous UTC day's and week's high and low.

Equal highs: two consecutive confirmed swing highs whose prices differ by at most ``k · ATR`` (ATR taken at the
second swing's confirmation bar) with no higher high between the two pivots. The pool's level is the higher of
the two; it is confirmed with the second swing, swept when a later wick trades above it and broken when a later
close does. Equal lows mirror this. Overlapping pairs (three equal highs) give two rows rather than one growing
row, because a row must never change after it was reported.

Previous day/week levels: a UTC period's high and low, confirmed at the close of the first bar closing at or
after the period's end (so a live run knows them exactly when a replay does).
"""

from __future__ import annotations

import numpy as np

from app.analytics.events import EventTable, build_events
from app.analytics.rangequery import PriceTables, first_beyond
from app.analytics.swings import LEVEL_DIRECTIONS, Swings
from app.analytics.types import MS_PER_DAY, MS_PER_WEEK, Candles, FloatArray, IntArray, utc_day_start, utc_week_start

EQUAL_KINDS = ("equal_highs", "equal_lows")
PERIOD_KINDS = ("prev_day_high", "prev_day_low", "prev_week_high", "prev_week_low")


def _equal_pairs(
    swings: Swings, want_high: bool, tolerance: FloatArray, tables: PriceTables
) -> tuple[IntArray, IntArray, FloatArray]:
    """Anchor bar, confirmation bar and pool level of every equal-highs (or equal-lows) pair."""
    side = swings.is_high == want_high
    index, confirmed, price = swings.index[side], swings.confirmed_index[side], swings.price[side]
    if index.shape[0] < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0)
    first, second = price[:-1], price[1:]
    within = np.abs(second - first) <= tolerance[confirmed[1:]]
    if want_high:
        level = np.maximum(first, second)
        clean = tables.high_max.range_max(index[:-1] + 1, index[1:]) <= level
    else:
        level = np.minimum(first, second)
        clean = tables.low_min.range_min(index[:-1] + 1, index[1:]) >= level
    keep = within & clean
    return index[:-1][keep], confirmed[1:][keep], level[keep]


def equal_levels(
    candles: Candles, swings: Swings, atr: FloatArray, atr_multiple: float, tables: PriceTables
) -> EventTable:
    """Equal highs and equal lows (see the module docstring); no pools before ATR has a value."""
    tolerance = atr_multiple * np.nan_to_num(atr, nan=-1.0)  # a negative tolerance matches nothing
    high_anchor, high_confirmed, high_level = _equal_pairs(swings, True, tolerance, tables)
    low_anchor, low_confirmed, low_level = _equal_pairs(swings, False, tolerance, tables)
    upward = np.concatenate((np.ones(high_anchor.shape[0], bool), np.zeros(low_anchor.shape[0], bool)))
    confirmed = np.concatenate((high_confirmed, low_confirmed))
    level = np.concatenate((high_level, low_level))
    after = confirmed + 1
    return build_events(
        close_time=candles.close_time,
        open_time=candles.open_time,
        kinds=EQUAL_KINDS,
        direction_names=LEVEL_DIRECTIONS,
        zone=False,
        kind=np.where(upward, 0, 1),
        direction=np.where(upward, 1, -1),
        anchor_index=np.concatenate((high_anchor, low_anchor)),
        confirmed_index=confirmed,
        top=level,
        swept_index=first_beyond(tables.high_max, tables.low_min, after, level, upward),
        broken_index=first_beyond(tables.close_max, tables.close_min, after, level, upward),
    )


def previous_period_levels(candles: Candles, tables: PriceTables) -> EventTable:
    """High and low of every completed UTC day and ISO week (see the module docstring)."""
    close_time = candles.close_time
    anchors, confirms, levels, upward, kinds = [], [], [], [], []
    for period_start, length, kind_offset in ((utc_day_start, MS_PER_DAY, 0), (utc_week_start, MS_PER_WEEK, 2)):
        group = period_start(candles.open_time)
        all_starts = np.flatnonzero(np.concatenate(([True], group[1:] != group[:-1])))
        confirm = np.searchsorted(close_time, group[all_starts] + length, side="left")
        complete = confirm < len(candles)  # the last period may still be running
        starts, confirm = all_starts[complete], confirm[complete]
        period_high = np.maximum.reduceat(candles.high, all_starts)[complete]
        period_low = np.minimum.reduceat(candles.low, all_starts)[complete]
        for is_high, values, kind in ((True, period_high, kind_offset), (False, period_low, kind_offset + 1)):
            anchors.append(starts)
            confirms.append(confirm)
            levels.append(values)
            upward.append(np.full(starts.shape[0], is_high))
            kinds.append(np.full(starts.shape[0], kind))
    anchor, confirmed, level = np.concatenate(anchors), np.concatenate(confirms), np.concatenate(levels)
    up = np.concatenate(upward)
    after = confirmed + 1
    return build_events(
        close_time=close_time,
        open_time=candles.open_time,
        kinds=PERIOD_KINDS,
        direction_names=LEVEL_DIRECTIONS,
        zone=False,
        kind=np.concatenate(kinds),
        direction=np.where(up, 1, -1),
        anchor_index=anchor,
        confirmed_index=confirmed,
        top=level,
        swept_index=first_beyond(tables.high_max, tables.low_min, after, level, up),
        broken_index=first_beyond(tables.close_max, tables.close_min, after, level, up),
    )
