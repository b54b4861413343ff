"""Inputs of the signal track record: one row per closed bar, the signal published at its close and the candles.

The evaluation never reads another module: the signal series is handed over as plain arrays, so any producer
(the live engine replayed bar by bar, a vendor's export) can be audited the same way.

Decisions on the inputs:

* ``bias`` is 1 (long), -1 (short) or 0 (neutral, no trade); ``score`` in [-1, 1]; ``confidence`` in [0, 1].
* ``stop`` and ``target`` are absolute prices (NaN when the signal published none), as a follower would place them.
* ``open_time`` must strictly increase. ``interval_ms`` (the bar length) is inferred as the median spacing when not
  given; a spacing larger than it is a gap (missing bars). Horizons count rows, not clock time: a gap is reported
  (``gaps``, ``missing_bars`` and, per horizon, ``spanning_gaps``), never filled in or silently skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from app.analytics.bounds import bounded, bounded_items, check_bounds

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BiasArray = NDArray[np.int8]


def _column(name: str, values: ArrayLike, length: int | None, dtype: Any = np.float64) -> NDArray[Any]:
    column = np.array(values, dtype=dtype, copy=True).reshape(-1)
    if length is not None and column.shape[0] != length:
        raise ValueError(f"{name} has {column.shape[0]} values, expected {length}")
    column.setflags(write=False)
    return column


def _require(name: str, bad: NDArray[np.bool_], message: str) -> None:
    where = np.flatnonzero(bad)
    if where.size:
        raise ValueError(f"{name}[{int(where[0])}] {message}")


@dataclass(frozen=True, slots=True, eq=False)
class SignalSeries:
    """The per-bar signal and its candles, oldest first. Build with :meth:`from_arrays` (validates and copies)."""

    open_time: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    bias: BiasArray
    score: FloatArray
    confidence: FloatArray
    stop: FloatArray
    target: FloatArray
    interval_ms: int
    # Rows whose signals are evaluated: the first `evaluated_rows`; later rows only lend their prices to the
    # outcomes of earlier ones (a track record from..to still lets a trade opened at `to` run its horizon).
    evaluated_rows: int = -1

    @classmethod
    def from_arrays(
        cls,
        *,
        open_time: ArrayLike,
        open: ArrayLike,
        high: ArrayLike,
        low: ArrayLike,
        close: ArrayLike,
        bias: ArrayLike,
        score: ArrayLike,
        confidence: ArrayLike,
        stop: ArrayLike,
        target: ArrayLike,
        interval_ms: int | None = None,
        evaluated_rows: int | None = None,
    ) -> SignalSeries:
        times = _column("open_time", open_time, None, np.int64)
        n = times.shape[0]
        if evaluated_rows is not None and not 0 <= evaluated_rows <= n:
            raise ValueError(f"evaluated_rows must be in [0, {n}]")
        prices = {name: _column(name, v, n) for name, v in (("open", open), ("high", high), ("low", low))}
        prices["close"] = _column("close", close, n)
        for name, column in prices.items():
            _require(name, ~(np.isfinite(column) & (column > 0)), "is not a finite positive price")
        _require("high", prices["high"] < np.maximum(prices["open"], prices["close"]), "is below open or close")
        _require("low", prices["low"] > np.minimum(prices["open"], prices["close"]), "is above open or close")
        _require("open_time", np.diff(times) <= 0, "does not increase")
        raw_bias = _column("bias", bias, n)
        _require("bias", ~np.isin(raw_bias, (-1.0, 0.0, 1.0)), "is not -1, 0 or 1")
        score_ = _column("score", score, n)
        _require("score", ~(np.abs(score_) <= 1), "is not in [-1, 1]")
        confidence_ = _column("confidence", confidence, n)
        _require("confidence", ~((confidence_ >= 0) & (confidence_ <= 1)), "is not in [0, 1]")
        levels = {"stop": _column("stop", stop, n), "target": _column("target", target, n)}
        for name, column in levels.items():
            _require(name, ~(np.isnan(column) | (np.isfinite(column) & (column > 0))), "is not NaN or a price")
        if interval_ms is None:
            interval_ms = int(np.median(np.diff(times))) if n >= 2 else 0
        if interval_ms < 0:
            raise ValueError("interval_ms must not be negative")
        return cls(
            open_time=times,
            open=prices["open"],
            high=prices["high"],
            low=prices["low"],
            close=prices["close"],
            bias=_column("bias", raw_bias, n, np.int8),
            score=score_,
            confidence=confidence_,
            stop=levels["stop"],
            target=levels["target"],
            interval_ms=interval_ms,
            evaluated_rows=n if evaluated_rows is None else evaluated_rows,
        )

    def __len__(self) -> int:
        return int(self.open_time.shape[0])

    def evaluated(self) -> NDArray[np.bool_]:
        """Rows whose signals count (see ``evaluated_rows``; -1, the dataclass default, means every row)."""
        rows: NDArray[np.bool_] = np.arange(len(self)) < (len(self) if self.evaluated_rows < 0 else self.evaluated_rows)
        return rows

    def gap_flags(self) -> NDArray[np.bool_]:
        """``flags[i]`` is True when bars are missing between bar ``i`` and bar ``i + 1`` (length ``n - 1``)."""
        if self.interval_ms <= 0:
            return np.zeros(max(len(self) - 1, 0), dtype=np.bool_)
        result: NDArray[np.bool_] = np.diff(self.open_time) > self.interval_ms
        return result

    def missing_bars(self) -> int:
        if self.interval_ms <= 0:
            return 0
        steps = np.diff(self.open_time) // self.interval_ms
        return int(np.sum(np.maximum(steps - 1, 0)))


@dataclass(frozen=True, slots=True)
class EvaluationParams:
    """What the track record measures; every bound named (settings map onto these later)."""

    # Horizons in bars, strictly increasing. The stop/target scan costs one vectorised step per bar of the longest
    # horizon while a trade is still open, hence the bound (1 000 hourly bars are six weeks).
    horizons: tuple[int, ...] = bounded_items((1, 4, 12, 24), min_length=1, max_length=16, ge=1, le=1_000)
    # Costs in basis points per side, paid on entry and again on exit.
    fee_bps: float = bounded(5.0, ge=0, le=1_000)
    slippage_bps: float = bounded(5.0, ge=0, le=1_000)
    # Below this many observations a figure is not reported (null, with its n).
    min_signals: int = bounded(30, ge=1, le=1_000_000)
    permutations: int = bounded(1_000, ge=1_000, le=100_000)
    bootstrap_resamples: int = bounded(1_000, ge=100, le=100_000)
    calibration_buckets: int = bounded(5, ge=1, le=100)
    seed: int = bounded(17, ge=0, le=2**32 - 1)
    # Block length (bars) of the bootstrap and of the block permutation; None: chosen from the horizon and the
    # sample size (block_for, permutation_block_for).
    block_length: int | None = bounded(None, ge=1, le=100_000)

    def __post_init__(self) -> None:
        check_bounds(self)
        if not all(isinstance(h, int) and not isinstance(h, bool) for h in self.horizons):
            raise ValueError("horizons must be integers")
        if any(b <= a for a, b in zip(self.horizons, self.horizons[1:], strict=False)):
            raise ValueError("horizons must be strictly increasing")
        if self.block_length is not None and not isinstance(self.block_length, int):
            raise ValueError("block_length must be an integer")

    @property
    def cost_per_side(self) -> float:
        """Fee plus slippage as a fraction of the traded price, one side."""
        return (self.fee_bps + self.slippage_bps) / 10_000

    def block_for(self, horizon: int, n: int) -> int:
        """Bootstrap blocks: overlapping h-bar returns are correlated over h - 1 lags, hence at least h; the
        n^(1/3) rate of the block-bootstrap literature otherwise."""
        if self.block_length is not None:
            return self.block_length
        return max(horizon, int(np.ceil(max(n, 1) ** (1 / 3))))

    def permutation_block_for(self, horizon: int, n: int) -> int:
        """Permutation blocks: at least h, and sqrt(n) bars (see ``permutation.py``)."""
        if self.block_length is not None:
            return self.block_length
        return max(horizon, int(np.ceil(np.sqrt(max(n, 1)))))
