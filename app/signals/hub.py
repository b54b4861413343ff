"""Bar closes fanned out in-process: one Redis pub/sub connection per process serves every signal stream.

Ingestion announces each new newest closed bar on its feed's channel (``md:{venue:symbol}:closed``, payload
``<timeframe>:<open time>``; see :mod:`app.market.keys`). A stream needs no more than the fact that its timeframe
closed: it then asks :class:`~app.signals.service.SignalService` for the current signal, which reads the newest
closed bar itself. So a stream's buffer is one flag (:attr:`Subscription.wake`): any number of closes arriving
while a stream is busy, or its client slow, collapse into one wake-up, and the stream sends only the newest signal.

The reader, its refcounted channels, reconnects and stopping are :class:`app.core.channel_hub.ChannelHub`'s. Every
subscription confirmation wakes the channel's streams: each re-reads the newest closed bar (catch-up). Streams
send only a newer ``as_of`` than they already sent, so a catch-up never duplicates an event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from app.config import Settings
from app.core.channel_hub import Admission, ChannelHub, HubLimits, text
from app.core.lifecycle import Lifecycle
from app.core.metrics import SIGNAL_STREAMS
from app.core.redis import RedisClient
from app.market.keys import FeedKeys

__all__ = ["Admission", "BarCloseHub", "Subscription"]


class Subscription:
    """One stream's interest in one feed and timeframe. ``wake`` is set when the timeframe closed (or a catch-up is
    due, or the hub is closing); the stream clears it before reading the newest signal. ``announced`` is the open
    time of the newest bar announced (-1: none yet): the stream checks that what it read is at least that new."""

    __slots__ = ("announced", "channel", "timeframe", "wake")

    def __init__(self, channel: str, timeframe: str) -> None:
        self.channel = channel
        self.timeframe = timeframe
        self.wake = asyncio.Event()
        self.announced = -1


class BarCloseHub(ChannelHub[Subscription]):
    """The process's bar-close listener and the count of open signal streams (bounded by settings)."""

    name = "signal_stream"

    def __init__(self, redis: RedisClient, settings: Settings, lifecycle: Lifecycle) -> None:
        limits = HubLimits(
            max_streams=settings.signal_stream_max_per_process,
            max_per_tenant=settings.signal_stream_max_per_tenant,
            poll_seconds=settings.signal_stream_poll_seconds,
            reconnect_base_seconds=settings.signal_stream_reconnect_base_seconds,
            reconnect_cap_seconds=settings.signal_stream_reconnect_cap_seconds,
        )
        super().__init__(redis, lifecycle, limits)
        self.wakeups = 0  # streams woken by a close of their timeframe (tests and metrics read it)

    def subscribe(self, venue: str, symbol: str, timeframe: str) -> Subscription:
        return self._register(Subscription(FeedKeys(venue, symbol).bar_closed, timeframe))

    def _opened(self) -> None:
        SIGNAL_STREAMS.inc()

    def _closed(self) -> None:
        SIGNAL_STREAMS.dec()

    def _resubscribed(self, subscriptions: Iterable[Subscription]) -> None:
        for subscription in subscriptions:
            subscription.wake.set()

    def _deliver(self, subscriptions: Iterable[Subscription], data: Any) -> None:
        timeframe, _, open_ms = text(data).partition(":")
        announced = int(open_ms) if open_ms.isdigit() else -1
        for subscription in subscriptions:
            if subscription.timeframe == timeframe:
                self.wakeups += 1
                subscription.announced = max(subscription.announced, announced)
                subscription.wake.set()
