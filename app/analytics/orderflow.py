"""Order flow: footprint (with trades), volume profile, absorption and liquidations per bar.

Absorption (bar level, parameters in ``OrderflowParams``): bar ``i`` absorbs when

1. its ``|delta|`` is at least ``absorption_delta_multiple`` times the median ``|delta|`` of the previous
   ``absorption_lookback`` bars (and non-zero),
2. its range ``high - low`` is at most ``absorption_range_atr`` times the ATR of the previous bar, and
3. price fails to extend in the delta's direction: the close does not exceed the previous close for a positive
   delta (not below it for a negative one).

Aggressive buying that fails to lift price means passive sellers absorbed it, so a positive-delta absorption is
``bearish`` and a negative one ``bullish``. The event is confirmed at the bar's close; its level is the close.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from app.analytics.cvd import BarDelta, assign_trades, bar_delta
from app.analytics.events import EventTable, build_events
from app.analytics.footprint import Footprint, footprint_from_trades, nice_tick
from app.analytics.indicators import atr as wilder_atr
from app.analytics.profile import (
    VALUE_AREA_METHODS,
    VOLUME_DISTRIBUTIONS,
    ValueAreaMethod,
    VolumeDistribution,
    VolumeProfile,
    profile_from_candles,
    profile_from_trades,
)
from app.analytics.types import Candles, FloatArray, IntArray, Liquidations, Trades, json_floats, weighted_counts

ABSORPTION_KINDS = ("absorption",)


def _positive_or_none(value: float | None, name: str) -> None:
    if value is not None and not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number")


@dataclass(frozen=True, slots=True)
class OrderflowParams:
    tick: float | None = None  # footprint level size; None: a 1-2-5 step near one basis point of the median close
    imbalance_ratio: float = 3.0
    imbalance_min_volume: float = 0.0
    stacked_min_levels: int = 3
    profile_tick: float | None = None  # None: the profile's price range divided into ``profile_rows`` levels
    profile_rows: int = 100
    value_area_pct: float = 0.70
    value_area_method: ValueAreaMethod = "two_row"
    volume_distribution: VolumeDistribution = "uniform"
    absorption_lookback: int = 20
    absorption_delta_multiple: float = 2.0
    absorption_range_atr: float = 0.75
    atr_period: int = 14

    def __post_init__(self) -> None:
        _positive_or_none(self.tick, "tick")
        _positive_or_none(self.profile_tick, "profile_tick")
        if not 1 < self.imbalance_ratio <= 1000:
            raise ValueError("imbalance_ratio must be in (1, 1000]")
        if not 0 <= self.imbalance_min_volume < float("inf"):
            raise ValueError("imbalance_min_volume must be a non-negative number")
        if not 2 <= self.stacked_min_levels <= 1000:
            raise ValueError("stacked_min_levels must be an integer in [2, 1000]")
        if not 1 <= self.profile_rows <= 100_000:
            raise ValueError("profile_rows must be an integer in [1, 100000]")
        if not 0 < self.value_area_pct <= 1:
            raise ValueError("value_area_pct must be in (0, 1]")
        if self.value_area_method not in VALUE_AREA_METHODS:
            raise ValueError(f"value_area_method must be one of {', '.join(VALUE_AREA_METHODS)}")
        if self.volume_distribution not in VOLUME_DISTRIBUTIONS:
            raise ValueError(f"volume_distribution must be one of {', '.join(VOLUME_DISTRIBUTIONS)}")
        if not 2 <= self.absorption_lookback <= 10_000:
            raise ValueError("absorption_lookback must be an integer in [2, 10000]")
        if not 0 < self.absorption_delta_multiple <= 1000:
            raise ValueError("absorption_delta_multiple must be in (0, 1000]")
        if not 0 < self.absorption_range_atr <= 100:
            raise ValueError("absorption_range_atr must be in (0, 100]")
        if not 2 <= self.atr_period <= 10_000:
            raise ValueError("atr_period must be an integer in [2, 10000]")


def absorption(
    candles: Candles, delta: FloatArray, atr: FloatArray, params: OrderflowParams | None = None
) -> EventTable:
    """Absorption bars (see the module docstring)."""
    p = params or OrderflowParams()
    lookback = p.absorption_lookback
    bars = np.arange(lookback, len(candles), dtype=np.int64)
    magnitude = np.abs(delta)
    previous_close = candles.close[bars - 1]
    close = candles.close[bars]
    fails = np.where(delta[bars] > 0, close <= previous_close, close >= previous_close)
    narrow = (candles.high - candles.low)[bars] <= p.absorption_range_atr * atr[bars - 1]  # NaN ATR: False
    candidates = bars[fails & narrow & (magnitude[bars] > 0)]
    if candidates.size:
        # Medians only for the few bars passing the cheap tests: a rolling median over every bar is slow.
        windows = sliding_window_view(magnitude, lookback)[candidates - lookback]
        median = np.median(windows, axis=1)
        candidates = candidates[magnitude[candidates] >= p.absorption_delta_multiple * median]
    return build_events(
        close_time=candles.close_time,
        open_time=candles.open_time,
        kinds=ABSORPTION_KINDS,
        direction_names=("bullish", "bearish"),
        zone=False,
        kind=0,
        direction=np.where(delta[candidates] > 0, -1, 1),
        anchor_index=candidates,
        confirmed_index=candidates,
        top=candles.close[candidates],
        extra={"delta": delta[candidates]},
    )


@dataclass(frozen=True, slots=True, eq=False)
class LiquidationBars:
    long_liquidated: FloatArray  # forced sells
    short_liquidated: FloatArray  # forced buys

    def to_dict(self) -> dict[str, Any]:
        return {
            "long_liquidated": json_floats(self.long_liquidated),
            "short_liquidated": json_floats(self.short_liquidated),
        }


def liquidations_per_bar(candles: Candles, liquidations: Liquidations) -> LiquidationBars:
    bar = np.searchsorted(candles.open_time, liquidations.time, side="right") - 1
    inside = (bar >= 0) & (liquidations.time < candles.close_time[np.maximum(bar, 0)])
    bar, qty, side = bar[inside], liquidations.qty[inside], liquidations.side[inside]
    n = len(candles)
    return LiquidationBars(
        long_liquidated=weighted_counts(bar, np.where(side < 0, qty, 0.0), n),
        short_liquidated=weighted_counts(bar, np.where(side > 0, qty, 0.0), n),
    )


@dataclass(frozen=True, slots=True, eq=False)
class OrderflowResult:
    params: OrderflowParams
    side_source: str
    open_time: IntArray
    footprint: Footprint | None
    profile: VolumeProfile
    absorption: EventTable
    liquidations: LiquidationBars | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": {name: getattr(self.params, name) for name in self.params.__slots__},
            "side_source": self.side_source,
            "footprint": None if self.footprint is None else {
                "tick": self.footprint.tick, "bars": self.footprint.to_dict()
            },
            "profile": self.profile.to_dict(),
            "absorption": self.absorption.to_dict(),
            "liquidations": None if self.liquidations is None else {
                "open_time": self.open_time.tolist(), **self.liquidations.to_dict()
            },
        }  # fmt: skip


def _profile_tick(params: OrderflowParams, low: float, high: float) -> float:
    if params.profile_tick is not None:
        return params.profile_tick
    spread = high - low
    return spread / params.profile_rows if spread > 0 else nice_tick(high)


def compute_orderflow(
    candles: Candles,
    trades: Trades | None = None,
    params: OrderflowParams | None = None,
    *,
    liquidations: Liquidations | None = None,
    deltas: BarDelta | None = None,
    atr: FloatArray | None = None,
) -> OrderflowResult:
    p = params or OrderflowParams()
    flow = deltas or bar_delta(candles, trades)
    if atr is None:
        atr = wilder_atr(candles.high, candles.low, candles.close, p.atr_period)
    footprint = None
    if trades is not None and len(trades):
        per_bar = flow.trade_bars or assign_trades(candles, trades)
        tick = p.tick or nice_tick(float(np.median(candles.close)))
        footprint = footprint_from_trades(
            per_bar.bar,
            trades.price[per_bar.assigned],
            trades.qty[per_bar.assigned],
            trades.side[per_bar.assigned],
            bar_open_time=candles.open_time,
            tick=tick,
            ratio=p.imbalance_ratio,
            min_volume=p.imbalance_min_volume,
            stacked_min_levels=p.stacked_min_levels,
        )
        prices = trades.price
        profile = profile_from_trades(
            trades, _profile_tick(p, float(prices.min()), float(prices.max())), p.value_area_pct, p.value_area_method
        )
    else:
        profile_tick = _profile_tick(p, float(candles.low.min()), float(candles.high.max()))
        profile = profile_from_candles(
            candles, profile_tick, p.volume_distribution, p.value_area_pct, p.value_area_method
        )
    return OrderflowResult(
        params=p,
        side_source=flow.side_source,
        open_time=candles.open_time,
        footprint=footprint,
        profile=profile,
        absorption=absorption(candles, flow.delta, atr, p),
        liquidations=None if liquidations is None else liquidations_per_bar(candles, liquidations),
    )
