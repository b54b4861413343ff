"""Per-bar queries over rows that are alive during a span of bars, answered for every bar at once.

A row (an order block, a liquidity level …) is alive at bar ``t`` when ``start <= t < stop``: ``start`` is the
bar whose close made it known and ``stop`` the first bar that broke or swept it (the bar count when none did).
The signal needs, at every bar, aggregates over the rows alive then — the highest zone top, the nearest level
beyond a price. A loop over bars would cost O(bars x rows); these answer all bars in O((bars + rows) log bars)
vectorised steps:

* :func:`alive_max` — the maximum over alive rows, by range "max-assignment" on power-of-two blocks (the sparse
  table of ``rangequery`` run in reverse: each span is written into the two blocks covering it, then pushed down);
* :func:`alive_successor` — the smallest value at or above a per-query threshold among rows alive at the query's
  bar, by the classic segment-tree decomposition of each span into O(log bars) nodes, one sorted key array of
  ``(node, value rank)`` and one ``searchsorted`` per tree level.

Every result is one of the input values, never arithmetic on them, so answers are exact.
"""

from __future__ import annotations

import numpy as np

from app.analytics.events import NO_TIME, EventTable
from app.analytics.rangequery import NOT_FOUND, MaxTable
from app.analytics.types import FloatArray, IntArray


def known_count(confirmed_index: IntArray, bars: int) -> IntArray:
    """For every bar ``t``, how many rows (sorted by ``confirmed_index``) were confirmed at or before ``t``."""
    counts: IntArray = np.searchsorted(confirmed_index, np.arange(bars, dtype=np.int64), side="right")
    return counts


def end_bar(times: IntArray, close_time: IntArray) -> IntArray:
    """Bar position of each lifecycle time; rows whose event never happened end after the last bar."""
    positions = np.searchsorted(close_time, times).astype(np.int64)
    result: IntArray = np.where(times == NO_TIME, close_time.shape[0], positions)
    return result


def alive_span(events: EventTable, close_time: IntArray) -> tuple[IntArray, IntArray]:
    """``[start, stop)`` bars during which each row is active (confirmed, neither broken nor swept)."""
    stop = np.minimum(end_bar(events.broken_time, close_time), end_bar(events.swept_time, close_time))
    return events.confirmed_index.astype(np.int64), stop


def alive_max(start: IntArray, stop: IntArray, value: FloatArray, bars: int) -> FloatArray:
    """``out[t] = max(value[i] for rows alive at t)``; ``-inf`` where no row is alive."""
    keep = stop > start
    start, stop, value = start[keep], stop[keep], np.asarray(value, dtype=np.float64)[keep]
    out = np.full(bars, -np.inf)
    if start.size == 0 or bars == 0:
        return out
    length = stop - start
    level = np.zeros(length.shape, dtype=np.int64)
    while True:  # floor(log2(length)) in integers: bit shifts, no float rounding
        grow = (length >> (level + 1)) > 0
        if not grow.any():
            break
        level += grow
    top = int(level.max())
    # blocks[k][i] holds the maximum assigned to bars i .. i + 2**k - 1.
    blocks = [np.full(bars - (1 << k) + 1, -np.inf) for k in range(top + 1)]
    for k in range(top + 1):
        rows = level == k
        if rows.any():
            np.maximum.at(blocks[k], start[rows], value[rows])
            np.maximum.at(blocks[k], stop[rows] - (1 << k), value[rows])
    for k in range(top, 0, -1):
        upper, lower, half = blocks[k], blocks[k - 1], 1 << (k - 1)
        size = upper.shape[0]
        np.maximum(lower[:size], upper, out=lower[:size])
        np.maximum(lower[half : half + size], upper, out=lower[half : half + size])
    np.maximum(out, blocks[0], out=out)
    return out


def alive_min(start: IntArray, stop: IntArray, value: FloatArray, bars: int) -> FloatArray:
    """``out[t] = min(value[i] for rows alive at t)``; ``+inf`` where no row is alive."""
    result: FloatArray = -alive_max(start, stop, -np.asarray(value, dtype=np.float64), bars)
    return result


def alive_successor(
    start: IntArray, stop: IntArray, value: FloatArray, bars: int, at: IntArray, threshold: FloatArray
) -> FloatArray:
    """Per query ``q``: the smallest ``value`` ``>= threshold[q]`` among rows alive at bar ``at[q]``; NaN if none."""
    keep = stop > start
    start, stop, value = start[keep], stop[keep], np.asarray(value, dtype=np.float64)[keep]
    result = np.full(at.shape, np.nan)
    if start.size == 0 or at.size == 0:
        return result
    distinct = np.unique(value)
    width = np.int64(distinct.shape[0] + 1)  # key = node · width + rank; rank < width
    rank = np.searchsorted(distinct, value).astype(np.int64)
    # Iterative segment tree over the bars (leaves bars .. 2·bars - 1): each span splits into O(log bars) nodes.
    nodes, ranks = [], []
    low, high = start + bars, stop + bars
    while True:
        open_ = low < high
        if not open_.any():
            break
        left = open_ & (low & 1 == 1)
        nodes.append(low[left])
        ranks.append(rank[left])
        low = low + left
        right = open_ & (high & 1 == 1)
        high = high - right
        nodes.append(high[right])
        ranks.append(rank[right])
        low, high = low >> 1, high >> 1
    node = np.concatenate(nodes)
    keys = np.sort(node * width + np.concatenate(ranks))
    has_rows = np.zeros(2 * bars, dtype=bool)
    has_rows[node] = True
    wanted = np.searchsorted(distinct, np.asarray(threshold, dtype=np.float64), side="left").astype(np.int64)
    best = np.full(at.shape, width, dtype=np.int64)
    ancestor = np.asarray(at, dtype=np.int64) + bars
    while True:  # a leaf's covering nodes are its ancestors: one vectorised lookup per tree level
        live = ancestor > 0
        if not live.any():
            break
        ask = np.flatnonzero(live & has_rows[np.where(live, ancestor, 0)])
        if ask.size:
            position = np.searchsorted(keys, ancestor[ask] * width + wanted[ask])
            found = position < keys.shape[0]
            ask, key = ask[found], keys[position[found]]
            same_node = key // width == ancestor[ask]
            ask, key = ask[same_node], key[same_node]
            best[ask] = np.minimum(best[ask], key % width)
        ancestor = ancestor >> 1
    hit = best < distinct.shape[0]
    result[hit] = distinct[best[hit]]
    return result


def alive_predecessor(
    start: IntArray, stop: IntArray, value: FloatArray, bars: int, at: IntArray, threshold: FloatArray
) -> FloatArray:
    """Per query ``q``: the largest ``value`` ``<= threshold[q]`` among rows alive at bar ``at[q]``; NaN if none."""
    negated = -np.asarray(value, dtype=np.float64)
    result: FloatArray = -alive_successor(start, stop, negated, bars, at, -np.asarray(threshold, dtype=np.float64))
    return result


def last_row_beyond(
    value: FloatArray, known: IntArray, threshold: FloatArray, above: bool
) -> tuple[IntArray, FloatArray]:
    """Per query: the last of the first ``known[q]`` rows whose value is above (``above``) or below ``threshold``.

    Returns the row (``NOT_FOUND`` when none) and its value (NaN when none). Binary lifting over the reversed
    column turns "last row before k" into ``rangequery``'s "first index from k on".
    """
    count = value.shape[0]
    rows = np.full(known.shape, NOT_FOUND, dtype=np.int64)
    values = np.full(known.shape, np.nan)
    if count == 0 or known.size == 0:
        return rows, values
    reversed_values = np.ascontiguousarray(value[::-1])
    start = count - known
    if above:
        found = MaxTable(reversed_values).first_above(start, threshold)
    else:
        found = MaxTable(-reversed_values).first_above(start, -np.asarray(threshold, dtype=np.float64))
    hit = found != NOT_FOUND
    rows[hit] = count - 1 - found[hit]
    values[hit] = value[rows[hit]]
    return rows, values
