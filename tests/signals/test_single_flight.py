"""A signal is computed once per closed bar, however many requests and instances ask for it at once."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

import orjson
from fastapi import FastAPI
from httpx import AsyncClient
from redis.asyncio import Redis

from app.config import Settings
from app.main import create_app
from app.signals.service import SignalService, cache_key
from tests.helpers import running
from tests.signals.test_signals import PATH, seed_walk
from tests.trading.conftest import authenticate

LAST_CLOSED = 1_700_000_000_000 + 59 * 60_000  # open time of seed_walk's newest closed bar


def service(app: FastAPI) -> SignalService:
    result: SignalService = app.state.signal_service
    return result


async def test_concurrent_requests_in_one_instance_compute_once(
    signals_client: AsyncClient, app: FastAPI, redis_client: Redis
) -> None:
    await seed_walk(redis_client)
    responses = await asyncio.gather(*(signals_client.get(PATH) for _ in range(20)))
    assert {r.status_code for r in responses} == {200}
    assert service(app).computed == 1
    assert len({r.json()["signal"]["score"] for r in responses}) == 1
    assert sorted(r.headers["x-cache"] for r in responses) == ["hit"] * 19 + ["miss"]


async def test_concurrent_requests_across_instances_compute_once(settings: Settings, redis_client: Redis) -> None:
    await seed_walk(redis_client)
    async with AsyncExitStack() as stack:
        apps = [create_app(settings) for _ in range(3)]
        clients = [await authenticate(app, await stack.enter_async_context(running(app))) for app in apps]
        responses = await asyncio.gather(*(clients[i % 3].get(PATH) for i in range(30)))
        assert {r.status_code for r in responses} == {200}
        assert sum(service(app).computed for app in apps) == 1
        assert len({r.headers["etag"] for r in responses}) == 1


async def test_a_waiter_takes_the_entry_another_instance_computed(
    signals_client: AsyncClient, app: FastAPI, redis_client: Redis
) -> None:
    await seed_walk(redis_client)
    key = cache_key("binance", "BTCUSDT", "1m", LAST_CLOSED)
    await redis_client.set(f"{key}:lock", "another-instance", px=10_000)
    request = asyncio.create_task(signals_client.get(PATH))
    await asyncio.sleep(0.2)
    assert not request.done()  # waiting for the lock holder, not computing
    document: dict[str, Any] = {"venue": "binance", "computed_by": "another-instance"}
    await redis_client.set(key, orjson.dumps(document))
    response = await asyncio.wait_for(request, timeout=10)
    assert response.status_code == 200
    assert response.json()["computed_by"] == "another-instance"
    assert response.headers["x-cache"] == "hit"
    assert service(app).computed == 0


async def test_a_waiter_computes_itself_when_the_lock_holder_dies(settings: Settings, redis_client: Redis) -> None:
    await seed_walk(redis_client)
    key = cache_key("binance", "BTCUSDT", "1m", LAST_CLOSED)
    await redis_client.set(f"{key}:lock", "dead-instance", px=300)  # its holder never finishes
    app = create_app(settings.model_copy(update={"signal_singleflight_timeout_seconds": 5.0}))
    async with running(app) as client:
        await authenticate(app, client)
        response = await asyncio.wait_for(client.get(PATH), timeout=10)
        assert response.status_code == 200
        assert response.headers["x-cache"] == "miss"
        assert service(app).computed == 1
    assert await redis_client.exists(key) == 1
    assert await redis_client.exists(f"{key}:lock") == 0  # released after computing


async def test_a_client_that_disconnects_does_not_abort_the_shared_computation(
    signals_client: AsyncClient, app: FastAPI, redis_client: Redis
) -> None:
    await seed_walk(redis_client)
    request = asyncio.create_task(signals_client.get(PATH))
    for _ in range(2000):  # until the shared computation has started
        if service(app).computed:
            break
        await asyncio.sleep(0.005)
    request.cancel()
    key = cache_key("binance", "BTCUSDT", "1m", LAST_CLOSED)
    for _ in range(500):
        if await redis_client.exists(key):
            break
        await asyncio.sleep(0.02)
    assert await redis_client.exists(key) == 1
    again = await signals_client.get(PATH)
    assert again.headers["x-cache"] == "hit"
    assert service(app).computed == 1
