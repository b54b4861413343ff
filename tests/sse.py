"""Server-Sent Events for the stream tests: a frame reader over a real HTTP response, an in-process uvicorn to
serve the stream over a real socket, and a bounded wait for a condition."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import uvicorn
from fastapi import FastAPI

from tests.helpers import free_port

WAIT = 30.0  # generous: a shared 2-core machine; every wait is for an event, never a fixed sleep


@dataclass
class Frame:
    fields: list[tuple[str, str]]

    def get(self, name: str) -> str | None:
        return next((value for key, value in self.fields if key == name), None)

    @property
    def is_event(self) -> bool:
        return self.get("event") is not None

    @property
    def id(self) -> int:
        return int(self.get("id") or -1)

    @property
    def data(self) -> dict[str, Any]:
        body: dict[str, Any] = orjson.loads(self.get("data") or "null")
        return body


class Sse:
    """Reads frames (blank-line separated) from a streaming response as they arrive."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._chunks = response.aiter_raw()
        self._buffer = b""

    async def frame(self) -> Frame | None:
        """The next frame, or None when the server ended the stream."""
        async with asyncio.timeout(WAIT):
            while b"\n\n" not in self._buffer:
                chunk = await anext(self._chunks, None)
                if chunk is None:
                    assert self._buffer == b"", "the stream ended inside a frame"
                    return None
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\n\n", 1)
        fields = [line.decode().partition(": ") for line in raw.split(b"\n")]
        return Frame([(key, value) for key, _, value in fields])

    async def event(self) -> Frame:
        async with asyncio.timeout(WAIT):  # heartbeats keep arriving: bound the whole wait, not each frame
            while True:
                frame = await self.frame()
                assert frame is not None, "the stream ended before the event"
                if frame.is_event:
                    return frame

    async def events_before_heartbeats(self, count: int = 2) -> list[Frame]:
        """Events received until `count` keep-alive comments arrived in a row (proof that nothing else was
        pending)."""
        events: list[Frame] = []
        seen = 0
        async with asyncio.timeout(WAIT):
            while seen < count:
                frame = await self.frame()
                assert frame is not None, "the stream ended"
                if frame.is_event:
                    events.append(frame)
                    seen = 0
                elif frame.fields == [("", "keep-alive")]:
                    seen += 1
        return events

    async def end(self) -> list[Frame]:
        """Frames until the server ends the stream."""
        frames = []
        async with asyncio.timeout(WAIT):
            while (frame := await self.frame()) is not None:
                frames.append(frame)
        return frames


async def eventually(predicate: Callable[[], bool | Awaitable[bool]], what: str = "condition") -> None:
    deadline = time.monotonic() + WAIT
    while True:
        result = predicate()
        if result if isinstance(result, bool) else await result:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@asynccontextmanager
async def uvicorn_serving(app: FastAPI) -> AsyncIterator[str]:
    """`app` (its lifespan already running) served by uvicorn on a free loopback port; yields the base URL."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=free_port(), lifespan="off", log_config=None, access_log=False,
        ws="none", timeout_graceful_shutdown=5,
    )  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await eventually(lambda: server.started, "the server")
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        await task
