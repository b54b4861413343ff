"""Volume profile: volume per price level, point of control (POC) and value area.

POC: the level with the most volume; ties go to the level nearest the middle of the profile's price range, then
to the lower price. Value area (default 70 % of the volume) grows from the POC:

* ``two_row`` (CBOT, default): compare the sum of the next two levels above with the next two below and add the
  larger pair; on a tie the higher side is added. Near an edge a "pair" is whatever levels remain.
* ``single_row``: the same, one level at a time.

From trades, each trade's quantity lands on its level (``footprint.level_index``). From OHLCV alone the spread
of a bar's volume over its range is the named ``distribution``, recorded in the output: ``uniform`` (evenly over
every level from low to high), ``typical`` (all at ``(h + l + c) / 3``) or ``close`` (all at the close).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from app.analytics.footprint import level_index, level_price
from app.analytics.types import Candles, FloatArray, IntArray, Trades, weighted_counts

ValueAreaMethod = Literal["two_row", "single_row"]
VolumeDistribution = Literal["uniform", "typical", "close"]
VALUE_AREA_METHODS: tuple[str, ...] = ("two_row", "single_row")
VOLUME_DISTRIBUTIONS: tuple[str, ...] = ("uniform", "typical", "close")
MAX_PROFILE_LEVELS = 1_000_000


@dataclass(frozen=True, slots=True, eq=False)
class VolumeProfile:
    source: str  # "trades" or "ohlcv"
    distribution: VolumeDistribution | None  # how OHLCV volume was spread; None for trades
    method: ValueAreaMethod
    value_area_pct: float
    tick: float
    price: FloatArray
    volume: FloatArray
    poc: float
    value_area_low: float
    value_area_high: float
    value_area_volume: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "distribution": self.distribution,
            "method": self.method,
            "value_area_pct": self.value_area_pct,
            "tick": self.tick,
            "poc": self.poc,
            "value_area_low": self.value_area_low,
            "value_area_high": self.value_area_high,
            "value_area_volume": self.value_area_volume,
            "total_volume": float(self.volume.sum()),
            "levels": [
                {"price": p, "volume": v} for p, v in zip(self.price.tolist(), self.volume.tolist(), strict=True)
            ],
        }


def point_of_control(volume: FloatArray) -> int:
    """Row of the POC (see the module docstring); rows are ordered by ascending price."""
    rows = np.arange(volume.shape[0])
    distance_to_centre = np.abs(2 * rows - (volume.shape[0] - 1))
    return int(np.lexsort((rows, distance_to_centre, -volume))[0])


def value_area(volume: FloatArray, pct: float = 0.70, method: ValueAreaMethod = "two_row") -> tuple[int, int, int]:
    """(POC row, lowest row, highest row) of the value area."""
    poc = point_of_control(volume)
    values = volume.tolist()
    target = pct * float(np.sum(volume))
    step = 2 if method == "two_row" else 1
    low = high = poc
    accumulated = values[poc]
    last = len(values) - 1
    # Sequential by nature (each step depends on the previous choice); at most one pass over the levels.
    while accumulated < target and (low > 0 or high < last):
        above = values[high + 1 : high + 1 + step]
        below = values[max(low - step, 0) : low]
        above_sum, below_sum = sum(above), sum(below)
        if above and (not below or above_sum >= below_sum):
            high += len(above)
            accumulated += above_sum
        else:
            low -= len(below)
            accumulated += below_sum
    return poc, low, high


def profile_from_levels(
    level: IntArray,
    volume: FloatArray,
    *,
    tick: float,
    source: str,
    distribution: VolumeDistribution | None,
    pct: float = 0.70,
    method: ValueAreaMethod = "two_row",
) -> VolumeProfile:
    """Profile over the dense level range ``level[0]..level[-1]`` (``level`` ascending, one row per level)."""
    poc, low, high = value_area(volume, pct, method)
    prices = level_price(level, tick)
    return VolumeProfile(
        source=source,
        distribution=distribution,
        method=method,
        value_area_pct=pct,
        tick=tick,
        price=prices,
        volume=volume,
        poc=float(prices[poc]),
        value_area_low=float(prices[low]),
        value_area_high=float(prices[high]),
        value_area_volume=float(np.sum(volume[low : high + 1])),
    )


def _dense_levels(low_level: int, high_level: int) -> IntArray:
    if high_level - low_level + 1 > MAX_PROFILE_LEVELS:
        raise ValueError(f"the profile tick gives more than {MAX_PROFILE_LEVELS} levels; use a larger tick")
    return np.arange(low_level, high_level + 1, dtype=np.int64)


def profile_from_trades(
    trades: Trades, tick: float, pct: float = 0.70, method: ValueAreaMethod = "two_row"
) -> VolumeProfile:
    levels = level_index(trades.price, tick)
    base = int(levels.min())
    dense = _dense_levels(base, int(levels.max()))
    volume = weighted_counts(levels - base, trades.qty, dense.shape[0])
    return profile_from_levels(dense, volume, tick=tick, source="trades", distribution=None, pct=pct, method=method)


def profile_from_candles(
    candles: Candles,
    tick: float,
    distribution: VolumeDistribution = "uniform",
    pct: float = 0.70,
    method: ValueAreaMethod = "two_row",
) -> VolumeProfile:
    low_level, high_level = level_index(candles.low, tick), level_index(candles.high, tick)
    base = int(low_level.min())
    dense = _dense_levels(base, int(high_level.max()))
    size = dense.shape[0]
    if distribution == "uniform":
        # Difference array: +share at the bar's lowest level, -share one past its highest, then a running sum.
        share = candles.volume / (high_level - low_level + 1)
        steps = weighted_counts(low_level - base, share, size + 1)
        steps -= weighted_counts(high_level - base + 1, share, size + 1)
        volume = np.maximum(np.cumsum(steps)[:size], 0.0)
    else:
        at = (candles.high + candles.low + candles.close) / 3 if distribution == "typical" else candles.close
        volume = weighted_counts(level_index(at, tick) - base, candles.volume, size)
    return profile_from_levels(
        dense, volume, tick=tick, source="ohlcv", distribution=distribution, pct=pct, method=method
    )
