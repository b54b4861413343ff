"""Bar closes fanned out in-process: one Redis pub/sub connection per process serves every signal stream.

Ingestion announces each new newest closed bar on its feed's channel (``md:{venue:symbol}:closed``, payload
``<timeframe>:<open time>``; see :mod:`app.market.keys`). A stream needs no more than the fact that its timeframe
closed: it then asks :class:`~app.signals.service.SignalService` for the current signal, which reads the newest
closed bar itself. So a stream's buffer is one flag (:attr:`Subscription.wake`): any number of closes arriving
while a stream is busy, or its client slow, collapse into one wake-up, and the stream sends only the newest signal.

One reader task per process owns the pub/sub connection. It subscribes the channels that have at least one stream
(refcounted by the set of subscriptions per channel), unsubscribes a channel when its last stream leaves, and
exits, closing the connection, when no stream is left. Every subscription confirmation (the first one, a
reconnect of our own after a lost connection, or redis-py's transparent resubscription) wakes the channel's
streams: messages published while the connection was down are lost, so each stream re-reads the newest closed bar
(catch-up). Streams send only a newer ``as_of`` than they already sent, so a catch-up never duplicates an event.

Stopping is by flag, polled every ``signal_stream_poll_seconds``, not by cancellation alone: redis-py's
``get_message(timeout=…)`` can swallow a cancellation that races with its own timeout. The same poll notices the
instance draining (:class:`app.core.lifecycle.Lifecycle`): streams then end, so the server's graceful shutdown
is not held up by connections that would never finish on their own.
"""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from contextlib import suppress
from enum import Enum
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from app.config import Settings
from app.core.lifecycle import Lifecycle
from app.core.logging import get_logger
from app.market.keys import FeedKeys
from app.market.recovery import Backoff
from app.market.tasks import cancel_and_wait, cancelling

log = get_logger(__name__)


class Admission(Enum):
    ADMITTED = "admitted"
    PROCESS_FULL = "process_full"
    TENANT_FULL = "tenant_full"


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


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class BarCloseHub:
    """The process's bar-close listener and the count of open streams (bounded by a setting)."""

    def __init__(self, redis: Redis, settings: Settings, lifecycle: Lifecycle) -> None:
        self._redis = redis
        self._lifecycle = lifecycle
        self._max_streams = settings.signal_stream_max_per_process
        self._max_per_tenant = settings.signal_stream_max_per_tenant
        self._per_tenant: dict[uuid.UUID, int] = {}  # open streams by tenant (entries removed at zero)
        self._poll = settings.signal_stream_poll_seconds
        self._backoff_base = settings.signal_stream_reconnect_base_seconds
        self._backoff_cap = max(settings.signal_stream_reconnect_cap_seconds, self._backoff_base)
        self._channels: dict[str, set[Subscription]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._readers: set[asyncio.Task[None]] = set()
        self._closing = False
        self.streams = 0  # admitted streams (tests and metrics read it)
        self.subscribed = 0  # subscription confirmations seen (tests read it to know a reconnect completed)
        self.wakeups = 0  # streams woken by a close of their timeframe (tests and metrics read it)

    # ---- streams --------------------------------------------------------------------------------------------

    def admit(self, tenant_id: uuid.UUID) -> Admission:
        """Take a stream slot for the tenant, unless the process or the tenant already has its maximum."""
        if self.streams >= self._max_streams:
            return Admission.PROCESS_FULL
        held = self._per_tenant.get(tenant_id, 0)
        if held >= self._max_per_tenant:
            return Admission.TENANT_FULL
        self._per_tenant[tenant_id] = held + 1
        self.streams += 1
        return Admission.ADMITTED

    def release(self, tenant_id: uuid.UUID) -> None:
        self.streams -= 1
        held = self._per_tenant.get(tenant_id, 0) - 1
        if held > 0:
            self._per_tenant[tenant_id] = held
        else:
            self._per_tenant.pop(tenant_id, None)

    @property
    def closing(self) -> bool:
        """The hub is shutting down or the instance draining: streams finish."""
        if not self._closing and self._lifecycle.draining:
            self.close()
        return self._closing

    def subscribe(self, venue: str, symbol: str, timeframe: str) -> Subscription:
        """Register a stream's interest; synchronous, so registration can never be lost to a cancellation."""
        subscription = Subscription(FeedKeys(venue, symbol).bar_closed, timeframe)
        self._channels.setdefault(subscription.channel, set()).add(subscription)
        if self._reader is None and not self.closing:
            # A fresh context: the reader serves every stream, so it must not log with this request's ids.
            reader = asyncio.create_task(self._read(), name="signal-hub-reader", context=contextvars.Context())
            self._reader = reader
            self._readers.add(reader)
            reader.add_done_callback(self._readers.discard)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Drop a stream's interest (synchronous: runs in a stream's `finally`, even while it is cancelled). The
        reader unsubscribes the channel within one poll when this was its last stream."""
        subscriptions = self._channels.get(subscription.channel)
        if subscriptions is None:
            return
        subscriptions.discard(subscription)
        if not subscriptions:
            del self._channels[subscription.channel]

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        log.info("signal_stream.closing", streams=self.streams)
        for subscriptions in self._channels.values():
            for subscription in subscriptions:
                subscription.wake.set()

    async def aclose(self) -> None:
        """Close, then wait for the reader: it notices within one poll; a reader stuck in a Redis call is cancelled."""
        self.close()
        readers = set(self._readers)
        if readers:
            await asyncio.wait(readers, timeout=self._poll * 4)
        for reader in readers:
            await cancel_and_wait(reader)

    # ---- the reader -----------------------------------------------------------------------------------------

    def _wanted(self) -> bool:
        return bool(self._channels) and not self.closing

    async def _read(self) -> None:
        backoff = Backoff(base_s=self._backoff_base, cap_s=self._backoff_cap, stable_after_s=0.0)
        try:
            while self._wanted():
                try:
                    await self._listen(backoff)
                except (RedisError, OSError) as exc:
                    if cancelling():
                        raise
                    backoff.on_disconnected()
                    delay = backoff.next_delay()
                    log.warning("signal_stream.pubsub_lost", error=type(exc).__name__, retry_in_s=round(delay, 3))
                    await self._pause(delay)
        finally:
            # No await between the loop's last check and this: a stream registering after it starts a new reader.
            if self._reader is asyncio.current_task():
                self._reader = None

    async def _listen(self, backoff: Backoff) -> None:
        pubsub: PubSub = self._redis.pubsub()
        subscribed: set[str] = set()
        try:
            while self._wanted():
                wanted = set(self._channels)
                if added := wanted - subscribed:
                    await pubsub.subscribe(*added)
                    subscribed |= added
                if removed := subscribed - wanted:
                    await pubsub.unsubscribe(*removed)
                    subscribed -= removed
                message = await pubsub.get_message(timeout=self._poll)
                if message is not None:
                    self._dispatch(message, backoff)
        finally:
            with suppress(Exception):  # the connection may already be broken
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves this unannotated

    def _dispatch(self, message: dict[str, Any], backoff: Backoff) -> None:
        kind = _text(message.get("type"))
        subscriptions = self._channels.get(_text(message.get("channel")), ())
        if kind == "subscribe":
            # (Re)subscribed: anything published meanwhile is lost, so every stream of the channel catches up.
            self.subscribed += 1
            backoff.on_connected()
            for subscription in subscriptions:
                subscription.wake.set()
        elif kind == "message":
            timeframe, _, open_ms = _text(message.get("data")).partition(":")
            announced = int(open_ms) if open_ms.isdigit() else -1
            for subscription in subscriptions:
                if subscription.timeframe == timeframe:
                    self.wakeups += 1
                    subscription.announced = max(subscription.announced, announced)
                    subscription.wake.set()

    async def _pause(self, seconds: float) -> None:
        """Sleep before a reconnect, in poll-sized steps so a drain or the last stream leaving ends it early."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        # Polled: neither condition (the drain flag, the last stream leaving) has an event to wait on.
        while self._wanted() and (left := deadline - loop.time()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(min(left, self._poll))
