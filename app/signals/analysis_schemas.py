"""OpenAPI shape of `GET /v1/analysis/{venue}/{symbol}/{module}`, with one example per module.

The examples are not written by hand: they are the route's own worker function run once, at import, on a fixed
120-bar series of 5-minute BTCUSDT bars in the stored layout (~30 ms), so they always have the exact shape the
route returns and cannot go stale when a module's output changes (floats are rounded to 4 decimals).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import orjson
from pydantic import BaseModel, Field

from app.analytics import AnalysisParams
from app.analytics.engine import MODULES
from app.signals.analysis_compute import AnalysisSpec, compute_analysis
from app.signals.compute import SignalInput
from app.signals.schemas import FeedFreshness, SideSource

ModuleName = Literal["cvd", "orderflow", "smc", "fibonacci", "indicators"]
assert set(ModuleName.__args__) == set(MODULES)  # type: ignore[attr-defined]  # noqa: S101 - import-time guard

_RENDERED = "as POST /v1/analyze renders it for the same candles and parameters; present when `module` is"


class AnalysisResponse(BaseModel):
    venue: str
    symbol: str
    timeframe: str
    module: ModuleName
    as_of: int = Field(description="Close time of the last bar used, epoch ms")
    as_of_iso: str = Field(description="`as_of` as ISO 8601 (UTC)")
    forming: bool = Field(description="true when the last bar used is the forming (not yet closed) bar")
    bar_count: int
    include_series: bool
    inputs: dict[str, SideSource] = Field(
        description="For `cvd` and `orderflow`: where the taker side comes from (stored bars carry the exchange's "
        "taker-buy volume, so it is exact). Empty for modules that read prices and volume only."
    )
    cvd: dict[str, Any] | None = Field(default=None, description=f"Cumulative volume delta, {_RENDERED} `cvd`")
    orderflow: dict[str, Any] | None = Field(
        default=None, description=f"Footprint, volume profile, absorption, {_RENDERED} `orderflow`"
    )
    smc: dict[str, Any] | None = Field(default=None, description=f"Smart-money concepts, {_RENDERED} `smc`")
    fibonacci: dict[str, Any] | None = Field(default=None, description=f"Fibonacci levels, {_RENDERED} `fibonacci`")
    indicators: dict[str, Any] | None = Field(
        default=None, description=f"SMA, EMA, RSI, ATR, MACD, Bollinger, VWAP, {_RENDERED} `indicators`"
    )
    feed: FeedFreshness


_STEP_MS = 300_000
_START_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z


def _example_rows(count: int = 120) -> list[dict[str, Any]]:
    """A seeded random walk around 64 000 in the stored candle layout, prices on a 0.1 tick."""
    rng = np.random.default_rng(7)
    close = np.round(64_000 + np.cumsum(rng.standard_normal(count)) * 40, 1)
    open_ = np.concatenate(([64_000.0], close[:-1]))
    high = np.round(np.maximum(open_, close) + rng.random(count) * 30, 1)
    low = np.round(np.minimum(open_, close) - rng.random(count) * 30, 1)
    volume = np.round(5 + rng.random(count) * 40, 3)
    buy = np.round(volume * rng.uniform(0.3, 0.7, count), 3)
    trades = rng.integers(200, 600, count)
    columns = (open_, high, low, close, volume, buy, trades)
    rows = []
    for i, (o, h, lo, c, v, b, n) in enumerate(zip(*(column.tolist() for column in columns), strict=True)):
        rows.append({
            "t": _START_MS + i * _STEP_MS, "o": o, "h": h, "l": lo, "c": c, "v": v, "buy_v": b,
            "sell_v": round(v - b, 3), "delta": round(2 * b - v, 3), "trades": n, "vwap": round((h + lo + c) / 3, 1),
            "closed": True,
        })  # fmt: skip
    return rows


def _examples() -> dict[str, dict[str, Any]]:
    rows = _example_rows()
    raw = orjson.dumps(rows)
    source = SignalInput("binance", "BTCUSDT", "5m", _STEP_MS, rows[-1]["t"], len(rows), include_forming=False)
    feed = {"state": "live", "connected": True, "last_message_age_s": 0.4}
    examples = {}
    for module in MODULES:
        document = compute_analysis(raw, AnalysisSpec(source, module, AnalysisParams(), include_series=False))
        assert document is not None  # noqa: S101 - the example series is not empty
        examples[module] = {
            "summary": f"GET /v1/analysis/binance/BTCUSDT/{module}?timeframe=5m&bars=120 (default parameters)",
            "value": _rounded({**orjson.loads(document), "feed": feed}),
        }
    return examples


def _rounded(node: Any) -> Any:
    """Floats to 4 decimals, for a readable example (the route itself never rounds)."""
    if isinstance(node, float):
        return round(node, 4)
    if isinstance(node, dict):
        return {key: _rounded(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_rounded(value) for value in node]
    return node


ANALYSIS_EXAMPLES = _examples()
