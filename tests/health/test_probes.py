"""/healthz, /readyz and /startupz against real and deliberately broken dependencies."""

from __future__ import annotations

import time
from typing import Any

import pytest
from httpx import AsyncClient

from app.config import Settings
from app.core.errors import PROBLEM_MEDIA_TYPE
from app.main import create_app
from tests.conftest import TEST_REDIS_URL, make_settings
from tests.helpers import blackhole_server, free_port, running


def _checks(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in body["checks"]}


async def test_liveness_touches_no_dependency() -> None:
    # Both dependencies point at closed ports: liveness must not care.
    dead = make_settings(
        database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/x",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
    )
    async with running(create_app(dead)) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_lists_database_and_redis_with_latency(client: AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    checks = _checks(body)
    assert set(checks) == {"database", "redis"}
    assert checks["database"]["status"] == "ok"
    assert "current" in checks["database"]["detail"]
    assert checks["redis"]["status"] == "ok"
    assert all(check["latency_ms"] >= 0 for check in checks.values())


async def test_ready_on_the_embedded_backends(sqlite_url: str, memory_redis_url: str) -> None:
    async with running(create_app(make_settings(database_url=sqlite_url, redis_url=memory_redis_url))) as client:
        response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_redis_down_is_degraded_but_still_ready(postgres_url: str) -> None:
    settings = make_settings(database_url=postgres_url, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async with running(create_app(settings)) as client:
        response = await client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert _checks(body)["redis"]["status"] == "fail"
    assert _checks(body)["database"]["status"] == "ok"


async def test_database_refusing_connections_is_503_within_a_second() -> None:
    settings = make_settings(
        database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/x", redis_url=TEST_REDIS_URL
    )
    async with running(create_app(settings)) as client:
        started = time.monotonic()
        response = await client.get("/readyz")
        elapsed = time.monotonic() - started
    assert elapsed < 1.0
    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body = response.json()
    assert body["type"] == "/problems/not-ready"
    assert _checks(body)["database"]["status"] == "fail"
    assert "database" in body["detail"]


async def test_hung_database_is_cut_off_by_the_check_timeout() -> None:
    async with blackhole_server() as port:
        settings = make_settings(
            database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{port}/x", redis_url=TEST_REDIS_URL
        )
        async with running(create_app(settings)) as client:
            started = time.monotonic()
            response = await client.get("/readyz")
            elapsed = time.monotonic() - started
    assert response.status_code == 503
    database = _checks(response.json())["database"]
    assert database["detail"] == "timed out after 500 ms"
    assert 0.45 <= elapsed < 1.0, "checks run concurrently, each bounded by 500 ms"


async def test_unmigrated_database_is_not_ready(empty_postgres_url: str) -> None:
    settings = make_settings(database_url=empty_postgres_url, redis_url=TEST_REDIS_URL)
    async with running(create_app(settings)) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert "schema missing" in _checks(response.json())["database"]["detail"]


async def test_draining_instance_is_not_ready_at_once(settings: Settings) -> None:
    app = create_app(settings)
    async with running(app) as client:
        assert (await client.get("/readyz")).status_code == 200
        app.state.lifecycle.begin_drain()
        response = await client.get("/readyz")
        liveness = await client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["detail"] == "Draining for shutdown."
    assert response.headers["retry-after"] == "5"
    assert liveness.status_code == 200


async def test_startup_probe_is_200_only_after_the_lifespan_ran(settings: Settings) -> None:
    from httpx import ASGITransport

    app = create_app(settings)
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://testserver") as raw:
        before = await raw.get("/startupz")
    assert before.status_code == 503
    assert before.json()["type"] == "/problems/not-started"
    async with running(app) as client:
        after = await client.get("/startupz")
    assert after.status_code == 200
    assert after.json() == {"status": "started"}


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/startupz"])
async def test_probes_are_in_the_openapi_document(client: AsyncClient, path: str) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert "get" in spec["paths"][path]
