"""HTTP shapes of the alert read side: events (history and stream carry `events.event_document`) and backtests."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.alerts.schemas import AlertRuleCreate

_SNAPSHOT_EXAMPLE: dict[str, Any] = {
    "close_time": 1796000100000,
    "bias": "long",
    "score": 0.42,
    "confidence": 0.31,
    "close": 64210.0,
    "rsi": 58.2,
    "cvd": 1250.5,
    "delta": 84.1,
    "volume": 312.7,
    "stop": 63880.0,
    "target": 64950.0,
    "events": [{"kind": "choch", "direction": "bullish", "bottom": 64210.0, "top": 64210.0}],
    "fibonacci": {"0.618": 63990.5},
}
EVENT_EXAMPLE: dict[str, Any] = {
    "id": "0b6f3c52-1d9e-4a51-9a3e-6f0c2d7b8e41",
    "type": "alert.fired",
    "rule_id": "3f2b9c1e-7a4d-4e8b-9c6f-1d2e3f4a5b6c",
    "rule_name": "BTC turns long on a CHoCH",
    "venue": "binance",
    "symbol": "BTCUSDT",
    "timeframe": "5m",
    "bar_ms": 1796000100000,
    "sentence": "bias turned long: bullish CHoCH at 64 210",
    "snapshot": _SNAPSHOT_EXAMPLE,
    "created_at": "2026-12-02T08:15:00.412Z",
}


class AlertEventRead(BaseModel):
    """One firing of a rule at one bar close: the document the webhook (`alert.fired`), the history and the stream
    carry."""

    model_config = ConfigDict(json_schema_extra={"examples": [EVENT_EXAMPLE]})

    id: uuid.UUID = Field(description="The event's id (the stream's `id:`; the webhook's id is `msg_<id hex>`)")
    type: Literal["alert.fired"]
    rule_id: uuid.UUID | None = Field(description="null once the rule was deleted")
    rule_name: str = Field(description="The rule's name when it fired")
    venue: str
    symbol: str
    timeframe: str
    bar_ms: int = Field(description="Close time of the bar that fired it (epoch ms)")
    sentence: str = Field(description="Why it fired, for a person")
    snapshot: dict[str, Any] = Field(description="The signal and candle values the condition saw at that close")
    created_at: datetime


class AlertEventPage(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [EVENT_EXAMPLE], "next_cursor": None}]})

    items: list[AlertEventRead] = Field(description="Newest first")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")


TestBars = Annotated[
    int,
    Field(
        ge=1,
        le=100_000,
        description="Closed bars to replay, the newest ones (default DELTAFLOW_ALERT_TEST_DEFAULT_BARS, at most "
        "DELTAFLOW_ALERT_TEST_MAX_BARS)",
    ),
]


class AlertTestRequest(AlertRuleCreate):
    """A rule exactly as `POST /v1/alerts` takes it (validated the same way), and how many bars to replay."""

    bars: TestBars | None = None


class AlertTestFiring(BaseModel):
    bar_ms: int = Field(description="Close time of the bar (epoch ms), an event's `bar_ms`")
    bar_time: str = Field(description="The same, RFC 3339")
    close: float | None
    bias: Literal["long", "short", "neutral"]
    score: float
    sentence: str


_TEST_EXAMPLE: dict[str, Any] = {
    "venue": "binance",
    "symbol": "BTCUSDT",
    "timeframe": "5m",
    "description": "bias changes to long and bullish CHoCH",
    "frequency": "on_change",
    "cooldown_bars": 3,
    "bars": 1000,
    "warmup_bars": 200,
    "from_ms": 1795700400000,
    "to_ms": 1796000100000,
    "from": "2026-11-28T21:40:00Z",
    "to": "2026-12-02T08:55:00Z",
    "firings": [
        {
            "bar_ms": 1796000100000,
            "bar_time": "2026-12-02T08:55:00Z",
            "close": 64210.0,
            "bias": "long",
            "score": 0.42,
            "sentence": "bias turned long: bullish CHoCH at 64 210",
        }
    ],
}


class AlertTestResult(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_TEST_EXAMPLE]}, populate_by_name=True)

    venue: str
    symbol: str
    timeframe: str
    description: str = Field(description="The condition in words")
    frequency: str
    cooldown_bars: int
    bars: int = Field(description="Closed bars evaluated")
    warmup_bars: int = Field(description="Closed bars before them that only warmed the analysis up")
    from_ms: int | None = Field(description="Close time of the first bar evaluated (epoch ms)")
    to_ms: int | None = Field(description="Close time of the last bar evaluated (epoch ms)")
    from_: str | None = Field(alias="from", description="The same, RFC 3339")
    to: str | None = Field(description="The same, RFC 3339")
    firings: list[AlertTestFiring] = Field(description="The bars where the rule would have fired, oldest first")
