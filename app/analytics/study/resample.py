"""Longer bars from shorter ones, keeping only complete buckets.

A bucket is ``[k · interval, (k + 1) · interval)`` in epoch milliseconds: for 4 h bars that is the UTC boundaries
00:00, 04:00 … (the epoch is a UTC midnight and 4 h divides a day). A bucket is kept only when every one of its
``interval / source interval`` bars is present: a 4 h bar built from three hours would have a shorter range and
volume than its neighbours and bias every range- or volume-based component. Open of the first bar, highest high,
lowest low, close of the last, summed volumes (taker-buy volume too when the source has it).
"""

from __future__ import annotations

import numpy as np

from app.analytics.types import Candles


def complete_buckets(candles: Candles, interval_ms: int) -> Candles:
    source = candles.interval_ms
    if interval_ms % source:
        raise ValueError(f"{interval_ms} ms is not a multiple of the source bars' {source} ms")
    per_bucket = interval_ms // source
    bucket = candles.open_time // interval_ms
    starts = np.flatnonzero(np.concatenate(([True], np.diff(bucket) != 0)))
    counts = np.diff(np.append(starts, len(candles)))
    # Open times strictly increase and are multiples of the source interval, so a full count means no bar is missing.
    whole = starts[counts == per_bucket]
    if whole.size == 0:
        raise ValueError("no complete bucket")
    rows = whole[:, None] + np.arange(per_bucket)[None, :]
    taker = candles.taker_buy_volume
    return Candles.from_arrays(
        open_time=bucket[whole] * interval_ms,
        open=candles.open[whole],
        high=candles.high[rows].max(axis=1),
        low=candles.low[rows].min(axis=1),
        close=candles.close[rows[:, -1]],
        volume=candles.volume[rows].sum(axis=1),
        taker_buy_volume=None if taker is None else taker[rows].sum(axis=1),
        interval_ms=interval_ms,
    )
