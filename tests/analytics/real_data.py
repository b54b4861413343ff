"""Loader for the shared real BTC-USD hourly candles (../shared/data next to the repository)."""

from __future__ import annotations

import csv
import functools
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from app.analytics import Candles

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
HOURLY_CANDLES = SHARED_DATA / "candles" / "coinbase_btcusd_1h.csv"
HOUR_MS = 3_600_000


@functools.cache
def _load(path: Path) -> Candles:
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))[2:]  # a banner line, then the header
    times = np.array(
        [int(datetime.strptime(row[0], "%Y-%m-%d %I-%p").replace(tzinfo=UTC).timestamp() * 1000) for row in rows]
    )
    # Rows are newest first and a handful are out of order: sort by time.
    order = np.argsort(times, kind="stable")
    columns = np.array([[float(row[i]) for i in (2, 3, 4, 5, 6)] for row in rows])[order]
    return Candles.from_arrays(
        open_time=times[order],
        open=columns[:, 0],
        high=columns[:, 1],
        low=columns[:, 2],
        close=columns[:, 3],
        volume=columns[:, 4],
        interval_ms=HOUR_MS,
    )


def hourly_candles() -> Candles:
    """The 20 111 real hourly candles, oldest first; skips the test when ../shared/data is absent."""
    if not HOURLY_CANDLES.is_file():
        pytest.skip(f"real candle data not found at {HOURLY_CANDLES} (only present next to the project's checkout)")
    return _load(HOURLY_CANDLES)


def cut_points(count: int, points: int, minimum: int = 30) -> list[int]:
    """``points`` distinct prefix lengths spread over ``[minimum, count]``, always including ``count``."""
    return sorted({round(float(x)) for x in np.linspace(minimum, count, points)})
