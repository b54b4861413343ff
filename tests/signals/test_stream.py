"""GET /v1/signals/{venue}/{symbol}/stream: Server-Sent Events over real HTTP, driven by bar closes in Redis.

Streams are read through a real uvicorn server running in the test's event loop (httpx's in-process transport
buffers a response until it ends, so it cannot show events as they happen); that also lets the tests count the
loop's tasks. Bars close through the ingestion's own writer (:meth:`FeedWriter.close_bar`, whose Lua script
publishes the close), on real Redis and, where it matters, on the embedded ``memory://`` backend.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from app.config import Settings
from app.main import create_app
from app.market.aggregation import Bar
from app.market.keys import FeedKeys
from app.market.store import FeedWriter, StoreLimits
from app.signals.hub import BarCloseHub
from app.signals.service import SignalService
from tests.conftest import TEST_REDIS_URL
from tests.e2e.test_revocation import _bootstrap
from tests.e2e.test_serve import _wait_for_exit, serve
from tests.helpers import running
from tests.signals.test_signals import stored_rows
from tests.sse import WAIT, Sse, eventually, uvicorn_serving
from tests.trading.conftest import MINUTE_MS, START_MS, authenticate

# Pub/sub channels are server-wide, not per Redis DB: a symbol of this test process's own keeps other test runs'
# bar closes (BTCUSDT, …) off this file's channel, so a stream here is only ever woken by what its test does.
SYMBOL = f"SSE{os.getpid()}"
FEED = f"binance:{SYMBOL}"
PATH = f"/v1/signals/binance/{SYMBOL}/stream"
CHANNEL = FeedKeys("binance", SYMBOL).bar_closed
SEEDED = 60  # closed bars stored before a test starts; their newest closes at:
SEEDED_AS_OF = START_MS + SEEDED * MINUTE_MS
STREAM_SETTINGS: dict[str, object] = {
    "feeds": FEED,
    "signal_stream_heartbeat_seconds": 0.2,
    "signal_stream_poll_seconds": 0.05,
    "signal_stream_retry_ms": 250,
    "signal_stream_reconnect_base_seconds": 0.05,
    "signal_stream_reconnect_cap_seconds": 0.5,
    "analyze_workers": 0,  # signals computed in a thread: no worker processes on the shared machine
}
ROWS = stored_rows(SEEDED + 10)


# ---- bars ---------------------------------------------------------------------------------------------------


def bar_of(row: dict[str, Any]) -> Bar:
    return Bar(
        timeframe="1m", open_time=row["t"], open=row["o"], high=row["h"], low=row["l"], close=row["c"],
        volume=row["v"], buy_volume=row["buy_v"], sell_volume=row["sell_v"], quote_volume=row["vwap"] * row["v"],
        trade_count=row["trades"], long_liquidations=0.0, short_liquidations=0.0, closed=True, footprint=(),
        footprint_tick=1.0,
    )  # fmt: skip


async def seed(redis: Redis, count: int = SEEDED) -> None:
    """Closed bars stored without announcing them (as a backfill does)."""
    rows = ROWS[:count]
    await redis.zadd(FeedKeys("binance", SYMBOL).bars["1m"], {orjson.dumps(r): r["t"] for r in rows})


async def close_bars(redis: Redis, *indexes: int) -> int:
    """Close bars the way ingestion does (one atomic transaction); returns the newest one's close time."""
    writer = FeedWriter("binance", SYMBOL, StoreLimits())
    async with redis.pipeline(transaction=True) as pipe:
        for index in indexes:
            writer.close_bar(pipe, bar_of(ROWS[index]), with_detail=False)
        await pipe.execute()
    return int(ROWS[max(indexes)]["t"]) + MINUTE_MS


def as_of_after(index: int) -> int:
    return int(ROWS[index]["t"]) + MINUTE_MS


# ---- SSE over real HTTP -------------------------------------------------------------------------------------


@dataclass
class Served:
    app: FastAPI
    http: httpx.AsyncClient  # real HTTP to the in-process uvicorn, authenticated with a signals:read key
    asgi: httpx.AsyncClient  # in-process transport, same key

    @property
    def hub(self) -> BarCloseHub:
        hub: BarCloseHub = self.app.state.signal_hub
        return hub

    @property
    def service(self) -> SignalService:
        service: SignalService = self.app.state.signal_service
        return service

    @asynccontextmanager
    async def stream(
        self, params: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> AsyncIterator[Sse]:
        async with self.http.stream("GET", PATH, params=params, headers=headers) as response:
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            yield Sse(response)


@asynccontextmanager
async def served(settings: Settings, **overrides: object) -> AsyncIterator[Served]:
    app = create_app(settings.model_copy(update={**STREAM_SETTINGS, **overrides}))
    async with running(app) as asgi:
        await authenticate(app, asgi)
        headers = {"authorization": asgi.headers["authorization"]}
        async with (
            uvicorn_serving(app) as base_url,
            httpx.AsyncClient(base_url=base_url, headers=headers, timeout=WAIT) as http,
        ):
            yield Served(app, http, asgi)


async def numsub(redis: Redis) -> int:
    counts = await redis.pubsub_numsub(CHANNEL)
    return int(counts[0][1])


def live_tasks() -> set[asyncio.Task[Any]]:
    return {task for task in asyncio.all_tasks() if not task.done()}


# ---- tests --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["redis", "memory"])
async def test_the_current_signal_then_exactly_one_event_per_bar_close(
    settings: Settings, redis_client: Redis, memory_redis_url: str, backend: str
) -> None:
    url = TEST_REDIS_URL if backend == "redis" else memory_redis_url
    async with served(settings, redis_url=url) as api:
        redis = api.app.state.redis
        await seed(redis)
        async with api.stream() as sse:
            assert sse.response.request.headers["accept-encoding"].startswith("gzip")
            assert "content-encoding" not in sse.response.headers  # gzip never buffers an event stream
            assert sse.response.headers["cache-control"] == "no-cache"
            first = await sse.frame()
            assert first is not None
            assert first.fields == [("retry", "250")]
            current = await sse.event()
            assert (current.get("event"), current.id) == ("signal", SEEDED_AS_OF)
            # The same document GET /v1/signals returns.
            body = (await api.asgi.get(f"/v1/signals/binance/{SYMBOL}", params={"timeframe": "1m"})).json()
            assert current.data == body
            assert current.data["as_of"] == current.id

            received = [current.id]
            for index in (SEEDED, SEEDED + 1, SEEDED + 2):
                closed_at = await close_bars(redis, index)
                event = await sse.event()
                assert event.id == closed_at
                assert event.data["as_of"] == closed_at
                assert event.data["signal"]["close_time"] == closed_at
                received.append(event.id)
            assert await sse.events_before_heartbeats() == []
        assert received == [SEEDED_AS_OF + i * MINUTE_MS for i in range(4)]
        assert api.service.computed == 4  # one computation per closed bar


async def test_closes_of_other_timeframes_wake_no_stream(settings: Settings, redis_client: Redis) -> None:
    async with served(settings) as api:
        await seed(redis_client)
        async with api.stream() as sse:
            assert (await sse.event()).id == SEEDED_AS_OF
            assert await sse.events_before_heartbeats() == []
            # A 5m close arrives on the feed's channel: the 1m stream is not even woken for it …
            await redis_client.publish(CHANNEL, f"5m:{ROWS[SEEDED]['t']}")
            assert await sse.events_before_heartbeats() == []
            assert api.hub.wakeups == 0
            # … while a 1m announcement (here of a bar it already sent) wakes it, and it sends nothing again.
            await redis_client.publish(CHANNEL, f"1m:{ROWS[SEEDED - 1]['t']}")
            await eventually(lambda: api.hub.wakeups == 1, "the 1m stream to be woken")
            assert await sse.events_before_heartbeats() == []
            assert api.service.computed == 1


async def test_several_closes_at_once_send_only_the_newest_signal(settings: Settings, redis_client: Redis) -> None:
    async with served(settings) as api:
        await seed(redis_client)
        async with api.stream() as sse:
            assert (await sse.event()).id == SEEDED_AS_OF
            newest = await close_bars(redis_client, SEEDED, SEEDED + 1, SEEDED + 2)
            assert [e.id for e in await sse.events_before_heartbeats()] == [newest]
            after = await close_bars(redis_client, SEEDED + 3)
            assert (await sse.event()).id == after


async def test_last_event_id_resumes_without_repeating(settings: Settings, redis_client: Redis) -> None:
    async with served(settings) as api:
        await seed(redis_client)
        # The client already has the current signal: the stream starts idle, then sends the next close.
        async with api.stream(headers={"Last-Event-ID": str(SEEDED_AS_OF)}) as sse:
            assert await sse.events_before_heartbeats() == []
            closed_at = await close_bars(redis_client, SEEDED)
            assert (await sse.event()).id == closed_at
        # The query parameter (clients that cannot set headers) works the same; the larger of the two wins.
        async with api.stream({"last_event_id": SEEDED_AS_OF}, {"Last-Event-ID": str(closed_at)}) as sse:
            assert await sse.events_before_heartbeats() == []
        # An older id gets the current signal at once.
        async with api.stream({"last_event_id": SEEDED_AS_OF}) as sse:
            assert (await sse.event()).id == closed_at


async def test_a_feed_without_data_streams_heartbeats_until_its_first_close(
    settings: Settings, redis_client: Redis
) -> None:
    async with served(settings) as api, api.stream() as sse:
        assert (await api.asgi.get(f"/v1/signals/binance/{SYMBOL}")).status_code == 503
        # No closed bar yet (GET would be a 503): the stream stays open.
        assert await sse.events_before_heartbeats(3) == []
        await seed(redis_client, SEEDED - 1)  # a backfill announces nothing …
        closed_at = await close_bars(redis_client, SEEDED - 1)  # … the first live close does
        assert closed_at == SEEDED_AS_OF
        assert (await sse.event()).id == SEEDED_AS_OF


async def test_an_announced_close_the_signal_service_does_not_see_yet_is_read_again(
    settings: Settings, redis_client: Redis
) -> None:
    async with served(settings) as api:
        await seed(redis_client)
        async with api.stream() as sse:
            assert (await sse.event()).id == SEEDED_AS_OF
            # The announcement arrives before the service can see the bar (a per-process memo of the newest bar
            # may lag its own subscription): the stream reads again until it does, instead of dropping the close.
            await redis_client.publish(CHANNEL, f"1m:{ROWS[SEEDED]['t']}")
            await eventually(lambda: api.hub.wakeups == 1, "the stream to be woken")
            assert await sse.events_before_heartbeats() == []
            await seed(redis_client, SEEDED + 1)  # stored without a further announcement
            assert (await sse.event()).id == as_of_after(SEEDED)


async def test_max_events_ends_the_stream(settings: Settings, redis_client: Redis) -> None:
    async with served(settings) as api:
        await seed(redis_client)
        async with api.stream({"max_events": 2}) as sse:
            assert (await sse.event()).id == SEEDED_AS_OF
            closed_at = await close_bars(redis_client, SEEDED)
            rest = await sse.end()
            assert [f.id for f in rest if f.is_event] == [closed_at]
        await eventually(lambda: api.hub.streams == 0, "the stream slot to be released")


async def test_a_disconnected_client_leaves_no_task_or_subscription_behind(
    settings: Settings, redis_client: Redis
) -> None:
    async with served(settings) as api:
        await seed(redis_client)
        await eventually(lambda: not api.hub.streams)
        baseline = live_tasks()
        assert await numsub(redis_client) == 0
        async with api.stream() as first:
            await first.event()
            async with api.stream() as second:
                await second.event()
                # One subscription per process, shared by its streams.
                assert await numsub(redis_client) == 1
                assert api.hub.streams == 2
            await eventually(lambda: api.hub.streams == 1, "the second stream to end")
            assert await numsub(redis_client) == 1
            closed_at = await close_bars(redis_client, SEEDED)
            assert (await first.event()).id == closed_at  # the remaining stream is unaffected

        async def unsubscribed() -> bool:
            return await numsub(redis_client) == 0

        await eventually(unsubscribed, "the channel to be unsubscribed")
        await eventually(lambda: api.hub.streams == 0, "the stream slots to be released")
        await eventually(lambda: live_tasks() <= baseline, "the stream and reader tasks to end")
        assert live_tasks() <= baseline


async def test_streams_beyond_the_process_maximum_get_503_with_retry_after(
    settings: Settings, redis_client: Redis
) -> None:
    async with served(settings, signal_stream_max_per_process=1) as api:
        await seed(redis_client)
        async with api.stream() as sse:
            await sse.event()
            refused = await api.http.get(PATH)
            assert refused.status_code == 503
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["type"] == "/problems/signal-streams-busy"
        await eventually(lambda: api.hub.streams == 0, "the slot to be released")
        async with api.stream() as again:
            assert (await again.event()).id == SEEDED_AS_OF


async def test_a_tenant_beyond_its_stream_share_gets_429_while_others_are_admitted(
    settings: Settings, redis_client: Redis
) -> None:
    async with served(settings, signal_stream_max_per_tenant=1) as api:
        await seed(redis_client)
        async with api.stream() as sse:
            await sse.event()
            refused = await api.http.get(PATH)
            assert refused.status_code == 429
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["type"] == "/problems/tenant-signal-streams-exhausted"
            assert refused.json()["max_streams"] == 1
            other = httpx.AsyncClient(base_url=str(api.http.base_url), timeout=WAIT)
            await authenticate(api.app, other, tenant_name="another-tenant")
            async with other, other.stream("GET", PATH) as admitted:
                assert admitted.status_code == 200
                assert api.hub.streams == 2
        await eventually(lambda: api.hub.streams == 0, "both slots to be released")
        async with api.stream() as again:
            assert (await again.event()).id == SEEDED_AS_OF


CONFIGURED = "/v1/signals/binance/BTCUSDT/stream"  # a feed of the default settings (no data needed)


@pytest.mark.parametrize(
    ("path", "params", "headers", "status", "problem"),
    [
        ("/v1/signals/nope/BTCUSDT/stream", {}, {}, 404, "venue-not-found"),
        ("/v1/signals/binance/DOGEUSDT/stream", {}, {}, 404, "symbol-not-found"),
        (CONFIGURED, {"timeframe": "2m"}, {}, 422, "timeframe-invalid"),
        (CONFIGURED, {"last_event_id": "x"}, {}, 422, "validation-failed"),
        (CONFIGURED, {}, {"Last-Event-ID": "-1"}, 422, "validation-failed"),
        (CONFIGURED, {"max_events": 0}, {}, 422, "validation-failed"),
        (CONFIGURED, {}, {"authorization": ""}, 401, "api-key-missing"),
    ],
)
async def test_bad_requests_are_problems_before_the_stream_starts(
    signals_client: httpx.AsyncClient,
    app: FastAPI,
    path: str,
    params: dict[str, Any],
    headers: dict[str, str],
    status: int,
    problem: str,
) -> None:
    response = await signals_client.get(path, params=params, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == f"/problems/{problem}"
    if status == 404:
        assert response.json()["valid"]
    assert app.state.signal_hub.streams == 0


async def test_a_lost_pubsub_connection_is_recovered_and_caught_up(settings: Settings, redis_client: Redis) -> None:
    async with served(settings) as api:
        await seed(redis_client)
        async with api.stream() as sse:
            assert (await sse.event()).id == SEEDED_AS_OF
            assert await sse.events_before_heartbeats() == []  # idle: every wake so far is handled
            confirmed = api.hub.subscribed
            # A close whose announcement is lost (stored without PUBLISH), then the pub/sub connection drops.
            await seed(redis_client, SEEDED + 1)
            db = redis_client.connection_pool.connection_kwargs.get("db", 0)
            clients = await redis_client.client_list(_type="pubsub")
            ours = [c["id"] for c in clients if int(c["db"]) == db and int(c.get("sub", 0)) > 0]
            assert ours, "the hub's pub/sub connection"
            for client_id in ours:
                await redis_client.client_kill_filter(_id=client_id)
            # Resubscribed, the stream catches up on the bar it was never told about …
            assert (await sse.event()).id == as_of_after(SEEDED)
            assert api.hub.subscribed > confirmed
            # … and hears the next close as usual.
            closed_at = await close_bars(redis_client, SEEDED + 1)
            assert (await sse.event()).id == closed_at


async def test_draining_ends_streams_and_late_streams_get_only_the_catch_up(
    settings: Settings, redis_client: Redis
) -> None:
    async with served(settings) as api:
        await seed(redis_client)
        async with api.stream() as sse:
            assert (await sse.event()).id == SEEDED_AS_OF
            api.app.state.lifecycle.begin_drain()
            assert [f for f in await sse.end() if f.is_event] == []
        # Opened during the drain: the current signal, then the end (the client reconnects elsewhere).
        async with api.stream() as late:
            assert [f.id for f in await late.end() if f.is_event] == [SEEDED_AS_OF]
        await eventually(lambda: api.hub.streams == 0)


async def test_closing_the_hub_on_shutdown_ends_open_streams(settings: Settings, redis_client: Redis) -> None:
    async with served(settings) as api:
        await seed(redis_client)
        async with api.stream() as sse:
            await sse.event()
            await api.hub.aclose()  # what the lifespan's exit does
            assert [f for f in await sse.end() if f.is_event] == []


async def test_clients_on_two_instances_cost_one_computation_per_close(settings: Settings, redis_client: Redis) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(served(settings))
        b = await stack.enter_async_context(served(settings))
        await seed(redis_client)
        streams: list[Sse] = [await stack.enter_async_context(api.stream()) for api in (a, b, a, b)]
        for sse in streams:
            assert (await sse.event()).id == SEEDED_AS_OF
        for index in (SEEDED, SEEDED + 1):
            closed_at = await close_bars(redis_client, index)
            events = [await sse.event() for sse in streams]
            assert {e.id for e in events} == {closed_at}
            assert len({orjson.dumps(e.data["signal"]) for e in events}) == 1
        assert a.service.computed + b.service.computed == 3  # the initial signal and one per close
        assert await numsub(redis_client) == 2  # one subscription per instance


# ---- real server processes ----------------------------------------------------------------------------------


def _env(postgres_url: str, **extra: str) -> dict[str, str]:
    return {
        "DELTAFLOW_DATABASE_URL": postgres_url,
        "DELTAFLOW_REDIS_URL": TEST_REDIS_URL,
        "DELTAFLOW_ANALYZE_WORKERS": "0",
        "DELTAFLOW_FEEDS": FEED,
        "DELTAFLOW_SIGNAL_STREAM_HEARTBEAT_SECONDS": "0.5",
        **extra,
    }


@asynccontextmanager
async def sse_over(base_url: str, secret: str, **headers: str) -> AsyncIterator[Sse]:
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=WAIT) as http,
        http.stream("GET", PATH, headers={"authorization": f"Bearer {secret}", **headers}) as response,
    ):
        assert response.status_code == 200, await response.aread()
        yield Sse(response)


@pytest.mark.e2e
async def test_a_close_written_to_redis_reaches_clients_of_every_server_process(
    postgres_url: str, redis_client: Redis
) -> None:
    env = _env(postgres_url)
    secret = _bootstrap(env)
    await seed(redis_client)
    async with AsyncExitStack() as stack:
        _a, url_a = await stack.enter_async_context(serve(env=env))
        _b, url_b = await stack.enter_async_context(serve(env=env))
        on_a = await stack.enter_async_context(sse_over(url_a, secret))
        on_b = await stack.enter_async_context(sse_over(url_b, secret))
        for sse in (on_a, on_b):
            assert (await sse.event()).id == SEEDED_AS_OF
        closed_at = await close_bars(redis_client, SEEDED)
        got_a, got_b = await on_a.event(), await on_b.event()
        assert got_a.id == got_b.id == closed_at
        assert got_a.data == got_b.data
        # A client of B resuming from an id it already has gets only what is new.
        resumed = await stack.enter_async_context(sse_over(url_b, secret, **{"Last-Event-ID": str(closed_at)}))
        next_close = await close_bars(redis_client, SEEDED + 1)
        assert (await resumed.event()).id == next_close


@pytest.mark.e2e
async def test_sigterm_ends_open_streams_so_the_server_exits_promptly(postgres_url: str, redis_client: Redis) -> None:
    env = _env(postgres_url, DELTAFLOW_DRAIN_SECONDS="0.5", DELTAFLOW_SHUTDOWN_TIMEOUT_SECONDS="60")
    secret = _bootstrap(env)
    await seed(redis_client)
    async with serve(env=env) as (process, base_url), sse_over(base_url, secret) as sse:
        assert (await sse.event()).id == SEEDED_AS_OF
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert [f for f in await sse.end() if f.is_event] == []
        # Far sooner than the 60 s graceful-shutdown timeout a held-open stream would cost.
        assert await _wait_for_exit(process, within_seconds=20) == 0
        assert time.monotonic() - signalled < 20
