"""OpenAPI shapes of the signal routes, with examples (responses are spliced bytes; these models document them)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.market.aggregation import TIMEFRAMES
from app.trading.examples import ANALYZE_EXAMPLE
from app.trading.schemas import CONFIDENCE_MEANING

Timeframe = Literal["1m", "5m", "15m", "1h", "4h", "1d"]
assert set(Timeframe.__args__) == set(TIMEFRAMES)  # type: ignore[attr-defined]  # noqa: S101 - import-time guard


class SideSource(BaseModel):
    side_source: str = Field(description="exchange_flag, kline_taker_volume or ohlcv_estimate")
    exact: bool = Field(description="false when the taker side is estimated from OHLCV")


class FeedFreshness(BaseModel):
    state: str | None = Field(default=None, description="The feed's state (e.g. live, backfilling, no_ingestor)")
    connected: bool | None = None
    last_message_age_s: float | None = Field(description="Seconds since the feed's last message; null if unknown")


class TrackRecordSummary(BaseModel):
    as_of: int = Field(description="Close time (epoch ms) of the last stored bar the record was computed on")
    horizon: int = Field(description="Bars each signal was followed for")
    n: int = Field(description="Decided signals (long or short, outcome known)")
    insufficient: bool = Field(description="Fewer than 30 decided signals: no figure is reported")
    hit_rate: float | None = Field(description="Share of decided signals whose return after costs was positive")
    expectancy_r: float | None = Field(description="Mean outcome in R (risk to the signal's own stop), after costs")
    expectancy_r_ci: list[float | None] | None = Field(description="Its 95 % block-bootstrap interval")
    p_value: float | None = Field(description="Against the same exposure with the bias shuffled (1 000 seeded runs)")
    round_trip_cost_bps: float = Field(description="Fees and slippage charged per trade, entry and exit")


class SignalResponse(BaseModel):
    venue: str
    symbol: str
    timeframe: str
    as_of: int = Field(description="Close time of the last bar used, epoch ms")
    as_of_iso: str = Field(description="`as_of` as ISO 8601 (UTC)")
    forming: bool = Field(description="true when the last bar used is the forming (not yet closed) bar")
    bar_count: int
    inputs: dict[str, SideSource] = Field(description="Per input (cvd, orderflow): where the taker side comes from")
    signal: dict[str, Any] = Field(
        description="bias, score, confidence, components with reasons, levels (entry, stop, targets, "
        "risk_reward, position_size) and model, as POST /v1/analyze returns it. " + CONFIDENCE_MEANING
    )
    track_record: TrackRecordSummary | None = Field(
        default=None,
        description="How this feed's signal did on the stored bars (see GET …/track-record); may trail the signal "
        "by a bar (its `as_of` says which); null until first computed",
    )
    feed: FeedFreshness


class BatchItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    venue: str = Field(examples=["binance"])
    symbol: str = Field(examples=["BTCUSDT"])
    timeframe: str = Field(
        default="1m",
        description="1m, 5m, 15m, 1h, 4h or 1d",
        examples=["5m"],
        json_schema_extra={"enum": list(TIMEFRAMES)},
    )
    include_forming: bool = False


class BatchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"items": [{"venue": "binance", "symbol": "BTCUSDT", "timeframe": "5m"}]}]},
    )

    # An item that is not a valid BatchItem stays a plain object here and gets its own 422 problem in the
    # results, instead of failing the whole batch.
    items: list[BatchItem | dict[str, Any]] = Field(
        min_length=1, max_length=500, description="Up to `DELTAFLOW_SIGNAL_BATCH_MAX_ITEMS` (default 50) items"
    )
    account_equity: float | None = Field(default=None, gt=0, allow_inf_nan=False, description="For sizing")
    risk_pct: float | None = Field(default=None, gt=0, le=100, description="Percent of equity risked")


class BatchResult(BaseModel):
    status: int = Field(description="200, or the HTTP status the item would have had alone")
    cache: Literal["hit", "miss"] | None = None
    etag: str | None = None
    signal: SignalResponse | None = None
    problem: dict[str, Any] | None = Field(default=None, description="RFC 9457 problem for a failed item")


class BatchResponse(BaseModel):
    results: list[BatchResult]
    count: int
    errors: int = Field(description="How many items failed")


SIGNAL_EXAMPLE: dict[str, Any] = {
    "venue": "binance",
    "symbol": "BTCUSDT",
    "timeframe": "5m",
    "as_of": ANALYZE_EXAMPLE["last_close_time"],
    "as_of_iso": "2023-11-15T00:13:20Z",
    "forming": False,
    "bar_count": ANALYZE_EXAMPLE["bar_count"],
    "inputs": {"cvd": {"side_source": "kline_taker_volume", "exact": True}},
    "signal": ANALYZE_EXAMPLE["signal"],
    "feed": {"state": "live", "connected": True, "last_message_age_s": 0.2},
}

BATCH_EXAMPLE: dict[str, Any] = {
    "results": [
        {"status": 200, "cache": "hit", "etag": 'W/"3f2a…"', "signal": SIGNAL_EXAMPLE},
        {
            "status": 404,
            "problem": {
                "type": "/problems/symbol-not-found",
                "title": "Unknown symbol",
                "status": 404,
                "detail": "No binance feed for 'DOGEUSDT'.",
                "instance": "/v1/signals/batch#/items/1",
                "request_id": "5f0c8b1e9a3d4c7e8f9a0b1c2d3e4f5a",
                "valid": ["BTCUSDT", "ETHUSDT"],
            },
        },
    ],
    "count": 2,
    "errors": 1,
}
