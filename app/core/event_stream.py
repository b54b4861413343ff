"""The Server-Sent Events response shared by the signal and alert streams.

It holds one of its hub's stream slots (counted per process and per tenant) until the response ends, however it
ends. The body generator is closed explicitly (``aclosing``): a client that disconnects while an event is being
written cancels the write, not the generator, which would otherwise wait for the garbage collector to run its
``finally`` (where the stream drops its subscription)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Protocol

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

EVENT_STREAM = "text/event-stream"


class SlotHolder(Protocol):
    def release(self, tenant_id: uuid.UUID) -> None: ...


class HubEventStream(StreamingResponse):
    """``text/event-stream`` from ``events``; ``hub.release(holder)`` once the response is over."""

    media_type = EVENT_STREAM

    def __init__(
        self, events: AsyncGenerator[bytes, None], hub: SlotHolder, holder: uuid.UUID, headers: dict[str, str]
    ) -> None:
        super().__init__(events, headers=headers)
        self._events = events
        self._hub = hub
        self._holder = holder

    async def stream_response(self, send: Send) -> None:
        async with aclosing(self._events):
            await super().stream_response(send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._hub.release(self._holder)
