"""GET /v1/alerts/stream: the tenant's alert events as Server-Sent Events over real HTTP (a uvicorn server in the
test's event loop; httpx's in-process transport buffers a response until it ends). Events are written to the table
and announced on the tenant's channel as the engine does (`events.publish_events` after the commit)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from app.alerts.events import event_document, events_channel, publish_events
from app.alerts.stream_hub import AlertEventHub
from app.auth.scopes import Role, Scope
from app.config import Settings
from app.main import create_app
from app.models import AlertEvent
from tests.alerts.history_fixtures import insert_event
from tests.helpers import running
from tests.keys.conftest import IssuedKey, key_maker
from tests.sse import WAIT, Frame, Sse, eventually, uvicorn_serving

pytestmark = pytest.mark.e2e  # a real server (uvicorn in the test's loop) and real HTTP

STREAM_SETTINGS: dict[str, object] = {
    "alert_stream_heartbeat_seconds": 0.1,
    "alert_stream_poll_seconds": 0.05,
    "alert_stream_retry_ms": 250,
    "alert_stream_reconnect_base_seconds": 0.05,
    "alert_stream_reconnect_cap_seconds": 0.5,
    "alert_stream_overlap_seconds": 5.0,
    "alerts_evaluate": False,
}


@dataclass
class Served:
    app: FastAPI
    base_url: str
    owner: IssuedKey  # reader of the streamed tenant
    other: IssuedKey  # admin of another tenant

    @property
    def hub(self) -> AlertEventHub:
        hub: AlertEventHub = self.app.state.alert_hub
        return hub

    @asynccontextmanager
    async def stream(
        self,
        key: IssuedKey | None = None,
        *,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> AsyncIterator[Sse]:
        caller = key or self.owner
        watched = (params or {}).get("tenant_id") or caller.tenant_id
        channel = events_channel(uuid.UUID(str(watched)))
        redis: Redis = self.app.state.redis
        async with (
            httpx.AsyncClient(base_url=self.base_url, headers=caller.headers, timeout=WAIT) as http,
            http.stream("GET", "/v1/alerts/stream", params=params, headers=headers) as response,
        ):
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            sse = Sse(response)
            first = await sse.frame()
            assert first is not None
            assert first.fields == [("retry", "250")]

            # The channel is subscribed (by this stream's reader, or still from an earlier stream of the tenant,
            # which the reader then keeps): from here on a publish reaches the stream.
            async def subscribed() -> bool:
                return int((await redis.pubsub_numsub(channel))[0][1]) > 0

            await eventually(subscribed, "the subscription")
            yield sse

    async def record(self, key: IssuedKey, *offsets: float, publish: bool = True) -> list[AlertEvent]:
        """Events of `key`'s tenant recorded at now + each offset in seconds (committed), then announced unless told
        not to. A stream started now sends events recorded from its request on: live ones use offsets >= 0."""
        now = datetime.now(UTC)
        events = [await insert_event(self.app, key.tenant_id, created_at=now + timedelta(seconds=at)) for at in offsets]
        if publish:
            await publish_events(self.app.state.redis, events)
        return events


@asynccontextmanager
async def served(settings: Settings, **overrides: object) -> AsyncIterator[Served]:
    app = create_app(settings.model_copy(update={**STREAM_SETTINGS, **overrides}))
    async with running(app):
        make = key_maker(app, app.state.settings)
        owner = await make(Role.READER, tenant="stream-owner")
        other = await make(Role.ADMIN, tenant="stream-other")
        async with uvicorn_serving(app) as base_url:
            yield Served(app, base_url, owner, other)


def ids(frames: list[Frame]) -> list[str]:
    return [frame.get("id") or "" for frame in frames]


def event_ids(events: list[AlertEvent]) -> list[str]:
    return [str(event.id) for event in events]


async def kill_pubsub_connections(redis: Redis, db: int) -> int:
    """Drop this test's pub/sub connections (those on its own Redis DB index) as a network failure would."""
    killed = 0
    for client in await redis.client_list(_type="pubsub"):
        if int(client.get("db", -1)) == db:
            await redis.client_kill_filter(_id=client["id"])
            killed += 1
    return killed


# ---- tests --------------------------------------------------------------------------------------------------


async def test_live_events_arrive_once_in_order_and_only_the_tenants_own(settings: Settings) -> None:
    async with served(settings) as api, api.stream() as sse:
        assert sse.response.headers["cache-control"] == "no-cache"
        assert "content-encoding" not in sse.response.headers
        theirs = await api.record(api.other, 0.0)
        mine = await api.record(api.owner, 0.001, 0.002)
        # The same announcement again (a replayed publish) sends nothing twice.
        await publish_events(api.app.state.redis, mine)
        received = await sse.events_before_heartbeats()
        assert ids(received) == event_ids(mine)
        assert not set(ids(received)) & set(event_ids(theirs))
        assert [frame.get("event") for frame in received] == ["alert.fired"] * 2
        assert received[0].data == event_document(mine[0])


async def test_a_stream_started_now_skips_the_past(settings: Settings) -> None:
    async with served(settings) as api:
        await api.record(api.owner, -60.0, publish=False)
        async with api.stream() as sse:
            assert await sse.events_before_heartbeats() == []
            fresh = await api.record(api.owner, 0.0)
            assert ids(await sse.events_before_heartbeats()) == event_ids(fresh)


async def test_last_event_id_resumes_with_what_was_recorded_while_disconnected(settings: Settings) -> None:
    # Events a second apart, beyond the overlap window: a resume is then exact.
    async with served(settings, alert_stream_overlap_seconds=0.5) as api:
        async with api.stream() as sse:
            first = await api.record(api.owner, 0.0)  # published: the stream receives it
            assert ids(await sse.events_before_heartbeats()) == event_ids(first)
        # Disconnected: recorded (and announced to nobody) meanwhile, plus another tenant's.
        missed = await api.record(api.owner, 1.0, 2.0, 3.0)
        await api.record(api.other, 1.5)
        async with api.stream(headers={"Last-Event-ID": str(first[0].id)}) as sse:
            caught_up = await sse.events_before_heartbeats()
            assert ids(caught_up) == event_ids(missed)  # oldest first, nothing twice, nothing of the other tenant
            assert caught_up[0].data == event_document(missed[0])
            live = await api.record(api.owner, 4.0)
            assert ids(await sse.events_before_heartbeats()) == event_ids(live)
        # Clients that cannot set headers pass the query parameter; the header wins when both are sent.
        async with api.stream(params={"last_event_id": str(missed[1].id)}) as sse:
            assert ids(await sse.events_before_heartbeats()) == event_ids([missed[2], live[0]])
        async with api.stream(
            params={"last_event_id": str(first[0].id)}, headers={"Last-Event-ID": str(missed[2].id)}
        ) as sse:
            assert ids(await sse.events_before_heartbeats()) == event_ids(live)


async def test_a_resume_resends_the_overlap_window_so_a_late_commit_is_not_lost(settings: Settings) -> None:
    async with served(settings, alert_stream_overlap_seconds=5.0) as api:
        async with api.stream() as sse:
            seen = await api.record(api.owner, 0.0, 10.0)
            assert ids(await sse.events_before_heartbeats()) == event_ids(seen)
        # Created before the last event the client saw, committed after it, its announcement lost: on resume the
        # window before the last event is read again, so the client gets it (an event of the window it already
        # had would come again, with its id: clients deduplicate by id).
        late = await api.record(api.owner, 8.0, publish=False)
        async with api.stream(headers={"Last-Event-ID": str(seen[1].id)}) as sse:
            assert ids(await sse.events_before_heartbeats()) == event_ids(late)
        async with api.stream(headers={"Last-Event-ID": str(late[0].id)}) as sse:
            # The last one seen was `late` (8 s): `seen[1]` (10 s) comes after it; `seen[0]` (0 s) is out of the window.
            assert ids(await sse.events_before_heartbeats()) == event_ids(seen[1:])


async def test_a_lost_pubsub_connection_loses_no_event(settings: Settings, redis_client: Redis) -> None:
    db = int(settings.redis_url.rsplit("/", 1)[1])
    async with served(settings) as api, api.stream() as sse:
        before = api.hub.subscribed
        # Recorded but never announced (the message was lost with the connection), then the connection drops.
        lost = await api.record(api.owner, 0.0, publish=False)
        assert await kill_pubsub_connections(redis_client, db) >= 1
        await eventually(lambda: api.hub.subscribed > before, "the resubscription")
        assert ids(await sse.events_before_heartbeats()) == event_ids(lost)


async def test_a_late_commit_inside_the_overlap_is_sent_and_nothing_twice(settings: Settings) -> None:
    async with served(settings) as api, api.stream() as sse:
        later = await api.record(api.owner, 1.0)
        assert ids(await sse.events_before_heartbeats()) == event_ids(later)
        # Created before the event already sent, committed after it, announcement lost: the next catch-up (here a
        # buffer overflow, as a slow client causes) re-reads the overlap window and sends only what is new.
        earlier = await api.record(api.owner, 0.5, publish=False)
        for subscription in api.hub._channels[events_channel(api.owner.tenant_id)]:
            subscription.mark_lost()
        assert ids(await sse.events_before_heartbeats()) == event_ids(earlier)


async def test_a_slow_consumers_overflow_is_read_from_the_table(settings: Settings) -> None:
    async with served(settings, alert_stream_buffer=2) as api, api.stream() as sse:
        burst = await api.record(api.owner, 0.001, 0.002, 0.003, 0.004, 0.005, publish=False)
        # Five announcements at once into a buffer of two: the stream drops them and reads the table instead.
        subscriptions = api.hub._channels[events_channel(api.owner.tenant_id)]
        for event in burst:
            for subscription in subscriptions:
                subscription.push(orjson.dumps(event_document(event)))
        assert ids(await sse.events_before_heartbeats()) == event_ids(burst)


async def test_an_unknown_last_event_id_is_a_422_problem(settings: Settings) -> None:
    async with served(settings) as api:
        theirs = await api.record(api.other, -1.0, publish=False)
        async with httpx.AsyncClient(base_url=api.base_url, headers=api.owner.headers, timeout=WAIT) as http:
            for value in ("not-an-id", str(theirs[0].id), "00000000-0000-0000-0000-000000000001"):
                response = await http.get("/v1/alerts/stream", headers={"Last-Event-ID": value})
                assert response.status_code == 422, value
                assert response.json()["type"] == "/problems/alert-stream-resume-invalid"
        assert api.hub.streams == 0  # refused before a slot was taken


async def test_streams_are_bounded_per_tenant_and_per_process(settings: Settings) -> None:
    async with served(settings, alert_stream_max_per_tenant=1, alert_stream_max_per_process=2) as api:
        async with api.stream(), httpx.AsyncClient(base_url=api.base_url, timeout=WAIT) as http:
            second = await http.get("/v1/alerts/stream", headers=api.owner.headers)
            assert second.status_code == 429
            assert second.json()["type"] == "/problems/tenant-alert-streams-exhausted"
            assert int(second.headers["retry-after"]) >= 1
            async with api.stream(api.other):
                third = await http.get("/v1/alerts/stream", headers=api.other.headers)
                assert third.status_code == 503
                assert third.json()["type"] == "/problems/alert-streams-busy"
        await eventually(lambda: api.hub.streams == 0, "the slots released")


async def test_streams_end_on_drain_and_after_max_events(settings: Settings) -> None:
    async with served(settings) as api:
        async with api.stream(params={"max_events": 1}) as sse:
            events = await api.record(api.owner, 0.001, 0.002)
            frames = await sse.end()
            assert ids([f for f in frames if f.is_event]) == event_ids(events[:1])
        async with api.stream() as sse:
            api.app.state.lifecycle.begin_drain()
            assert [f for f in await sse.end() if f.is_event] == []
        await eventually(lambda: api.hub.streams == 0, "the slots released")


async def test_a_key_without_alerts_read_is_refused(settings: Settings) -> None:
    async with served(settings) as api:
        make = key_maker(api.app, api.app.state.settings)
        signals_only = await make(Role.READER, tenant="stream-owner", scopes=frozenset({Scope.SIGNALS_READ}))
        async with httpx.AsyncClient(base_url=api.base_url, headers=signals_only.headers, timeout=WAIT) as http:
            assert (await http.get("/v1/alerts/stream")).status_code == 403


async def test_operators_may_stream_another_tenant_and_nobody_else_may(settings: Settings) -> None:
    async with served(settings) as api:
        operator = await key_maker(api.app, api.app.state.settings)(Role.OPERATOR, tenant="ops")
        target = {"tenant_id": str(api.other.tenant_id)}
        async with httpx.AsyncClient(base_url=api.base_url, headers=api.owner.headers, timeout=WAIT) as http:
            assert (await http.get("/v1/alerts/stream", params=target)).status_code == 404
        async with api.stream(operator, params=target) as sse:
            await api.record(api.owner, 0.0)
            theirs = await api.record(api.other, 0.001)
            assert ids(await sse.events_before_heartbeats()) == event_ids(theirs)
