"""Input containers and JSON helpers shared by every analytics module.

Time convention (used by every module): bar ``i`` opens at ``open_time[i]`` and closes at
``open_time[i] + interval_ms``. The interval is either given explicitly or inferred as the median spacing of the
open times. A uniform interval (rather than ``open_time[i + 1]``) keeps the close time of a bar identical whether
or not later bars exist, which is what prefix-replay causality needs when the data has gaps.

Every event's ``confirmed_time`` is the close time of the bar whose close made the event knowable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

MS_PER_DAY = 86_400_000
MS_PER_WEEK = 7 * MS_PER_DAY
# 1970-01-01 was a Thursday; ISO weeks start on Monday, four days later.
_WEEK_OFFSET_MS = 4 * MS_PER_DAY

BUY = 1
SELL = -1


def _frozen(array: NDArray[Any]) -> NDArray[Any]:
    array.setflags(write=False)
    return array


def _float_column(name: str, values: ArrayLike, length: int | None) -> FloatArray:
    column = np.array(values, dtype=np.float64, copy=True).reshape(-1)
    if length is not None and column.shape[0] != length:
        raise ValueError(f"{name} has {column.shape[0]} values, expected {length}")
    bad = np.flatnonzero(~np.isfinite(column))
    if bad.size:
        raise ValueError(f"{name}[{int(bad[0])}] is not a finite number")
    return column


def _first_violation(mask: NDArray[np.bool_]) -> int | None:
    bad = np.flatnonzero(mask)
    return int(bad[0]) if bad.size else None


def _check(name: str, mask: NDArray[np.bool_], message: str) -> None:
    index = _first_violation(mask)
    if index is not None:
        raise ValueError(f"{name}[{index}] {message}")


@dataclass(frozen=True, slots=True, eq=False)
class Candles:
    """Closed OHLCV bars, oldest first. Build with :meth:`from_arrays`, which validates and copies."""

    open_time: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray
    taker_buy_volume: FloatArray | None
    trade_count: IntArray | None
    interval_ms: int

    @classmethod
    def from_arrays(
        cls,
        *,
        open_time: ArrayLike,
        open: ArrayLike,
        high: ArrayLike,
        low: ArrayLike,
        close: ArrayLike,
        volume: ArrayLike,
        taker_buy_volume: ArrayLike | None = None,
        trade_count: ArrayLike | None = None,
        interval_ms: int | None = None,
    ) -> Candles:
        """Validate and freeze candle columns.

        Raises ``ValueError`` naming the first offending element: non-finite numbers, ``low > min(open, close)``,
        ``high < max(open, close)``, negative volume, taker-buy volume outside ``[0, volume]``, open times that
        are negative or not strictly increasing. ``interval_ms`` defaults to the median open-time spacing and is
        required when fewer than two candles are given.
        """
        times = np.array(open_time, dtype=np.int64, copy=True).reshape(-1)
        n = times.shape[0]
        if n == 0:
            raise ValueError("at least one candle is required")
        _check("open_time", times < 0, "is negative")
        _check("open_time", np.concatenate(([False], np.diff(times) <= 0)), "is not after the previous open time")
        o = _float_column("open", open, n)
        h = _float_column("high", high, n)
        lo = _float_column("low", low, n)
        c = _float_column("close", close, n)
        v = _float_column("volume", volume, n)
        _check("low", lo > np.minimum(o, c), "is above min(open, close)")
        _check("high", h < np.maximum(o, c), "is below max(open, close)")
        _check("volume", v < 0, "is negative")
        taker: FloatArray | None = None
        if taker_buy_volume is not None:
            taker = _float_column("taker_buy_volume", taker_buy_volume, n)
            _check("taker_buy_volume", (taker < 0) | (taker > v), "is outside [0, volume]")
        count: IntArray | None = None
        if trade_count is not None:
            count = np.array(trade_count, dtype=np.int64, copy=True).reshape(-1)
            if count.shape[0] != n:
                raise ValueError(f"trade_count has {count.shape[0]} values, expected {n}")
            _check("trade_count", count < 0, "is negative")
        if interval_ms is None:
            if n < 2:
                raise ValueError("interval_ms is required when fewer than two candles are given")
            interval_ms = int(np.median(np.diff(times)))
        if interval_ms <= 0:
            raise ValueError("interval_ms must be positive")
        return cls(
            open_time=_frozen(times),
            open=_frozen(o),
            high=_frozen(h),
            low=_frozen(lo),
            close=_frozen(c),
            volume=_frozen(v),
            taker_buy_volume=None if taker is None else _frozen(taker),
            trade_count=None if count is None else _frozen(count),
            interval_ms=int(interval_ms),
        )

    def __len__(self) -> int:
        return int(self.open_time.shape[0])

    @property
    def close_time(self) -> IntArray:
        """Close time of every bar: ``open_time + interval_ms`` (see the module docstring)."""
        return self.open_time + self.interval_ms

    def head(self, count: int) -> Candles:
        """The first ``count`` bars with the same interval: the view a live run had at that bar's close."""
        if not 1 <= count <= len(self):
            raise ValueError(f"count must be in [1, {len(self)}]")

        def cut(column: NDArray[Any] | None) -> Any:
            return None if column is None else column[:count]

        return Candles(
            open_time=self.open_time[:count],
            open=self.open[:count],
            high=self.high[:count],
            low=self.low[:count],
            close=self.close[:count],
            volume=self.volume[:count],
            taker_buy_volume=cut(self.taker_buy_volume),
            trade_count=cut(self.trade_count),
            interval_ms=self.interval_ms,
        )


@dataclass(frozen=True, slots=True, eq=False)
class Trades:
    """Individual trades, in time order. ``side`` is +1 when the taker bought and -1 when the taker sold."""

    time: IntArray
    price: FloatArray
    qty: FloatArray
    side: NDArray[np.int8]

    @classmethod
    def from_arrays(cls, *, time: ArrayLike, price: ArrayLike, qty: ArrayLike, side: ArrayLike) -> Trades:
        """Validate and freeze trade columns (finite, price > 0, qty >= 0, side in {+1, -1}, time non-decreasing)."""
        times = np.array(time, dtype=np.int64, copy=True).reshape(-1)
        n = times.shape[0]
        _check("time", np.concatenate(([False], np.diff(times) < 0)) if n else np.zeros(0, bool), "goes back")
        p = _float_column("price", price, n)
        q = _float_column("qty", qty, n)
        _check("price", p <= 0, "is not positive")
        _check("qty", q < 0, "is negative")
        s = np.array(side, copy=True).reshape(-1)
        if s.shape[0] != n:
            raise ValueError(f"side has {s.shape[0]} values, expected {n}")
        _check("side", (s != BUY) & (s != SELL), "is not +1 (taker buy) or -1 (taker sell)")
        return cls(time=_frozen(times), price=_frozen(p), qty=_frozen(q), side=_frozen(s.astype(np.int8)))

    def __len__(self) -> int:
        return int(self.time.shape[0])


@dataclass(frozen=True, slots=True, eq=False)
class Liquidations:
    """Forced orders reported by a venue. ``side`` is the forced order's side: -1 (a sell) liquidates a long,
    +1 (a buy) liquidates a short — Binance ``forceOrder`` ``S`` uses the same convention."""

    time: IntArray
    qty: FloatArray
    side: NDArray[np.int8]

    @classmethod
    def from_arrays(cls, *, time: ArrayLike, qty: ArrayLike, side: ArrayLike) -> Liquidations:
        trades = Trades.from_arrays(time=time, price=np.ones(np.shape(time)), qty=qty, side=side)
        return cls(time=trades.time, qty=trades.qty, side=trades.side)


def taker_side_from_binance_maker_flag(buyer_is_maker: ArrayLike) -> NDArray[np.int8]:
    """Binance aggTrade ``m=true`` means the buyer was the maker, so the taker sold (-1)."""
    flags = np.asarray(buyer_is_maker, dtype=bool)
    return np.where(flags, SELL, BUY).astype(np.int8)


def taker_side_from_labels(labels: list[str]) -> NDArray[np.int8]:
    """Bybit ``S`` ("Buy"/"Sell") and CoinAPI ``taker_side`` ("BUY", "SELL", "BUY_ESTIMATED", …) to +1/-1."""
    sides = np.empty(len(labels), dtype=np.int8)
    for index, label in enumerate(labels):
        upper = label.upper()
        if upper.startswith("BUY"):
            sides[index] = BUY
        elif upper.startswith("SELL"):
            sides[index] = SELL
        else:
            raise ValueError(f"taker side [{index}] {label!r} is neither a buy nor a sell")
    return sides


def utc_day_start(times: IntArray) -> IntArray:
    return times - times % MS_PER_DAY


def utc_week_start(times: IntArray) -> IntArray:
    """Monday 00:00 UTC of the ISO week containing each time."""
    return times - (times - _WEEK_OFFSET_MS) % MS_PER_WEEK


def weighted_counts(index: IntArray, weights: FloatArray, length: int) -> FloatArray:
    """Sum of ``weights`` per integer ``index`` in ``[0, length)`` (a typed ``np.bincount``)."""
    return np.bincount(index, weights=weights, minlength=length).astype(np.float64, copy=False)


def json_float(value: float) -> float | None:
    """NaN and infinities are not JSON: they become ``None``."""
    number = float(value)
    return number if np.isfinite(number) else None


def json_floats(values: FloatArray) -> list[float | None]:
    out: NDArray[Any] = np.asarray(values, dtype=np.float64).astype(object)
    out[~np.isfinite(np.asarray(values, dtype=np.float64))] = None
    result: list[float | None] = out.tolist()
    return result
