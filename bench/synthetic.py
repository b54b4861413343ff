"""Synthetic closed bars in the stored candle layout (a seeded random walk), for benchmarks and end-to-end tests
that seed Redis the way ingestion does."""

from __future__ import annotations

from typing import Any

import numpy as np


def stored_walk(
    count: int, *, interval_ms: int, end_ms: int, seed: int, step: float = 25.0, wick: float = 4.0, trades: int = 30
) -> list[dict[str, Any]]:
    """`count` closed bars of `interval_ms`, the last one opening at or before `end_ms - interval_ms`."""
    rng = np.random.default_rng(seed)
    close = 60_000 + np.cumsum(rng.standard_normal(count)) * step
    start = (end_ms // interval_ms) * interval_ms - count * interval_ms
    rows = []
    for i, c in enumerate(close.tolist()):
        o = float(close[i - 1]) if i else c
        v = float(rng.random() * 40 + 1)
        buy = v * float(rng.random())
        rows.append({
            "t": start + i * interval_ms, "o": o, "h": max(o, c) + wick, "l": min(o, c) - wick, "c": c, "v": v,
            "buy_v": buy, "sell_v": v - buy, "delta": 2 * buy - v, "trades": trades, "vwap": (o + c) / 2,
            "closed": True,
        })  # fmt: skip
    return rows
