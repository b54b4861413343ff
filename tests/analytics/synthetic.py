"""Small deterministic candle builders for tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from app.analytics import Candles

HOUR_MS = 3_600_000


def candles_from_closes(closes: Sequence[float], spread: float = 1.0, start: int = 0) -> Candles:
    """Bars opening at the previous close, with wicks ``spread`` beyond the body."""
    close = np.asarray(closes, dtype=np.float64)
    open_ = np.concatenate((close[:1], close[:-1]))
    return Candles.from_arrays(
        open_time=start + np.arange(close.shape[0]) * HOUR_MS,
        open=open_,
        high=np.maximum(open_, close) + spread,
        low=np.minimum(open_, close) - spread,
        close=close,
        volume=np.full(close.shape[0], 10.0),
        interval_ms=HOUR_MS,
    )


def ohlc_candles(rows: Sequence[tuple[float, float, float, float]], volume: float = 10.0) -> Candles:
    """Bars from explicit (open, high, low, close) rows, one hour apart from time 0."""
    table = np.asarray(rows, dtype=np.float64)
    return Candles.from_arrays(
        open_time=np.arange(table.shape[0]) * HOUR_MS,
        open=table[:, 0],
        high=table[:, 1],
        low=table[:, 2],
        close=table[:, 3],
        volume=np.full(table.shape[0], volume),
        interval_ms=HOUR_MS,
    )


def random_walk(count: int, seed: int = 7) -> Candles:
    rng = np.random.default_rng(seed)
    close = 30_000 + np.cumsum(rng.standard_normal(count)) * 20
    open_ = np.concatenate((close[:1], close[:-1]))
    return Candles.from_arrays(
        open_time=np.arange(count, dtype=np.int64) * 60_000,
        open=open_,
        high=np.maximum(open_, close) + rng.random(count) * 10,
        low=np.minimum(open_, close) - rng.random(count) * 10,
        close=close,
        volume=rng.random(count) * 50,
        taker_buy_volume=None,
        interval_ms=60_000,
    )
