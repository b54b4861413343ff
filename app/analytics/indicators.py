"""SMA, EMA, RSI, ATR, MACD, Bollinger bands (TA-Lib arithmetic) and anchored VWAP.

Every function returns an array as long as its input with NaN before the first valid index, which is TA-Lib's
(``period - 1`` for SMA/EMA/Bollinger, ``period`` for RSI/ATR, ``slow + signal - 2`` for MACD).

TA-Lib's operation order is replayed so results agree to a few ulps (the TA-Lib wheel fuses multiply-adds, so
bit-for-bit equality is out of reach from Python). Running window sums use ``np.cumsum``, which adds strictly
left to right, over the interleaved sequence of additions and subtractions TA-Lib performs. The recursive filters
(EMA, Wilder smoothing) run as tight scalar loops over Python floats: a vectorised scan would change the rounding,
and MACD subtracts two nearly equal EMAs, so small rounding differences become large relative errors near its
zero crossings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from app.analytics.bounds import bounded, check_bounds
from app.analytics.types import Candles, FloatArray, IntArray, json_floats, utc_day_start, utc_week_start

Anchor = Literal["none", "day", "week"]
ANCHORS: tuple[str, ...] = ("none", "day", "week")

# TA-Lib treats |x| < 1e-14 as zero (TA_IS_ZERO) when dividing and when taking square roots.
_TA_EPSILON = 1e-14


def _nan(length: int) -> FloatArray:
    return np.full(length, np.nan)


def _as_float(values: FloatArray) -> FloatArray:
    return np.ascontiguousarray(values, dtype=np.float64)


def _running_window_sums(values: FloatArray, period: int) -> FloatArray:
    """TA-Lib's running window total: add the newest value, read, subtract the oldest (see module docstring)."""
    outputs = values.shape[0] - period + 1
    steps = np.empty(period - 1 + 2 * outputs)
    steps[: period - 1] = values[: period - 1]
    steps[period - 1 :: 2] = values[period - 1 :]
    steps[period::2] = -values[:outputs]
    totals: FloatArray = np.cumsum(steps)[period - 1 :: 2]
    return totals


def _sequential_sum(values: FloatArray) -> float:
    """Left-to-right sum (``np.sum`` is pairwise and rounds differently from TA-Lib's loop)."""
    return float(np.cumsum(values)[-1]) if values.size else 0.0


def sma(values: FloatArray, period: int) -> FloatArray:
    x = _as_float(values)
    out = _nan(x.shape[0])
    if x.shape[0] >= period:
        out[period - 1 :] = _running_window_sums(x, period) / period
    return out


def _ema_from(values: list[float], seed: float, k: float) -> list[float]:
    previous = seed
    smoothed = [seed]
    append = smoothed.append
    for value in values:
        previous = ((value - previous) * k) + previous
        append(previous)
    return smoothed


def _ema_seeded_at(x: FloatArray, period: int, first_output: int, k: float) -> FloatArray:
    """TA-Lib INT_EMA: seed with the mean of the ``period`` values ending at ``first_output``, then recurse."""
    out = _nan(x.shape[0])
    if first_output >= x.shape[0]:
        return out
    seed = _sequential_sum(x[first_output - period + 1 : first_output + 1]) / period
    out[first_output:] = _ema_from(x[first_output + 1 :].tolist(), seed, k)
    return out


def ema(values: FloatArray, period: int) -> FloatArray:
    return _ema_seeded_at(_as_float(values), period, period - 1, 2.0 / (period + 1))


def _wilder_from(values: list[float], seed: float, period: int) -> list[float]:
    previous = seed
    weight = float(period - 1)
    smoothed = [seed]
    append = smoothed.append
    for value in values:
        previous = (previous * weight + value) / period
        append(previous)
    return smoothed


def rsi(values: FloatArray, period: int = 14) -> FloatArray:
    x = _as_float(values)
    out = _nan(x.shape[0])
    if x.shape[0] <= period:
        return out
    change = np.diff(x)
    gains = np.where(change < 0, 0.0, change)
    losses = np.where(change < 0, -change, 0.0)
    avg_gain = np.array(_wilder_from(gains[period:].tolist(), _sequential_sum(gains[:period]) / period, period))
    avg_loss = np.array(_wilder_from(losses[period:].tolist(), _sequential_sum(losses[:period]) / period, period))
    total = avg_gain + avg_loss
    is_zero = np.abs(total) < _TA_EPSILON
    out[period:] = np.where(is_zero, 0.0, 100.0 * (avg_gain / np.where(is_zero, 1.0, total)))
    return out


def true_range(high: FloatArray, low: FloatArray, close: FloatArray) -> FloatArray:
    """TA-Lib TRANGE: NaN on the first bar, which has no previous close."""
    h, lo, c = _as_float(high), _as_float(low), _as_float(close)
    out = _nan(h.shape[0])
    previous = c[:-1]
    out[1:] = np.maximum.reduce([h[1:] - lo[1:], np.abs(previous - h[1:]), np.abs(previous - lo[1:])])
    return out


def atr(high: FloatArray, low: FloatArray, close: FloatArray, period: int = 14) -> FloatArray:
    ranges = true_range(high, low, close)
    out = _nan(ranges.shape[0])
    if ranges.shape[0] <= period:
        return out
    seed = _sequential_sum(ranges[1 : period + 1]) / period
    out[period:] = _wilder_from(ranges[period + 1 :].tolist(), seed, period)
    return out


def macd(
    values: FloatArray, fast: int = 12, slow: int = 26, signal: int = 9
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """MACD line, signal line and histogram, all starting at index ``slow + signal - 2`` like TA-Lib.

    As in TA-Lib both EMAs start at index ``slow - 1``: the fast EMA is seeded with the mean of the ``fast``
    values ending there, not of the first ``fast`` values, so it differs from a standalone EMA.
    """
    x = _as_float(values)
    fast, slow = min(fast, slow), max(fast, slow)
    line = _ema_seeded_at(x, fast, slow - 1, 2.0 / (fast + 1)) - _ema_seeded_at(x, slow, slow - 1, 2.0 / (slow + 1))
    first_valid = slow + signal - 2
    signal_line = _nan(x.shape[0])
    if first_valid < x.shape[0]:
        signal_line[slow - 1 :] = _ema_seeded_at(line[slow - 1 :], signal, signal - 1, 2.0 / (signal + 1))
    line[:first_valid] = np.nan
    return line, signal_line, line - signal_line


def bollinger(
    values: FloatArray, period: int = 20, stddev_up: float = 2.0, stddev_down: float = 2.0
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Upper, middle (SMA) and lower bands with TA-Lib's population standard deviation, E[x²] - mean²."""
    x = _as_float(values)
    middle = sma(x, period)
    upper, lower = _nan(x.shape[0]), _nan(x.shape[0])
    if x.shape[0] < period:
        return upper, middle, lower
    mean = middle[period - 1 :]
    variance = _running_window_sums(x * x, period) / period - mean * mean
    deviation = np.where(variance < _TA_EPSILON, 0.0, np.sqrt(np.maximum(variance, 0.0)))
    upper[period - 1 :] = mean + deviation * stddev_up
    lower[period - 1 :] = mean - deviation * stddev_down
    return upper, middle, lower


def anchor_group_starts(open_time: IntArray, anchor: str) -> IntArray:
    """Start time of the UTC day/week (or 0 for no anchor) each bar belongs to."""
    if anchor == "day":
        return utc_day_start(open_time)
    if anchor == "week":
        return utc_week_start(open_time)
    return np.zeros_like(open_time)


def cumsum_by_group(values: FloatArray, group: IntArray) -> FloatArray:
    """Cumulative sum that restarts whenever ``group`` changes (groups are contiguous)."""
    total = np.cumsum(values)
    if total.size == 0:
        return total
    starts = np.flatnonzero(np.concatenate(([True], group[1:] != group[:-1])))
    before_group = np.concatenate(([0.0], total[:-1]))[starts]
    lengths = np.diff(np.append(starts, total.shape[0]))
    result: FloatArray = total - np.repeat(before_group, lengths)
    return result


def vwap(candles: Candles, anchor: str = "day") -> FloatArray:
    """Volume-weighted typical price ``(h + l + c) / 3`` since the anchor (UTC day/week start, or the first bar).

    NaN until the anchor period has traded some volume.
    """
    typical = (candles.high + candles.low + candles.close) / 3.0
    group = anchor_group_starts(candles.open_time, anchor)
    volume = cumsum_by_group(candles.volume, group)
    weighted = cumsum_by_group(typical * candles.volume, group)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(volume > 0, weighted / np.where(volume > 0, volume, 1.0), np.nan)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True, slots=True)
class IndicatorParams:
    sma_period: int = bounded(20, ge=2, le=100_000)
    ema_period: int = bounded(20, ge=2, le=100_000)
    rsi_period: int = bounded(14, ge=2, le=100_000)
    atr_period: int = bounded(14, ge=2, le=100_000)
    # Both in [2, 100000] with macd_fast < macd_slow: the ranges state the values that rule leaves reachable.
    macd_fast: int = bounded(12, ge=2, le=99_999)
    macd_slow: int = bounded(26, ge=3, le=100_000)
    macd_signal: int = bounded(9, ge=1, le=100_000)
    bollinger_period: int = bounded(20, ge=2, le=100_000)
    bollinger_stddev: float = bounded(2.0, gt=0, le=10)
    vwap_anchor: Anchor = "day"

    def __post_init__(self) -> None:
        check_bounds(self)
        _require(self.macd_fast < self.macd_slow, "macd_fast must be smaller than macd_slow")
        _require(self.vwap_anchor in ANCHORS, f"vwap_anchor must be one of {', '.join(ANCHORS)}")


@dataclass(frozen=True, slots=True, eq=False)
class IndicatorResult:
    params: IndicatorParams
    open_time: IntArray
    sma: FloatArray
    ema: FloatArray
    rsi: FloatArray
    atr: FloatArray
    macd: FloatArray
    macd_signal: FloatArray
    macd_hist: FloatArray
    bollinger_upper: FloatArray
    bollinger_middle: FloatArray
    bollinger_lower: FloatArray
    vwap: FloatArray

    def to_dict(self) -> dict[str, Any]:
        series = (
            "sma", "ema", "rsi", "atr", "macd", "macd_signal", "macd_hist",
            "bollinger_upper", "bollinger_middle", "bollinger_lower", "vwap",
        )  # fmt: skip
        result: dict[str, Any] = {"params": _params_dict(self.params), "open_time": self.open_time.tolist()}
        for name in series:
            result[name] = json_floats(getattr(self, name))
        return result


def _params_dict(params: IndicatorParams) -> dict[str, Any]:
    return {name: getattr(params, name) for name in params.__slots__}


def compute_indicators(
    candles: Candles, params: IndicatorParams | None = None, *, precomputed_atr: FloatArray | None = None
) -> IndicatorResult:
    p = params or IndicatorParams()
    close = candles.close
    line, signal_line, histogram = macd(close, p.macd_fast, p.macd_slow, p.macd_signal)
    upper, middle, lower = bollinger(close, p.bollinger_period, p.bollinger_stddev, p.bollinger_stddev)
    average_range = (
        precomputed_atr if precomputed_atr is not None else atr(candles.high, candles.low, close, p.atr_period)
    )
    return IndicatorResult(
        params=p,
        open_time=candles.open_time,
        sma=sma(close, p.sma_period),
        ema=ema(close, p.ema_period),
        rsi=rsi(close, p.rsi_period),
        atr=average_range,
        macd=line,
        macd_signal=signal_line,
        macd_hist=histogram,
        bollinger_upper=upper,
        bollinger_middle=middle,
        bollinger_lower=lower,
        vwap=vwap(candles, p.vwap_anchor),
    )
