"""Builders for the signal track-record tests: small hand-written series and a deterministic rule on real candles."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from app.analytics.evaluation import SignalSeries

HOUR_MS = 3_600_000
NAN = float("nan")


def series(
    bars: Sequence[tuple[float, float, float, float]],
    bias: Sequence[int],
    *,
    stop: Sequence[float] | None = None,
    target: Sequence[float] | None = None,
    score: Sequence[float] | None = None,
    confidence: Sequence[float] | None = None,
    open_time: Sequence[int] | None = None,
) -> SignalSeries:
    """``bars`` as (open, high, low, close); missing levels are NaN, a missing score is the bias itself."""
    n = len(bars)
    ohlc = np.array(bars, dtype=np.float64).reshape(n, 4)
    return SignalSeries.from_arrays(
        open_time=open_time if open_time is not None else np.arange(n) * HOUR_MS,
        open=ohlc[:, 0],
        high=ohlc[:, 1],
        low=ohlc[:, 2],
        close=ohlc[:, 3],
        bias=bias,
        score=score if score is not None else np.asarray(bias, dtype=np.float64),
        confidence=confidence if confidence is not None else np.full(n, 0.5),
        stop=stop if stop is not None else np.full(n, NAN),
        target=target if target is not None else np.full(n, NAN),
    )


def open_at_100(moves: Sequence[float]) -> list[tuple[float, float, float, float]]:
    """Bars opening at 100 and closing at ``100 · (1 + move)``: the h = 1 forward return of bar t is move[t + 1]."""
    bars = []
    for move in moves:
        close = 100 * (1 + move)
        bars.append((100.0, max(100.0, close), min(100.0, close), close))
    return bars
