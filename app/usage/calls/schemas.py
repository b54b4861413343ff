from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

CALL_EXAMPLE: dict[str, Any] = {
    "at": "2026-12-02T14:03:07.412Z",
    "request_id": "9f1c2a7e4b8d4e0f9a6b3c2d1e0f7a8b",
    "key_id": "0f6b8a52-3c1e-4d7a-9b2f-6c8d1e4a5b7c",
    "method": "GET",
    "route": "/v1/signals/{venue}/{symbol}",
    "status": 429,
    "latency_ms": 0.412,
    "response_bytes": 297,
    "client_address": "203.0.113.7",
    "user_agent": "trading-bot/2.3 (+https://example.com)",
    "cache": None,
}


class CallRead(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [CALL_EXAMPLE]})

    at: datetime = Field(description="When the request arrived (UTC).")
    request_id: str = Field(description="The `X-Request-ID` the response carried.")
    key_id: uuid.UUID
    method: str
    route: str = Field(description="The route template, e.g. `/v1/signals/{venue}/{symbol}`.")
    status: int
    latency_ms: float = Field(description="From the request reaching the app to the last byte of the response.")
    response_bytes: int
    client_address: str | None = Field(description="The client's address (after trusted proxies).")
    user_agent: str | None = Field(description="Truncated to 200 characters.")
    cache: str | None = Field(description="`hit` or `miss` on routes that cache; null elsewhere.")


class CallPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"items": [CALL_EXAMPLE], "next_cursor": None, "recorded_every_seconds": 1.0, "dropped": 0}]
        }
    )

    items: list[CallRead]
    next_cursor: str | None = Field(description="Pass as `cursor` for older calls; null on the last page.")
    recorded_every_seconds: float = Field(description="Calls reach the log within about this long.")
    dropped: int = Field(description="Calls this instance could not log since it started (buffer full, refused).")
