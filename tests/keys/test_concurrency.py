"""The per-tenant concurrency limit of one instance (`app.auth.concurrency`): the counting itself, then over real HTTP
(uvicorn in the test's loop, real Postgres and Redis) — held requests fill a tenant's slots, its next request gets
a 429 problem at once and spends no token, other tenants pass, and an event stream gives its slot back as soon as
it starts."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from app.auth.concurrency import ConcurrencyLimited, TenantConcurrency, tenant_concurrency_from
from app.auth.scopes import Role
from app.config import Settings
from app.core.errors import PROBLEM_MEDIA_TYPE
from app.main import create_app
from tests.helpers import running
from tests.keys.conftest import key_maker
from tests.sse import WAIT, Sse, uvicorn_serving

TENANT = uuid.UUID("00000000-0000-4000-8000-00000000000a")
OTHER = uuid.UUID("00000000-0000-4000-8000-00000000000b")


def test_a_tenant_holds_at_most_its_slots_and_each_release_counts_once() -> None:
    limiter = TenantConcurrency(max_in_flight=2, retry_after_seconds=3)
    first, second = limiter.admit(TENANT), limiter.admit(TENANT)
    with pytest.raises(ConcurrencyLimited) as refused:
        limiter.admit(TENANT)
    assert refused.value.status == 429
    assert refused.value.headers == {"retry-after": "3"}
    assert refused.value.extensions == {"limit": 2}
    other = limiter.admit(OTHER)  # another tenant's slots are its own
    first.release()
    first.release()  # a second release gives nothing back twice
    assert limiter.in_flight(TENANT) == 1
    third = limiter.admit(TENANT)
    for slot in (second, third, other):
        slot.release()
    assert (limiter.in_flight(TENANT), limiter.in_flight(OTHER)) == (0, 0)
    assert limiter._in_flight == {}  # idle tenants leave nothing behind


def test_zero_switches_the_limit_off() -> None:
    assert tenant_concurrency_from(0, 1) is None
    limiter = tenant_concurrency_from(5, 1)
    assert limiter is not None
    assert limiter.max_in_flight == 5


class HeldBody:
    """A request body that stops after its first chunk until `let_go`: the request stays in progress meanwhile."""

    def __init__(self) -> None:
        self.sent = asyncio.Event()
        self.let_go = asyncio.Event()

    async def chunks(self) -> AsyncIterator[bytes]:
        yield b'{"candles": '
        self.sent.set()
        await self.let_go.wait()
        yield b"[]}"


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[tuple[str, dict[str, dict[str, str]]]]:
    limited = settings.model_copy(update={"tenant_max_in_flight": 2, "rate_limit_per_second": 0.001,
                                          "rate_limit_burst": 100, "alert_stream_heartbeat_seconds": 0.1})  # fmt: skip
    app = create_app(limited)
    async with running(app):
        make = key_maker(app, limited)
        keys = {"busy": await make(Role.READER, tenant="busy"), "calm": await make(Role.READER, tenant="calm")}
        async with uvicorn_serving(app) as base_url:
            yield base_url, {name: key.headers for name, key in keys.items()}


def _remaining(response: httpx.Response) -> int:
    return int(response.headers["ratelimit"].split("r=")[1].split(";")[0])


async def test_a_tenant_past_its_slots_gets_a_429_at_once_and_other_tenants_pass(
    served: tuple[str, dict[str, dict[str, str]]],
) -> None:
    base_url, keys = served
    async with httpx.AsyncClient(base_url=base_url, timeout=WAIT) as http:
        before = _remaining(await http.get("/v1/me", headers=keys["busy"]))
        bodies = [HeldBody(), HeldBody()]
        held = [
            asyncio.create_task(http.post("/v1/analyze", content=body.chunks(), headers=keys["busy"]))
            for body in bodies
        ]
        for body in bodies:
            await asyncio.wait_for(body.sent.wait(), WAIT)
        # Both requests are inside the app (their bodies half sent): the tenant's two slots are taken.
        refused = await http.get("/v1/me", headers=keys["busy"])
        assert refused.status_code == 429, refused.text
        assert refused.headers["content-type"] == PROBLEM_MEDIA_TYPE
        assert refused.headers["retry-after"] == "1"
        problem = refused.json()
        assert problem["type"] == "/problems/concurrency-limited"
        assert problem["limit"] == 2
        assert (await http.get("/v1/me", headers=keys["calm"])).status_code == 200

        for body in bodies:
            body.let_go.set()
        finished = await asyncio.gather(*held)
        assert all(response.status_code != 429 for response in finished), [r.text for r in finished]
        after = await http.get("/v1/me", headers=keys["busy"])
        assert after.status_code == 200
        # Tokens: /v1/me before, two held requests, /v1/me after; the refused request spent none.
        assert _remaining(after) == before - 3
        documented = await http.get("/problems/concurrency-limited")
        assert documented.json()["status"] == 429


async def test_an_event_stream_gives_its_slot_back_once_it_starts(
    served: tuple[str, dict[str, dict[str, str]]],
) -> None:
    base_url, keys = served
    async with httpx.AsyncClient(base_url=base_url, timeout=WAIT) as http:
        streams = [http.stream("GET", "/v1/alerts/stream", headers=keys["busy"]) for _ in range(3)]
        responses = [await stream.__aenter__() for stream in streams]
        try:
            # Three streams open at once with two slots: each held one only until its headers went out.
            assert [response.status_code for response in responses] == [200, 200, 200]
            for response in responses:
                assert await Sse(response).frame() is not None
            assert (await http.get("/v1/me", headers=keys["busy"])).status_code == 200
        finally:
            for stream in streams:
                await stream.__aexit__(None, None, None)
