"""Smart-money concepts: swings, fair value gaps, BOS/CHoCH, order blocks, liquidity, previous day/week levels.

Every event is causal: it is emitted at the close of the bar that makes it knowable (``confirmed_time``) and
its lifecycle times are the closes of later bars, so a run over the first ``t`` bars reproduces exactly the
events of a full run confirmed by then (see ``EventTable.as_of``).

* Fair value gap: bullish at bar ``i`` when ``high[i-2] < low[i]``, zone ``[high[i-2], low[i]]`` (bearish
  mirrored), anchored on the middle bar. Mitigated when a later bar trades back into the zone, broken when a
  later close goes through its far side. Gaps smaller than ``fvg_min_size_atr · ATR`` are ignored.
* Structure: the reference levels are the latest confirmed swing high and swing low. A close above the
  reference high (while it is still the latest) is a bullish break: CHoCH when the previous break was bearish,
  BOS otherwise (the first break has no prevailing structure and counts as BOS). Each swing breaks at most once.
* Order block: for a bullish break of the swing high at bar ``p`` by the close of bar ``b``, the move that made
  the break starts at the lowest low of bars ``p..b``; the block is the last bearish candle (close < open) at or
  before that low and not before ``p`` (the low's own candle when there is none); zone = its low..high.
  Mitigated when a later bar trades into the zone, broken (invalidated) when a later close goes below it.
  Mirrored for bearish blocks. Two breaks selecting the same candle yield one block (the first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from app.analytics.bounds import bounded, check_bounds
from app.analytics.events import EventTable, build_events
from app.analytics.indicators import atr as wilder_atr
from app.analytics.liquidity import equal_levels, previous_period_levels
from app.analytics.rangequery import (
    NOT_FOUND,
    PriceTables,
    at_or_above,
    at_or_below,
    first_beyond,
    last_true_at_or_before,
)
from app.analytics.swings import Swings, detect_swings, swing_events
from app.analytics.types import Candles, FloatArray, IntArray

ZONE_DIRECTIONS = ("bullish", "bearish")
FVG_KINDS = ("fvg",)
STRUCTURE_KINDS = ("bos", "choch")
ORDER_BLOCK_KINDS = ("order_block",)


@dataclass(frozen=True, slots=True)
class SmcParams:
    swing_length: int = bounded(5, ge=1, le=500)
    fvg_min_size_atr: float = bounded(0.0, ge=0, le=100)
    liquidity_atr_multiple: float = bounded(0.1, gt=0, le=10)
    atr_period: int = bounded(14, ge=2, le=10_000)

    def __post_init__(self) -> None:
        check_bounds(self)


def _zone_lifecycle(
    tables: PriceTables, after: IntArray, top: FloatArray, bottom: FloatArray, upward: Any
) -> tuple[IntArray, IntArray]:
    """First bar (from `after` on) that mitigates each zone, and first that breaks it.

    Bullish zones sit below price: mitigation is a low at or below the top, a break a close below the bottom;
    bearish zones mirror that. Shared by fair value gaps and order blocks.
    """
    mitigated = first_beyond(
        tables.high_max, tables.low_min, after, np.where(upward, at_or_below(top), at_or_above(bottom)), ~upward
    )
    broken = first_beyond(tables.close_max, tables.close_min, after, np.where(upward, bottom, top), ~upward)
    return mitigated, broken


def fair_value_gaps(candles: Candles, tables: PriceTables, atr: FloatArray, min_size_atr: float = 0.0) -> EventTable:
    high, low = candles.high, candles.low
    bars = np.arange(2, len(candles), dtype=np.int64)
    bull_bottom, bull_top = high[bars - 2], low[bars]
    bear_top, bear_bottom = low[bars - 2], high[bars]
    bullish, bearish = bull_bottom < bull_top, bear_top > bear_bottom
    if min_size_atr > 0:
        minimum = min_size_atr * np.nan_to_num(atr[bars], nan=np.inf)
        bullish &= bull_top - bull_bottom >= minimum
        bearish &= bear_top - bear_bottom >= minimum
    confirmed = np.concatenate((bars[bullish], bars[bearish]))
    top = np.concatenate((bull_top[bullish], bear_top[bearish]))
    bottom = np.concatenate((bull_bottom[bullish], bear_bottom[bearish]))
    upward = np.concatenate((np.ones(int(bullish.sum()), bool), np.zeros(int(bearish.sum()), bool)))
    mitigated, broken = _zone_lifecycle(tables, confirmed + 1, top, bottom, upward)
    return build_events(
        close_time=candles.close_time,
        open_time=candles.open_time,
        kinds=FVG_KINDS,
        direction_names=ZONE_DIRECTIONS,
        zone=True,
        kind=0,
        direction=np.where(upward, 1, -1),
        anchor_index=confirmed - 1,
        confirmed_index=confirmed,
        top=top,
        bottom=bottom,
        mitigated_index=mitigated,
        broken_index=broken,
    )


def _breaks(swings: Swings, tables: PriceTables, bar_count: int, want_high: bool) -> tuple[IntArray, IntArray]:
    """(swing row, break bar) of every swing broken while it was still the latest swing of its side."""
    rows = np.flatnonzero(swings.is_high == want_high)
    confirmed, level = swings.confirmed_index[rows], swings.price[rows]
    if want_high:
        broken_at = tables.close_max.first_above(confirmed + 1, level)
    else:
        broken_at = tables.close_min.first_below(confirmed + 1, level)
    # A swing stops being the reference once the next swing of its side is confirmed.
    superseded_at = np.append(confirmed[1:], bar_count)
    valid = (broken_at != NOT_FOUND) & (broken_at <= superseded_at)
    return rows[valid], broken_at[valid]


def structure_breaks(candles: Candles, swings: Swings, tables: PriceTables) -> EventTable:
    up_rows, up_bars = _breaks(swings, tables, len(candles), want_high=True)
    down_rows, down_bars = _breaks(swings, tables, len(candles), want_high=False)
    rows = np.concatenate((up_rows, down_rows))
    bars = np.concatenate((up_bars, down_bars))
    direction = np.concatenate((np.ones(up_rows.shape[0], np.int8), -np.ones(down_rows.shape[0], np.int8)))
    order = np.lexsort((-direction, bars))
    rows, bars, direction = rows[order], bars[order], direction[order]
    is_choch = np.concatenate(([False], direction[1:] != direction[:-1]))
    return build_events(
        close_time=candles.close_time,
        open_time=candles.open_time,
        kinds=STRUCTURE_KINDS,
        direction_names=ZONE_DIRECTIONS,
        zone=False,
        kind=is_choch.astype(np.int8),
        direction=direction,
        anchor_index=swings.index[rows],
        confirmed_index=bars,
        top=swings.price[rows],
    )


def order_blocks(candles: Candles, structure: EventTable, tables: PriceTables) -> EventTable:
    pivot, brk = structure.anchor_index, structure.confirmed_index
    upward = structure.direction > 0
    # Origin of the move: the lowest low (bullish) or highest high (bearish) of bars pivot..break, first occurrence.
    lowest = tables.low_min.range_min(pivot, brk + 1)
    highest = tables.high_max.range_max(pivot, brk + 1)
    origin = first_beyond(
        tables.high_max, tables.low_min, pivot, np.where(upward, at_or_below(lowest), at_or_above(highest)), ~upward
    )
    last_bearish = last_true_at_or_before(candles.close < candles.open)
    last_bullish = last_true_at_or_before(candles.close > candles.open)
    opposite = np.where(upward, last_bearish[origin], last_bullish[origin])
    block = np.where(opposite >= pivot, opposite, origin)
    _, first_use = np.unique(np.stack((structure.direction.astype(np.int64), block)), axis=1, return_index=True)
    keep = np.sort(first_use)
    block, brk, upward = block[keep], brk[keep], upward[keep]
    top, bottom = candles.high[block], candles.low[block]
    mitigated, broken = _zone_lifecycle(tables, brk + 1, top, bottom, upward)
    return build_events(
        close_time=candles.close_time,
        open_time=candles.open_time,
        kinds=ORDER_BLOCK_KINDS,
        direction_names=ZONE_DIRECTIONS,
        zone=True,
        kind=0,
        direction=np.where(upward, 1, -1),
        anchor_index=block,
        confirmed_index=brk,
        top=top,
        bottom=bottom,
        mitigated_index=mitigated,
        broken_index=broken,
    )


@dataclass(frozen=True, slots=True, eq=False)
class SmcResult:
    params: SmcParams
    swings: EventTable
    fair_value_gaps: EventTable
    structure: EventTable
    order_blocks: EventTable
    liquidity: EventTable
    previous_levels: EventTable

    TABLES = ("swings", "fair_value_gaps", "structure", "order_blocks", "liquidity", "previous_levels")

    def trend(self) -> str | None:
        """Direction of the latest structure break, or ``None`` before the first one."""
        if not len(self.structure):
            return None
        return self.structure.direction_names[0 if self.structure.direction[-1] > 0 else 1]

    def as_of(self, time: int) -> SmcResult:
        tables = {name: getattr(self, name).as_of(time) for name in self.TABLES}
        return SmcResult(params=self.params, **tables)

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "params": {name: getattr(self.params, name) for name in self.params.__slots__},
            "trend": self.trend(),
        }
        for name in self.TABLES:
            result[name] = getattr(self, name).to_dict()
        return result


def compute_smc(
    candles: Candles,
    params: SmcParams | None = None,
    *,
    tables: PriceTables | None = None,
    swings: Swings | None = None,
    atr: FloatArray | None = None,
) -> SmcResult:
    """Every SMC event family; pass ``tables``/``swings``/``atr`` to share them with other modules."""
    p = params or SmcParams()
    tables = tables or PriceTables(candles.high, candles.low, candles.close)
    if swings is None or swings.length != p.swing_length:
        swings = detect_swings(
            candles.high, candles.low, p.swing_length, high_table=tables.high_max, low_table=tables.low_min
        )
    if atr is None:
        atr = wilder_atr(candles.high, candles.low, candles.close, p.atr_period)
    structure = structure_breaks(candles, swings, tables)
    return SmcResult(
        params=p,
        swings=swing_events(candles, swings, tables),
        fair_value_gaps=fair_value_gaps(candles, tables, atr, p.fvg_min_size_atr),
        structure=structure,
        order_blocks=order_blocks(candles, structure, tables),
        liquidity=equal_levels(candles, swings, atr, p.liquidity_atr_multiple, tables),
        previous_levels=previous_period_levels(candles, tables),
    )
