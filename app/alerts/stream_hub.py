"""Alert events fanned out in-process: one Redis pub/sub connection per process serves every alert stream.

The engine publishes each committed event on its tenant's channel (`app.alerts.events.events_channel`, the event
document as JSON). The reader, its refcounted channels, reconnects and stopping are
:class:`app.core.channel_hub.ChannelHub`'s, shared with the bar-close hub of the signal streams.

Pub/sub only has to be prompt, not reliable: every subscription confirmation (the first, a reconnect after a lost
connection, redis-py's own resubscription) and every overflow of a stream's bounded buffer marks the stream `lost`,
and the stream then reads the table for what it may have missed (`app.alerts.stream`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Iterable
from typing import Any

from app.alerts.events import events_channel
from app.config import Settings
from app.core.channel_hub import Admission, ChannelHub, HubLimits
from app.core.lifecycle import Lifecycle
from app.core.redis import RedisClient

__all__ = ["Admission", "AlertEventHub", "EventSubscription"]


class EventSubscription:
    """One stream's interest in one tenant's events: announced documents not yet sent (`pending`, bounded), the
    flag `wake`, and `lost` — a catch-up from the table is due (the stream clears it before it reads)."""

    __slots__ = ("channel", "limit", "lost", "pending", "wake")

    def __init__(self, channel: str, limit: int) -> None:
        self.channel = channel
        self.limit = limit
        self.pending: deque[bytes] = deque()
        self.wake = asyncio.Event()
        self.lost = False

    def push(self, document: bytes) -> None:
        if self.lost:
            pass  # the table read that is due will include it (published after its commit)
        elif len(self.pending) >= self.limit:
            self.mark_lost()  # a slow client: drop the buffer, read the table instead (memory stays bounded)
        else:
            self.pending.append(document)
        self.wake.set()

    def mark_lost(self) -> None:
        self.pending.clear()
        self.lost = True
        self.wake.set()


class AlertEventHub(ChannelHub[EventSubscription]):
    """The process's alert-event listener and the count of open alert streams (bounded by settings)."""

    name = "alert_stream"

    def __init__(self, redis: RedisClient, settings: Settings, lifecycle: Lifecycle) -> None:
        limits = HubLimits(
            max_streams=settings.alert_stream_max_per_process,
            max_per_tenant=settings.alert_stream_max_per_tenant,
            poll_seconds=settings.alert_stream_poll_seconds,
            reconnect_base_seconds=settings.alert_stream_reconnect_base_seconds,
            reconnect_cap_seconds=settings.alert_stream_reconnect_cap_seconds,
        )
        super().__init__(redis, lifecycle, limits)
        self._buffer = settings.alert_stream_buffer

    def subscribe(self, tenant_id: uuid.UUID) -> EventSubscription:
        return self._register(EventSubscription(events_channel(tenant_id), self._buffer))

    def _resubscribed(self, subscriptions: Iterable[EventSubscription]) -> None:
        for subscription in subscriptions:
            subscription.mark_lost()

    def _deliver(self, subscriptions: Iterable[EventSubscription], data: Any) -> None:
        document = data if isinstance(data, bytes) else str(data).encode()
        for subscription in subscriptions:
            subscription.push(document)
