"""`make demo` end to end: the signal of the simulated market over real HTTP, bar close by bar close.

The server runs as the Makefile's ``demo`` target runs it — a fresh SQLite database migrated by ``deltaflow
migrate``, ``deltaflow serve --with-ingest`` with ``DELTAFLOW_FEEDS=sim:BTCUSDT`` and the in-process Redis
(``memory://``) — with an operator key from ``deltaflow keys bootstrap``. The ``sim`` venue has no REST klines (no
backfill), so the first closed bar is the partial one of the minute the server started in.

1 m bars close on the wall clock (just after each minute ends), so this takes two to three minutes: every wait is
for an event (an SSE frame, a GET showing the new bar) with a deadline of the minute boundary it waits for plus a
generous margin, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable
from contextlib import suppress
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_serve import DELTAFLOW, _wait_for_exit, serve
from tests.sse import Frame, Sse

pytestmark = pytest.mark.e2e

MINUTE_MS = 60_000
MARGIN_S = 20.0  # a bar closes on the first trade after its minute (or the 2 s grace): generous on a loaded 2-core box
SIGNAL = "/v1/signals/sim/BTCUSDT"
STREAM = f"{SIGNAL}/stream"
CANDLES = "/v1/candles/sim/BTCUSDT"
ONE_MINUTE = {"timeframe": "1m"}
DRAIN_S = 5.0  # DELTAFLOW_DRAIN_SECONDS' default: SIGTERM → exit takes at least this long


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def next_boundary(ms: int) -> int:
    return (ms // MINUTE_MS + 1) * MINUTE_MS


def deadline_of(close_ms: int) -> float:
    """Wall-clock deadline (``time.time()``) for a bar whose minute ends at ``close_ms`` to be seen closed."""
    return close_ms / 1000 + MARGIN_S


def cli(env: dict[str, str], *args: str) -> str:
    """A ``deltaflow`` command with only ``env`` for settings; its stdout."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DELTAFLOW_")} | env
    result = subprocess.run(
        [DELTAFLOW, *args], env=environment, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"deltaflow {' '.join(args)}: {result.stderr}"
    return result.stdout


def without_feed(body: dict[str, Any]) -> dict[str, Any]:
    """The signal document without `feed`, the feed's freshness added per request."""
    return {key: value for key, value in body.items() if key != "feed"}


class Events:
    """Every frame of one stream, read in the background as it arrives."""

    def __init__(self, sse: Sse) -> None:
        self.frames: list[Frame] = []
        self._arrived = asyncio.Event()
        self._task = asyncio.create_task(self._read(sse))

    @property
    def events(self) -> list[Frame]:
        return [frame for frame in self.frames if frame.is_event]

    async def _read(self, sse: Sse) -> None:
        try:
            while (frame := await sse.frame()) is not None:
                self.frames.append(frame)
                self._arrived.set()
        finally:
            self._arrived.set()

    async def until(self, ready: Callable[[], bool], deadline: float, what: str) -> None:
        """Wait until ``ready()`` holds, at the latest until the wall-clock ``deadline``."""
        while not ready():
            if self._task.done():
                self._task.result()  # a read error surfaces as itself
                raise AssertionError(f"the stream ended before {what}")
            remaining = deadline - time.time()
            assert remaining > 0, f"timed out waiting for {what}; frames so far: {self.frames}"
            self._arrived.clear()
            with suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()

    async def nth(self, n: int, deadline: float) -> Frame:
        """The ``n``-th event (1-based)."""
        await self.until(lambda: len(self.events) >= n, deadline, f"event {n}")
        return self.events[n - 1]

    async def quiet_after(self, n: int, deadline: float) -> None:
        """Until a keep-alive follows the ``n``-th event: the stream went idle with nothing more to send."""

        def idle() -> bool:
            events = [i for i, frame in enumerate(self.frames) if frame.is_event]
            return len(events) >= n and any(f.fields == [("", "keep-alive")] for f in self.frames[events[n - 1] :])

        await self.until(idle, deadline, f"a keep-alive after event {n}")

    async def aclose(self) -> None:
        self._task.cancel()
        with suppress(asyncio.CancelledError):
            await self._task


async def signal_as_of(client: httpx.AsyncClient, as_of: int, deadline: float) -> httpx.Response:
    """GET the signal, every 0.5 s, until it is the one of the bar closing at ``as_of``."""
    while True:
        response = await client.get(SIGNAL, params=ONE_MINUTE)
        assert response.status_code == 200, response.text
        if response.json()["as_of"] == as_of:
            return response
        assert response.json()["as_of"] < as_of, response.text
        assert time.time() < deadline, f"GET {SIGNAL} never showed the bar closing at {as_of}"
        await asyncio.sleep(0.5)


def assert_complete(body: dict[str, Any], as_of: int, bar_count: int) -> None:
    assert (body["venue"], body["symbol"]) == ("sim", "BTCUSDT")
    assert (body["timeframe"], body["as_of"], body["forming"], body["bar_count"]) == ("1m", as_of, False, bar_count)
    assert body["as_of_iso"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(as_of // 1000))
    assert set(body["inputs"]) == {"cvd", "orderflow"}
    assert all(item["side_source"] == "kline_taker_volume" for item in body["inputs"].values()), body["inputs"]
    signal = body["signal"]
    assert signal["bias"] in {"long", "short", "neutral"}
    assert -1 <= signal["score"] <= 1
    assert 0 <= signal["confidence"] <= 1
    assert signal["close_time"] == as_of
    assert {c["name"] for c in signal["components"]} == {"smc", "indicators", "cvd", "orderflow", "fibonacci"}
    assert all(component["reasons"] for component in signal["components"]), signal["components"]  # each explained
    # No levels while neutral, nor before ATR has warmed up (a few bars after the start): present, maybe null.
    assert "levels" in signal
    if signal["levels"] is not None:
        assert {"entry", "stop", "targets", "risk_reward"} <= set(signal["levels"])
    feed = body["feed"]
    assert (feed["state"], feed["connected"]) == ("streaming", True)
    assert 0 <= feed["last_message_age_s"] < MARGIN_S


async def assert_equals_analyze(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    """The signal is POST /v1/analyze's on the same closed bars, as GET /v1/candles returns them."""
    limit = body["bar_count"] + 1  # the forming bar comes last and counts toward the limit
    candles = (await client.get(CANDLES, params={**ONE_MINUTE, "limit": limit})).json()["candles"]
    closed = [c for c in candles if c["closed"] and c["t"] + MINUTE_MS <= body["as_of"]]
    assert len(closed) == body["bar_count"], candles
    analyzed = await client.post("/v1/analyze", json={"candles": closed})
    assert analyzed.status_code == 200, analyzed.text
    assert body["signal"] == analyzed.json()["signal"]


async def closed_bar_closes(client: httpx.AsyncClient) -> list[int]:
    candles = (await client.get(CANDLES, params={**ONE_MINUTE, "limit": 500})).json()["candles"]
    return [c["t"] + MINUTE_MS for c in candles if c["closed"]]


@pytest.mark.slow
@pytest.mark.timeout(420)  # three 1 m closes on the wall clock, start-up and drain
async def test_make_demo_serves_one_signal_per_bar_close(tmp_path: Path) -> None:
    env = {
        "DELTAFLOW_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/demo.db",
        "DELTAFLOW_FEEDS": "sim:BTCUSDT",
        "DELTAFLOW_REDIS_URL": "memory://",
    }
    assert "database migrated to revision" in cli(env, "migrate")
    key = cli(env, "keys", "bootstrap", "--if-missing").strip().splitlines()[-1]
    assert key.startswith("dfk_")

    started = now_ms()
    async with serve(env=env, args=["--with-ingest"]) as (process, base_url):
        try:
            async with httpx.AsyncClient(
                base_url=base_url, headers={"authorization": f"Bearer {key}"}, timeout=30.0
            ) as client:
                await demo(client, started)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            exit_code = await _wait_for_exit(process, within_seconds=DRAIN_S + 30)
        assert exit_code == 0


async def demo(client: httpx.AsyncClient, started: int) -> None:
    async with client.stream("GET", STREAM, params=ONE_MINUTE) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        sse = Sse(response)
        first = await sse.frame()  # sent once the stream is subscribed to bar closes: none can be missed now
        assert first is not None
        assert first.fields == [("retry", "3000")]
        events = Events(sse)
        try:
            await exchange(client, events, started)
        finally:
            await events.aclose()


async def exchange(client: httpx.AsyncClient, events: Events, started: int) -> None:
    # Warming up: no bar has closed yet — certain while the minute the server started in has not ended (checked
    # only when more than 5 s of it remain).
    opened = now_ms()
    if next_boundary(started) == next_boundary(opened) and next_boundary(opened) - opened > 5_000:
        early = await client.get(SIGNAL, params=ONE_MINUTE)
        if early.status_code == 503 or now_ms() < next_boundary(opened):  # a 200 only if answered after the close
            assert early.status_code == 503, early.text
            assert early.headers["content-type"] == "application/problem+json"
            assert int(early.headers["retry-after"]) > 0
            assert early.json()["type"] == "/problems/market-data-unavailable"
            assert early.json()["feed"]["simulated"] is True

    # First close: the partial bar of the minute ingestion started in (at the latest the current one).
    one = await events.nth(1, deadline_of(next_boundary(opened)))
    assert one.id % MINUTE_MS == 0

    # Second close: a complete signal, the same as the stream's event and as POST /v1/analyze on the same bars.
    two = await events.nth(2, deadline_of(one.id + MINUTE_MS))
    assert two.id == one.id + MINUTE_MS
    first = await signal_as_of(client, two.id, deadline_of(two.id))
    body = first.json()
    assert_complete(body, two.id, bar_count=2)
    assert without_feed(body) == without_feed(two.data)
    # The stream computed it when the bar closed (one computation per close): a GET reads the cache.
    assert first.headers["x-cache"] == "hit"
    repeat = await client.get(SIGNAL, params=ONE_MINUTE)
    assert (repeat.status_code, repeat.headers["x-cache"]) == (200, "hit")
    assert repeat.headers["etag"] == first.headers["etag"]
    assert without_feed(repeat.json()) == without_feed(body)
    await assert_equals_analyze(client, body)

    # Third close: a new signal, on one bar more.
    three = await events.nth(3, deadline_of(two.id + MINUTE_MS))
    assert three.id == two.id + MINUTE_MS
    later = await signal_as_of(client, three.id, deadline_of(three.id))
    moved = later.json()
    assert_complete(moved, three.id, bar_count=3)
    assert moved["as_of"] - body["as_of"] == MINUTE_MS
    assert moved["signal"] != body["signal"]
    assert later.headers["etag"] != first.headers["etag"]
    assert without_feed(moved) == without_feed(three.data)
    assert later.headers["x-cache"] == "hit"  # computed once, for the stream, when the bar closed
    await assert_equals_analyze(client, moved)

    # The stream goes idle (a keep-alive, sent after 15 s without events): nothing more was pending.
    await events.quiet_after(3, deadline_of(three.id + 15_000))
    ids = [event.id for event in events.events]
    assert [event.get("event") for event in events.events] == ["signal"] * 3
    assert ids == [event.data["as_of"] for event in events.events]
    assert all(b - a == MINUTE_MS for a, b in pairwise(ids)), ids
    # Exactly one event per 1 m close since the server started: the stream was open before the first one (or, had
    # start-up run past it, sent that close's signal on connect).
    assert await closed_bar_closes(client) == ids
