"""One Redis pub/sub connection per process, shared by every stream that listens to some channels.

The signal streams (bar closes, :mod:`app.signals.hub`) and the alert streams (a tenant's events,
:mod:`app.alerts.stream_hub`) share this machinery; a subclass says what a subscription is and what a message or a
(re)subscription does to it.

One reader task per process owns the connection. It subscribes the channels that have at least one stream
(refcounted by the set of subscriptions per channel), unsubscribes a channel when its last stream leaves, and
exits, closing the connection, when no stream is left. Every subscription confirmation (the first one, a reconnect
of our own after a lost connection, or redis-py's transparent resubscription) is passed to the subclass: messages
published while the connection was down are lost, so its streams must catch up from the source of truth.

Stopping is by flag, polled every ``poll_seconds``, not by cancellation alone: redis-py's
``get_message(timeout=…)`` can swallow a cancellation that races with its own timeout. The same poll notices the
instance draining (:class:`app.core.lifecycle.Lifecycle`): streams then end, so the server's graceful shutdown is
not held up by connections that would never finish on their own.
"""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, Protocol, TypeVar

from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from app.core.lifecycle import Lifecycle
from app.core.logging import get_logger
from app.core.redis import RedisClient
from app.market.recovery import Backoff
from app.market.tasks import cancel_and_wait, cancelling

log = get_logger(__name__)


class Admission(Enum):
    ADMITTED = "admitted"
    PROCESS_FULL = "process_full"
    TENANT_FULL = "tenant_full"


class ChannelSubscription(Protocol):
    """What the hub needs of a stream's subscription: its channel, and the flag that wakes the stream."""

    @property
    def channel(self) -> str: ...

    @property
    def wake(self) -> asyncio.Event: ...


S = TypeVar("S", bound=ChannelSubscription)


@dataclass(frozen=True, slots=True)
class HubLimits:
    max_streams: int  # per process
    max_per_tenant: int
    poll_seconds: float
    reconnect_base_seconds: float
    reconnect_cap_seconds: float


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ChannelHub(Generic[S]):
    """The process's listener for one kind of stream, and the count of open streams (bounded by settings).

    ``name`` prefixes the log events (``<name>.closing``, ``<name>.pubsub_lost``) and names the reader task."""

    name = "channel_hub"

    def __init__(self, redis: RedisClient, lifecycle: Lifecycle, limits: HubLimits) -> None:
        self._redis = redis
        self._lifecycle = lifecycle
        self._limits = limits
        self._poll = limits.poll_seconds
        self._per_tenant: dict[uuid.UUID, int] = {}  # open streams by tenant (entries removed at zero)
        self._channels: dict[str, set[S]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._readers: set[asyncio.Task[None]] = set()
        self._closing = False
        self.streams = 0  # admitted streams (tests and metrics read it)
        self.subscribed = 0  # subscription confirmations seen (tests read it to know a (re)subscription completed)

    # ---- what a subclass decides ----------------------------------------------------------------------------

    def _resubscribed(self, subscriptions: Iterable[S]) -> None:
        """The channel was (re)subscribed: what was published meanwhile is lost."""
        raise NotImplementedError

    def _deliver(self, subscriptions: Iterable[S], data: Any) -> None:
        """A message on the channel of these subscriptions."""
        raise NotImplementedError

    def _opened(self) -> None:
        """A stream was admitted (a metric, in a subclass)."""

    def _closed(self) -> None:
        """A stream was released."""

    # ---- streams --------------------------------------------------------------------------------------------

    def admit(self, tenant_id: uuid.UUID) -> Admission:
        """Take a stream slot for the tenant, unless the process or the tenant already has its maximum."""
        if self.streams >= self._limits.max_streams:
            return Admission.PROCESS_FULL
        held = self._per_tenant.get(tenant_id, 0)
        if held >= self._limits.max_per_tenant:
            return Admission.TENANT_FULL
        self._per_tenant[tenant_id] = held + 1
        self.streams += 1
        self._opened()
        return Admission.ADMITTED

    def release(self, tenant_id: uuid.UUID) -> None:
        self.streams -= 1
        self._closed()
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

    def _register(self, subscription: S) -> S:
        """Register a stream's interest; synchronous, so registration can never be lost to a cancellation."""
        self._channels.setdefault(subscription.channel, set()).add(subscription)
        if self._reader is None and not self.closing:
            # A fresh context: the reader serves every stream, so it must not log with this request's ids.
            reader = asyncio.create_task(self._read(), name=f"{self.name}-reader", context=contextvars.Context())
            self._reader = reader
            self._readers.add(reader)
            reader.add_done_callback(self._readers.discard)
        return subscription

    def unsubscribe(self, subscription: S) -> None:
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
        log.info(f"{self.name}.closing", streams=self.streams)
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
        base = self._limits.reconnect_base_seconds
        backoff = Backoff(base_s=base, cap_s=max(self._limits.reconnect_cap_seconds, base), stable_after_s=0.0)
        try:
            while self._wanted():
                try:
                    await self._listen(backoff)
                except (RedisError, OSError) as exc:
                    if cancelling():
                        raise
                    backoff.on_disconnected()
                    delay = backoff.next_delay()
                    log.warning(f"{self.name}.pubsub_lost", error=type(exc).__name__, retry_in_s=round(delay, 3))
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
        kind = text(message.get("type"))
        subscriptions = self._channels.get(text(message.get("channel")), set())
        if kind == "subscribe":
            self.subscribed += 1
            backoff.on_connected()
            self._resubscribed(subscriptions)
        elif kind == "message":
            self._deliver(subscriptions, message.get("data"))

    async def _pause(self, seconds: float) -> None:
        """Sleep before a reconnect, in poll-sized steps so a drain or the last stream leaving ends it early."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        # Polled: neither condition (the drain flag, the last stream leaving) has an event to wait on.
        while self._wanted() and (left := deadline - loop.time()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(min(left, self._poll))
