"""Footprint: per bar and price level, bid volume (taker sells) and ask volume (taker buys).

Binning rule: a trade at price ``p`` belongs to level ``floor(p / tick · (1 + 1e-12))``, i.e. level ``k`` covers
``[k · tick, (k + 1) · tick)``; the tiny relative nudge keeps prices that sit exactly on a level (100.3 with tick
0.1 divides to 1002.9999…) on that level. Only levels that traded are stored; a gap inside a bar's range counts as
a level with zero volume.

Diagonal imbalances (ratio ``R``, minimum volume ``m``): ask imbalance at ``p`` when ``ask[p] ≥ R · bid[p - tick]``,
bid imbalance at ``p`` when ``bid[p] ≥ R · ask[p + tick]``; the imbalanced side must be positive and ``≥ m``.
The lowest traded level of a bar has no ask imbalance and the highest no bid imbalance (no diagonal neighbour).
Stacked imbalance: at least ``stacked_min_levels`` consecutive levels with same-side imbalances, a zone
``[lowest, highest]`` level price.

Bar POC: the level with the most volume; ties go to the level nearest the middle of the bar's traded range,
then to the lower price.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from app.analytics.types import FloatArray, IntArray, weighted_counts

BoolArray = NDArray[np.bool_]


def level_index(price: FloatArray, tick: float) -> IntArray:
    return np.floor(np.asarray(price, dtype=np.float64) / tick * (1 + 1e-12)).astype(np.int64)


def level_price(level: IntArray, tick: float) -> FloatArray:
    """Level prices rounded to the tick's precision (1005 · 0.1 would otherwise print as 100.50000000000001)."""
    decimals = min(12, max(0, math.ceil(-math.log10(tick)) + 2))
    return np.round(np.asarray(level, dtype=np.float64) * tick, decimals)


def nice_tick(reference_price: float) -> float:
    """A 1-2-5 step close to one basis point of the reference price, the default footprint tick."""
    return _one_two_five(abs(reference_price) * 1e-4, up=False)


def tick_for_rows(spread: float, rows: int) -> float:
    """The smallest 1-2-5 step (…, 0.1, 0.2, 0.5, 1, 2, 5, …) that divides ``spread`` into at most ``rows`` rows.

    The default profile tick. A round step rather than ``spread / rows``: the levels sit on round prices, and the
    tick changes only when the range crosses a step, not with every new high or low, so the value area of earlier
    bars is not re-binned each time and the per-bar series stays a single pass (see :mod:`app.analytics.series`)."""
    return _one_two_five(spread / rows, up=True)


def _one_two_five(target: float, *, up: bool) -> float:
    """The 1-2-5 step (…, 0.1, 0.2, 0.5, 1, 2, 5, …) nearest `target`: the smallest at or above it when `up`, else the
    largest at or below it. Rounded to 12 significant digits, so 0.1 is 0.1 and not 0.1000000000000000055…."""
    target = max(target, 1e-12)
    power = 10.0 ** math.floor(math.log10(target))
    if up:
        return next(float(f"{step * power:.12g}") for step in (1.0, 2.0, 5.0, 10.0) if step * power >= target)
    return next(float(f"{step * power:.12g}") for step in (5.0, 2.0, 1.0) if step * power <= target)


@dataclass(frozen=True, slots=True, eq=False)
class Footprint:
    """Rows sorted by bar then level; ``offsets[b]:offsets[b + 1]`` are bar ``b``'s rows (CSR layout)."""

    tick: float
    bar_open_time: IntArray
    offsets: IntArray
    level: IntArray
    price: FloatArray
    bid: FloatArray
    ask: FloatArray
    ask_imbalance: BoolArray
    bid_imbalance: BoolArray
    bar_volume: FloatArray
    bar_delta: FloatArray
    bar_poc: FloatArray  # NaN for bars without trades
    zone_bar: IntArray
    zone_side: NDArray[np.int8]  # +1 ask (buyers), -1 bid (sellers)
    zone_low: FloatArray
    zone_high: FloatArray

    def to_dict(self) -> list[dict[str, Any]]:
        price, bid, ask = self.price.tolist(), self.bid.tolist(), self.ask.tolist()
        ask_imbalance, bid_imbalance = self.ask_imbalance.tolist(), self.bid_imbalance.tolist()
        zones: list[list[dict[str, Any]]] = [[] for _ in range(self.bar_open_time.shape[0])]
        for bar, side, low, high in zip(
            self.zone_bar.tolist(),
            self.zone_side.tolist(),
            self.zone_low.tolist(),
            self.zone_high.tolist(),
            strict=True,
        ):
            zones[bar].append({"side": "ask" if side > 0 else "bid", "low": low, "high": high})
        bars = []
        for bar, open_time in enumerate(self.bar_open_time.tolist()):
            rows = range(int(self.offsets[bar]), int(self.offsets[bar + 1]))
            poc = float(self.bar_poc[bar])
            bars.append({
                "open_time": open_time,
                "volume": float(self.bar_volume[bar]),
                "delta": float(self.bar_delta[bar]),
                "poc": poc if math.isfinite(poc) else None,
                "levels": [
                    {"price": price[r], "bid": bid[r], "ask": ask[r], "delta": ask[r] - bid[r],
                     "ask_imbalance": ask_imbalance[r], "bid_imbalance": bid_imbalance[r]}
                    for r in rows
                ],
                "stacked_imbalances": zones[bar],
            })  # fmt: skip
        return bars


def _stacked_runs(flag: BoolArray, continues: BoolArray, minimum: int) -> tuple[IntArray, IntArray]:
    """First and last row of every run of flagged rows at least ``minimum`` long."""
    starts = flag & ~(continues & np.concatenate(([False], flag[:-1])))
    run = np.cumsum(starts) - 1
    flagged = np.flatnonzero(flag)
    if flagged.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    lengths = np.bincount(run[flagged])
    first = np.flatnonzero(starts)
    long_enough = lengths >= minimum
    return first[long_enough], (first + lengths - 1)[long_enough]


def build_footprint(
    bar: IntArray,
    level: IntArray,
    bid: FloatArray,
    ask: FloatArray,
    *,
    bar_open_time: IntArray,
    tick: float,
    ratio: float = 3.0,
    min_volume: float = 0.0,
    stacked_min_levels: int = 3,
) -> Footprint:
    """Imbalances, stacked zones and per-bar totals from rows already sorted by (bar, level) and unique."""
    bar_count = bar_open_time.shape[0]
    same_bar_below = np.concatenate(([False], bar[1:] == bar[:-1]))
    adjacent_below = same_bar_below & np.concatenate(([False], level[1:] == level[:-1] + 1))
    same_bar_above = np.concatenate((same_bar_below[1:], [False]))
    adjacent_above = np.concatenate((adjacent_below[1:], [False]))
    bid_below = np.where(adjacent_below, np.concatenate(([0.0], bid[:-1])), 0.0)
    ask_above = np.where(adjacent_above, np.concatenate((ask[1:], [0.0])), 0.0)
    ask_imbalance = same_bar_below & (ask > 0) & (ask >= min_volume) & (ask >= ratio * bid_below)
    bid_imbalance = same_bar_above & (bid > 0) & (bid >= min_volume) & (bid >= ratio * ask_above)
    zone_parts = []
    for side, flag in ((1, ask_imbalance), (-1, bid_imbalance)):
        first, last = _stacked_runs(flag, adjacent_below, stacked_min_levels)
        zone_parts.append((bar[first], np.full(first.shape[0], side, np.int8), level[first], level[last]))
    zone_bar = np.concatenate([part[0] for part in zone_parts])
    order = np.argsort(zone_bar, kind="stable")
    volume = bid + ask
    offsets = np.searchsorted(bar, np.arange(bar_count + 1))
    bar_poc = np.full(bar_count, np.nan)
    if bar.size:
        low_level = level[offsets[bar]]
        high_level = level[offsets[bar + 1] - 1]
        distance_to_centre = np.abs(2 * level - low_level - high_level)
        best = np.lexsort((level, distance_to_centre, -volume, bar))
        first_of_bar = best[np.concatenate(([True], bar[best][1:] != bar[best][:-1]))]
        bar_poc[bar[first_of_bar]] = level_price(level[first_of_bar], tick)
    return Footprint(
        tick=tick,
        bar_open_time=bar_open_time,
        offsets=offsets,
        level=level,
        price=level_price(level, tick),
        bid=bid,
        ask=ask,
        ask_imbalance=ask_imbalance,
        bid_imbalance=bid_imbalance,
        bar_volume=weighted_counts(bar, volume, bar_count),
        bar_delta=weighted_counts(bar, ask - bid, bar_count),
        bar_poc=bar_poc,
        zone_bar=zone_bar[order],
        zone_side=np.concatenate([part[1] for part in zone_parts])[order],
        zone_low=level_price(np.concatenate([part[2] for part in zone_parts])[order], tick),
        zone_high=level_price(np.concatenate([part[3] for part in zone_parts])[order], tick),
    )


def footprint_from_trades(
    bar: IntArray,
    price: FloatArray,
    qty: FloatArray,
    side: NDArray[np.int8],
    *,
    bar_open_time: IntArray,
    tick: float,
    ratio: float = 3.0,
    min_volume: float = 0.0,
    stacked_min_levels: int = 3,
) -> Footprint:
    """Bin trades (already assigned to bars) into levels and build the footprint."""
    level = level_index(price, tick)
    if level.size:
        base = int(level.min())
        span = int(level.max()) - base + 1
        key = bar * span + (level - base)
    else:
        base, span, key = 0, 1, np.zeros(0, dtype=np.int64)
    unique_key, row = np.unique(key, return_inverse=True)
    rows = unique_key.shape[0]
    return build_footprint(
        unique_key // span,
        unique_key % span + base,
        weighted_counts(row, np.where(side < 0, qty, 0.0), rows),
        weighted_counts(row, np.where(side > 0, qty, 0.0), rows),
        bar_open_time=bar_open_time,
        tick=tick,
        ratio=ratio,
        min_volume=min_volume,
        stacked_min_levels=stacked_min_levels,
    )
