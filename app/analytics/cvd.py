"""Per-bar taker buy/sell volume, delta and cumulative volume delta (CVD), with divergences.

Where the delta comes from (``side_source``), best first:

* ``exchange_flag`` — trades carrying the taker side (Binance aggTrade ``m=true`` means the taker sold; Bybit
  ``S`` is the taker side; see ``types.taker_side_from_*``). Trades are assigned to the bar whose
  ``[open_time, close_time)`` contains them; trades outside every bar are ignored and counted.
* ``kline_taker_volume`` — klines with taker-buy volume: ``delta = 2 · taker_buy - volume``, exact.
* ``ohlcv_estimate`` — OHLCV only, method ``polarity`` (``sign(c - o) · v``; on a doji the sign of
  ``c - previous c``; if that is 0 too, the previous bar's sign) or ``clv`` (``v · (2c - h - l) / (h - l)``,
  0 when ``h = l``).

Buy volume is ``(volume + delta) / 2`` and sell volume ``(volume - delta) / 2`` for the kline and estimate
sources. The CVD restarts at each UTC day or week with ``anchor``. With trades, ``intrabar_delta_min``/``max`` are
the extremes of the bar's running delta, starting from 0 at the bar's open.

Divergence: for consecutive confirmed swing highs (same detector as SMC), a higher high whose CVD (unanchored,
at the pivot bar's close) is lower than at the previous high is bearish; a lower low with a higher CVD is
bullish. It is confirmed with the second swing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from app.analytics.bounds import bounded, check_bounds
from app.analytics.events import EventTable, build_events
from app.analytics.indicators import ANCHORS, Anchor, anchor_group_starts, cumsum_by_group
from app.analytics.swings import Swings, detect_swings
from app.analytics.types import Candles, FloatArray, IntArray, Trades, json_floats, weighted_counts

SideSource = Literal["exchange_flag", "kline_taker_volume", "ohlcv_estimate"]
EstimateMethod = Literal["polarity", "clv"]
ESTIMATE_METHODS: tuple[str, ...] = ("polarity", "clv")
DIVERGENCE_KINDS = ("cvd_divergence",)


@dataclass(frozen=True, slots=True)
class CvdParams:
    anchor: Anchor = "none"
    estimate_method: EstimateMethod = "polarity"
    swing_length: int = bounded(5, ge=1, le=500)

    def __post_init__(self) -> None:
        if self.anchor not in ANCHORS:
            raise ValueError(f"anchor must be one of {', '.join(ANCHORS)}")
        if self.estimate_method not in ESTIMATE_METHODS:
            raise ValueError(f"estimate_method must be one of {', '.join(ESTIMATE_METHODS)}")
        check_bounds(self)


def polarity_delta(open_: FloatArray, close: FloatArray, volume: FloatArray) -> FloatArray:
    sign = np.sign(close - open_)
    previous_close = np.concatenate((close[:1], close[:-1]))
    sign = np.where(sign == 0, np.sign(close - previous_close), sign)
    # Still undecided: carry the latest decided sign forward (0 before any bar had one).
    last_decided = np.maximum.accumulate(np.where(sign != 0, np.arange(sign.shape[0]), -1))
    sign = np.where(last_decided >= 0, sign[np.maximum(last_decided, 0)], 0.0)
    result: FloatArray = sign * volume
    return result


def clv_delta(high: FloatArray, low: FloatArray, close: FloatArray, volume: FloatArray) -> FloatArray:
    spread = high - low
    flat = spread == 0
    return np.where(flat, 0.0, volume * (2 * close - high - low) / np.where(flat, 1.0, spread))


def kline_delta(taker_buy_volume: FloatArray, volume: FloatArray) -> FloatArray:
    result: FloatArray = 2 * taker_buy_volume - volume
    return result


@dataclass(frozen=True, slots=True, eq=False)
class TradeBars:
    """Trades aggregated onto the candle grid."""

    buy: FloatArray
    sell: FloatArray
    delta_min: FloatArray
    delta_max: FloatArray
    bar: IntArray  # bar position of each assigned trade
    assigned: NDArray[np.bool_]
    unassigned_count: int


def assign_trades(candles: Candles, trades: Trades) -> TradeBars:
    n = len(candles)
    bar = np.searchsorted(candles.open_time, trades.time, side="right") - 1
    assigned = (bar >= 0) & (trades.time < candles.close_time[np.maximum(bar, 0)])
    bar = bar[assigned]
    qty, side = trades.qty[assigned], trades.side[assigned]
    buy = weighted_counts(bar, np.where(side > 0, qty, 0.0), n)
    sell = weighted_counts(bar, np.where(side < 0, qty, 0.0), n)
    delta_min, delta_max = np.zeros(n), np.zeros(n)
    if bar.size:
        running = np.cumsum(qty * side)
        starts = np.flatnonzero(np.concatenate(([True], bar[1:] != bar[:-1])))
        before = np.concatenate(([0.0], running[:-1]))[starts]
        bars_with_trades = bar[starts]
        # Extremes of the running total inside each bar, measured from the bar's opening value (0 delta).
        delta_min[bars_with_trades] = np.minimum(np.minimum.reduceat(running, starts) - before, 0.0)
        delta_max[bars_with_trades] = np.maximum(np.maximum.reduceat(running, starts) - before, 0.0)
    return TradeBars(buy, sell, delta_min, delta_max, bar, assigned, int(trades.time.shape[0] - bar.shape[0]))


@dataclass(frozen=True, slots=True, eq=False)
class BarDelta:
    side_source: SideSource
    estimate_method: EstimateMethod | None
    buy: FloatArray
    sell: FloatArray
    delta: FloatArray
    intrabar_min: FloatArray | None
    intrabar_max: FloatArray | None
    unassigned_trades: int
    trade_bars: TradeBars | None  # kept so the footprint reuses the bar assignment


def bar_delta(candles: Candles, trades: Trades | None = None, method: EstimateMethod = "polarity") -> BarDelta:
    """Buy/sell volume and delta per bar from the best available source (see the module docstring)."""
    if trades is not None:
        per_bar = assign_trades(candles, trades)
        return BarDelta(
            "exchange_flag", None, per_bar.buy, per_bar.sell, per_bar.buy - per_bar.sell,
            per_bar.delta_min, per_bar.delta_max, per_bar.unassigned_count, per_bar,
        )  # fmt: skip
    volume = candles.volume
    if candles.taker_buy_volume is not None:
        source: SideSource = "kline_taker_volume"
        used_method: EstimateMethod | None = None
        delta = kline_delta(candles.taker_buy_volume, volume)
    else:
        source, used_method = "ohlcv_estimate", method
        if method == "clv":
            delta = clv_delta(candles.high, candles.low, candles.close, volume)
        else:
            delta = polarity_delta(candles.open, candles.close, volume)
    return BarDelta(source, used_method, (volume + delta) / 2, (volume - delta) / 2, delta, None, None, 0, None)


def divergences(candles: Candles, swings: Swings, cumulative_delta: FloatArray) -> EventTable:
    anchors, confirms, directions, prices, previous_prices, cvds, previous_cvds = [], [], [], [], [], [], []
    for want_high in (True, False):
        side = swings.is_high == want_high
        index, confirmed, price = swings.index[side], swings.confirmed_index[side], swings.price[side]
        flow = cumulative_delta[index]
        if want_high:
            found = (price[1:] > price[:-1]) & (flow[1:] < flow[:-1])
        else:
            found = (price[1:] < price[:-1]) & (flow[1:] > flow[:-1])
        anchors.append(index[:-1][found])
        confirms.append(confirmed[1:][found])
        directions.append(np.full(int(found.sum()), -1 if want_high else 1))
        prices.append(price[1:][found])
        previous_prices.append(price[:-1][found])
        cvds.append(flow[1:][found])
        previous_cvds.append(flow[:-1][found])
    return build_events(
        close_time=candles.close_time,
        open_time=candles.open_time,
        kinds=DIVERGENCE_KINDS,
        direction_names=("bullish", "bearish"),
        zone=False,
        kind=0,
        direction=np.concatenate(directions),
        anchor_index=np.concatenate(anchors),
        confirmed_index=np.concatenate(confirms),
        top=np.concatenate(prices),
        extra={
            "previous_price": np.concatenate(previous_prices),
            "cvd": np.concatenate(cvds),
            "previous_cvd": np.concatenate(previous_cvds),
        },
    )


@dataclass(frozen=True, slots=True, eq=False)
class CvdResult:
    params: CvdParams
    side_source: SideSource
    estimate_method: EstimateMethod | None
    open_time: IntArray
    buy_volume: FloatArray
    sell_volume: FloatArray
    delta: FloatArray
    delta_pct: FloatArray
    cvd: FloatArray
    intrabar_delta_min: FloatArray | None
    intrabar_delta_max: FloatArray | None
    unassigned_trades: int
    divergences: EventTable

    def to_dict(self) -> dict[str, Any]:
        def optional(values: FloatArray | None) -> list[float | None] | None:
            return None if values is None else json_floats(values)

        return {
            "params": {name: getattr(self.params, name) for name in self.params.__slots__},
            "side_source": self.side_source,
            "estimate_method": self.estimate_method,
            "open_time": self.open_time.tolist(),
            "buy_volume": json_floats(self.buy_volume),
            "sell_volume": json_floats(self.sell_volume),
            "delta": json_floats(self.delta),
            "delta_pct": json_floats(self.delta_pct),
            "cvd": json_floats(self.cvd),
            "intrabar_delta_min": optional(self.intrabar_delta_min),
            "intrabar_delta_max": optional(self.intrabar_delta_max),
            "unassigned_trades": self.unassigned_trades,
            "divergences": self.divergences.to_dict(),
        }


def compute_cvd(
    candles: Candles,
    trades: Trades | None = None,
    params: CvdParams | None = None,
    *,
    swings: Swings | None = None,
    deltas: BarDelta | None = None,
) -> CvdResult:
    p = params or CvdParams()
    flow = deltas or bar_delta(candles, trades, p.estimate_method)
    if swings is None or swings.length != p.swing_length:
        swings = detect_swings(candles.high, candles.low, p.swing_length)
    volume = flow.buy + flow.sell
    with np.errstate(invalid="ignore", divide="ignore"):
        delta_pct = np.where(volume > 0, flow.delta / np.where(volume > 0, volume, 1.0), np.nan)
    group = anchor_group_starts(candles.open_time, p.anchor)
    return CvdResult(
        params=p,
        side_source=flow.side_source,
        estimate_method=flow.estimate_method,
        open_time=candles.open_time,
        buy_volume=flow.buy,
        sell_volume=flow.sell,
        delta=flow.delta,
        delta_pct=delta_pct,
        cvd=cumsum_by_group(flow.delta, group),
        intrabar_delta_min=flow.intrabar_min,
        intrabar_delta_max=flow.intrabar_max,
        unassigned_trades=flow.unassigned_trades,
        divergences=divergences(candles, swings, np.cumsum(flow.delta)),
    )
