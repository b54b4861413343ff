"""An alert event as the tenant sees it, everywhere: the webhook body (`alert.fired`), the history
(`GET /v1/alerts/events`) and the stream (`GET /v1/alerts/stream`) carry the same document.

Live delivery to streams goes through Redis pub/sub on one channel per tenant, published after the transaction that
stored the events commits (a stream never announces an event the history cannot return). A stream that missed a
message (reconnect, slow consumer) catches up from the table, so pub/sub only has to be prompt, not reliable.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple

import orjson

from app.core.redis import RedisClient, publish_all
from app.models import AlertEvent

EVENT_TYPE = "alert.fired"


def events_channel(tenant_id: uuid.UUID) -> str:
    return f"alerts:events:{tenant_id}"


def message_id(event_id: uuid.UUID) -> str:
    """The Standard Webhooks `webhook-id` of an event's delivery: derived from the event, so every attempt and every
    redelivery of it carries the same id (the receiver's idempotency key)."""
    return f"msg_{event_id.hex}"


class FiredEvent(NamedTuple):
    """An event as a close writes it (the columns of `alert_events`): built for thousands of firings at once, where
    an ORM object each would cost more than the insert."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    rule_id: uuid.UUID | None
    rule_name: str
    venue: str
    symbol: str
    timeframe: str
    bar_ms: int
    sentence: str
    snapshot: dict[str, Any]
    created_at: datetime


def event_document(event: AlertEvent | FiredEvent) -> dict[str, Any]:
    return {
        "id": str(event.id),
        "type": EVENT_TYPE,
        "rule_id": None if event.rule_id is None else str(event.rule_id),
        "rule_name": event.rule_name,
        "venue": event.venue,
        "symbol": event.symbol,
        "timeframe": event.timeframe,
        "bar_ms": event.bar_ms,
        "sentence": event.sentence,
        "snapshot": event.snapshot,
        "created_at": event.created_at.isoformat().replace("+00:00", "Z"),
    }


async def publish_events(redis: RedisClient, events: Iterable[AlertEvent | FiredEvent]) -> None:
    """Announce committed events to the tenants' open streams (one message per event, its document as JSON), in
    order and in one round trip, on one server or a cluster (`publish_all`: a cluster pipeline refuses PUBLISH)."""
    await publish_all(
        redis, [(events_channel(event.tenant_id), orjson.dumps(event_document(event))) for event in events]
    )
