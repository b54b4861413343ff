"""Fibonacci retracements and extensions anchored on the last two confirmed opposite swings.

Anchors (same swing detector as SMC): the latest confirmed swing ``S2`` and the latest swing of the opposite
side pivoting before it, ``S1``. When ``S2`` is a high the leg is ``up`` (low ``L`` before high ``H``,
``D = H - L``): retracements ``H - r·D``, extensions ``L + e·D``. When ``S2`` is a low the leg is ``down``:
retracements ``L + r·D``, extensions ``H - e·D``. With a third swing ``S0`` (opposite of ``S1``, pivoting before
it) the three-point extension is ``C + e·(B - A)`` with ``A, B, C = S0, S1, S2``.

``confirmed_time`` is the confirmation of ``S2``: the result only changes when a new swing is confirmed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from app.analytics.bounds import bounded, bounded_items, check_bounds
from app.analytics.swings import Swings, detect_swings
from app.analytics.types import Candles, FloatArray, IntArray

DEFAULT_RETRACEMENTS = (0.236, 0.382, 0.5, 0.618, 0.786)
DEFAULT_EXTENSIONS = (1.272, 1.414, 1.618, 2.0, 2.618)


# Each ratio is one output level per anchor set; 20 is four times the defaults' count.
MAX_RATIOS = 20


def _check_increasing(name: str, ratios: tuple[float, ...]) -> None:
    if np.any(np.diff(np.asarray(ratios, dtype=np.float64)) <= 0):
        raise ValueError(f"{name} must be strictly increasing")


@dataclass(frozen=True, slots=True)
class FibonacciParams:
    swing_length: int = bounded(5, ge=1, le=500)
    retracements: tuple[float, ...] = bounded_items(
        DEFAULT_RETRACEMENTS, min_length=1, max_length=MAX_RATIOS, gt=0, le=1
    )
    extensions: tuple[float, ...] = bounded_items(DEFAULT_EXTENSIONS, min_length=1, max_length=MAX_RATIOS, gt=0, le=100)

    def __post_init__(self) -> None:
        check_bounds(self)
        _check_increasing("retracements", tuple(self.retracements))
        _check_increasing("extensions", tuple(self.extensions))


def retracement_levels(low: float, high: float, ratios: FloatArray, direction: str) -> FloatArray:
    span = high - low
    result: FloatArray = high - ratios * span if direction == "up" else low + ratios * span
    return result


def extension_levels(low: float, high: float, ratios: FloatArray, direction: str) -> FloatArray:
    span = high - low
    result: FloatArray = low + ratios * span if direction == "up" else high - ratios * span
    return result


def three_point_extension(a: float, b: float, c: float, ratios: FloatArray) -> FloatArray:
    result: FloatArray = c + ratios * (b - a)
    return result


@dataclass(frozen=True, slots=True)
class FibAnchor:
    role: str  # "A", "B" or "C" in the three-point notation; the two-point leg is B → C
    side: str  # "high" or "low"
    price: float
    time: int  # open time of the pivot bar
    confirmed_time: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role, "side": self.side, "price": self.price,
            "time": self.time, "confirmed_time": self.confirmed_time,
        }  # fmt: skip


@dataclass(frozen=True, slots=True, eq=False)
class FibonacciResult:
    params: FibonacciParams
    direction: str | None  # "up", "down", or None without two opposite swings
    anchors: tuple[FibAnchor, ...]
    confirmed_time: int | None
    retracements: FloatArray
    extensions: FloatArray
    projections: FloatArray  # three-point extensions; empty without a third swing
    last_close: float

    def levels(self) -> list[tuple[str, float, float]]:
        """(kind, ratio, price) of every level."""
        rows = []
        for kind, ratios, prices in (
            ("retracement", self.params.retracements, self.retracements),
            ("extension", self.params.extensions, self.extensions),
            ("projection", self.params.extensions, self.projections),
        ):
            rows += [(kind, float(r), float(p)) for r, p in zip(ratios, prices.tolist(), strict=False)]
        return rows

    def nearest(self) -> dict[str, Any] | None:
        levels = self.levels()
        if not levels:
            return None
        distances = [abs(price - self.last_close) for _, _, price in levels]
        kind, ratio, price = levels[int(np.argmin(distances))]
        return {"kind": kind, "ratio": ratio, "price": price, "distance": price - self.last_close}

    def to_dict(self) -> dict[str, Any]:
        def rows(ratios: tuple[float, ...], prices: FloatArray) -> list[dict[str, float]]:
            return [{"ratio": float(r), "price": p} for r, p in zip(ratios, prices.tolist(), strict=False)]

        return {
            "params": {
                "swing_length": self.params.swing_length,
                "retracements": list(self.params.retracements),
                "extensions": list(self.params.extensions),
            },
            "direction": self.direction,
            "confirmed_time": self.confirmed_time,
            "anchors": [anchor.to_dict() for anchor in self.anchors],
            "retracements": rows(self.params.retracements, self.retracements),
            "extensions": rows(self.params.extensions, self.extensions),
            "three_point_extensions": rows(self.params.extensions, self.projections),
            "last_close": self.last_close,
            "nearest": self.nearest(),
        }


def _previous_opposite(swings: Swings, row: int) -> int | None:
    """Latest swing row of the other side whose pivot is strictly before ``row``'s pivot."""
    candidates = np.flatnonzero((swings.is_high != swings.is_high[row]) & (swings.index < swings.index[row]))
    return int(candidates[-1]) if candidates.size else None


def fibonacci_from_swings(
    swings: Swings,
    open_time: IntArray,
    close_time: IntArray,
    last_close: float,
    params: FibonacciParams | None = None,
) -> FibonacciResult:
    """Levels from already confirmed swings (``swings`` must hold only swings confirmed by the last bar)."""
    p = params or FibonacciParams()
    empty = np.zeros(0)
    if len(swings) == 0 or (second := _previous_opposite(swings, len(swings) - 1)) is None:
        return FibonacciResult(p, None, (), None, empty, empty, empty, last_close)
    last = len(swings) - 1
    chain = [second, last]
    third = _previous_opposite(swings, second)
    if third is not None:
        chain.insert(0, third)
    roles = ("A", "B", "C")[3 - len(chain) :]
    anchors = tuple(
        FibAnchor(
            role=role,
            side="high" if swings.is_high[row] else "low",
            price=float(swings.price[row]),
            time=int(open_time[swings.index[row]]),
            confirmed_time=int(close_time[swings.confirmed_index[row]]),
        )
        for role, row in zip(roles, chain, strict=True)
    )
    direction = "up" if swings.is_high[last] else "down"
    high = float(swings.price[last] if direction == "up" else swings.price[second])
    low = float(swings.price[second] if direction == "up" else swings.price[last])
    retracement_ratios = np.asarray(p.retracements, dtype=np.float64)
    extension_ratios = np.asarray(p.extensions, dtype=np.float64)
    projections = empty
    if third is not None:
        a, b, c = (float(swings.price[row]) for row in chain)
        projections = three_point_extension(a, b, c, extension_ratios)
    return FibonacciResult(
        params=p,
        direction=direction,
        anchors=anchors,
        confirmed_time=anchors[-1].confirmed_time,
        retracements=retracement_levels(low, high, retracement_ratios, direction),
        extensions=extension_levels(low, high, extension_ratios, direction),
        projections=projections,
        last_close=last_close,
    )


def compute_fibonacci(
    candles: Candles, params: FibonacciParams | None = None, *, swings: Swings | None = None
) -> FibonacciResult:
    p = params or FibonacciParams()
    if swings is None or swings.length != p.swing_length:
        swings = detect_swings(candles.high, candles.low, p.swing_length)
    return fibonacci_from_swings(swings, candles.open_time, candles.close_time, float(candles.close[-1]), p)
