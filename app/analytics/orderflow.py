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

from app.analytics.bounds import bounded, check_bounds
from app.analytics.cvd import BarDelta, assign_trades, bar_delta
from app.analytics.events import EventTable, build_events
from app.analytics.footprint import Footprint, footprint_from_trades, nice_tick, tick_for_rows
from app.analytics.indicators import atr as wilder_atr
from app.analytics.profile import (
    MAX_PROFILE_LEVELS,
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


@dataclass(frozen=True, slots=True)
class OrderflowParams:
    # Price steps and volumes have no natural ceiling; these upper bounds are far above any market's (a 10^6
    # price step is one basis point of a 10^10 price) and only keep the values finite and documented.
    tick: float | None = bounded(None, gt=0, le=1_000_000)  # footprint level; None: ~1 bp of the median close
    imbalance_ratio: float = bounded(3.0, gt=1, le=1000)
    imbalance_min_volume: float = bounded(0.0, ge=0, le=10**12)
    stacked_min_levels: int = bounded(3, ge=2, le=1000)
    # None: the smallest 1-2-5 step that divides the range into at most profile_rows rows (footprint.tick_for_rows)
    profile_tick: float | None = bounded(None, gt=0, le=1_000_000)
    profile_rows: int = bounded(100, ge=1, le=100_000)
    value_area_pct: float = bounded(0.70, gt=0, le=1)
    value_area_method: ValueAreaMethod = "two_row"
    volume_distribution: VolumeDistribution = "uniform"
    absorption_lookback: int = bounded(20, ge=2, le=10_000)
    absorption_delta_multiple: float = bounded(2.0, gt=0, le=1000)
    absorption_range_atr: float = bounded(0.75, gt=0, le=100)
    atr_period: int = bounded(14, ge=2, le=10_000)

    def __post_init__(self) -> None:
        if self.value_area_method not in VALUE_AREA_METHODS:
            raise ValueError(f"value_area_method must be one of {', '.join(VALUE_AREA_METHODS)}")
        if self.volume_distribution not in VOLUME_DISTRIBUTIONS:
            raise ValueError(f"volume_distribution must be one of {', '.join(VOLUME_DISTRIBUTIONS)}")
        check_bounds(self)


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


# Level indices are int64 and computed through float64: beyond 2^53 levels from zero they are no longer exact.
MAX_LEVEL_INDEX = 2.0**53


def tick_problems(candles: Candles, trades: Trades | None, params: OrderflowParams) -> list[tuple[str, str]]:
    """(parameter, message) for each tick given in ``params`` that is too fine for these prices: a price over the
    tick past ``MAX_LEVEL_INDEX`` (a tick of 1e-300 makes it infinite), or, for the profile, more than
    ``MAX_PROFILE_LEVELS`` levels between the lowest and the highest price. The callers refuse such a request
    (422) before the engine runs: without the check the level arithmetic overflowed into a server error."""
    problems: list[tuple[str, str]] = []
    if not len(candles):
        return problems
    low, high = float(candles.low.min()), float(candles.high.max())
    if trades is not None and len(trades):
        low, high = min(low, float(trades.price.min())), max(high, float(trades.price.max()))
    top = max(abs(low), abs(high))
    for name, tick in (("tick", params.tick), ("profile_tick", params.profile_tick)):
        if tick is None or (name == "tick" and (trades is None or not len(trades))):
            continue  # the footprint tick is used only with trades
        with np.errstate(over="ignore"):
            reach, levels = np.float64(top) / tick, np.float64(high - low) / tick
        if not reach < MAX_LEVEL_INDEX:
            problems.append((name, f"{tick:g} is too fine for prices up to {top:g}: use a larger tick"))
        elif name == "profile_tick" and levels + 1 > MAX_PROFILE_LEVELS:
            message = f"{tick:g} gives more than {MAX_PROFILE_LEVELS} profile levels from {low:g} to {high:g}"
            problems.append((name, message + ": use a larger tick"))
    return problems


def _profile_tick(params: OrderflowParams, low: float, high: float) -> float:
    if params.profile_tick is not None:
        return params.profile_tick
    spread = high - low
    return tick_for_rows(spread, params.profile_rows) if spread > 0 else nice_tick(high)


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
