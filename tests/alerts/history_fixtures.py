"""Alert events written straight into the database, as the engine writes them (for the history and stream tests)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI

from app.models import AlertEvent

T0 = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)


async def insert_event(
    app: FastAPI,
    tenant_id: uuid.UUID,
    *,
    created_at: datetime,
    rule_id: uuid.UUID | None = None,
    bar_ms: int | None = None,
    **overrides: Any,
) -> AlertEvent:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "tenant_id": tenant_id,
        "rule_id": rule_id,
        "rule_name": "btc turns long",
        "venue": "binance",
        "symbol": "BTCUSDT",
        "timeframe": "1m",
        "bar_ms": bar_ms if bar_ms is not None else int(created_at.timestamp() * 1000) // 60_000 * 60_000,
        "sentence": "bias turned long: bullish CHoCH at 64 210",
        "snapshot": {"close_time": 1, "bias": "long", "score": 0.4, "events": [], "fibonacci": {"0.618": 1.5}},
        "created_at": created_at,
        **overrides,
    }
    async with app.state.session_factory() as session, session.begin():
        event = AlertEvent(**values)
        session.add(event)
    return event


async def insert_events(
    app: FastAPI, tenant_id: uuid.UUID, count: int, *, start: datetime = T0, step: timedelta = timedelta(minutes=1)
) -> list[AlertEvent]:
    """`count` events `step` apart, oldest first; each on its own bar."""
    return [
        await insert_event(app, tenant_id, created_at=start + i * step, bar_ms=1_796_000_000_000 + i * 60_000)
        for i in range(count)
    ]
