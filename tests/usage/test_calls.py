"""The call log: every authenticated /v1 call recorded off the request path, searchable by its tenant."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text

from app.auth.scopes import Role
from app.config import Settings
from app.main import create_app
from app.usage.calls.maintenance import maintain
from app.usage.calls.recorder import CallRecorder
from app.usage.calls.repository import ensure_partitions
from tests.helpers import running
from tests.keys.conftest import IssuedKey, MakeKey


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Written only when a test flushes: each test reads exactly the calls it made.
    return settings.model_copy(update={"call_log_flush_seconds": 3600.0})


async def _flush(app: FastAPI) -> None:
    recorder: CallRecorder = app.state.call_log
    await recorder.flush(app.state.session_factory)


async def _calls(client: AsyncClient, key: IssuedKey, **params: str | int) -> dict[str, Any]:
    response = await client.get("/v1/usage/calls", params=params, headers=key.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_every_call_is_logged_with_route_status_latency_size_and_request_id(
    app: FastAPI, client: AsyncClient, make_key: MakeKey
) -> None:
    admin = await make_key(Role.ADMIN)
    headers = {**admin.headers, "x-request-id": "trace-42", "user-agent": "bot/" + "x" * 300}
    assert (await client.get("/v1/me", headers=headers)).status_code == 200
    assert (await client.get("/v1/keys/not-a-uuid", headers=admin.headers)).status_code == 422
    await _flush(app)
    page = await _calls(client, admin)
    items = page["items"]
    assert isinstance(items, list)
    assert [(c["method"], c["route"], c["status"]) for c in items] == [
        ("GET", "/v1/keys/{key_id}", 422),
        ("GET", "/v1/me", 200),
    ]
    me = items[1]
    assert me["request_id"] == "trace-42"
    assert me["user_agent"] == ("bot/" + "x" * 300)[:200]
    assert me["key_id"] == str(admin.key_id)
    assert me["response_bytes"] > 50
    assert 0 < me["latency_ms"] < 5000
    assert me["client_address"] == "127.0.0.1"
    assert page["dropped"] == 0


async def test_filters_and_keyset_pages_are_stable_and_complete(
    app: FastAPI, client: AsyncClient, make_key: MakeKey
) -> None:
    admin = await make_key(Role.ADMIN)
    reader = await make_key(Role.READER)
    for _ in range(4):
        await client.get("/v1/me", headers=admin.headers)
    for _ in range(3):
        await client.get("/v1/me", headers=reader.headers)
    await client.get("/v1/keys/not-a-uuid", headers=admin.headers)
    await _flush(app)
    everything = (await _calls(client, admin, limit=100))["items"]
    assert isinstance(everything, list)
    assert len(everything) == 8
    seen: list[Any] = []
    cursor = None
    while True:
        page = await _calls(client, admin, limit=3, **({"cursor": cursor} if cursor else {}))
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == everything
    assert len((await _calls(client, admin, key_id=str(reader.key_id)))["items"]) == 3
    assert len((await _calls(client, admin, status=422))["items"]) == 1
    assert len((await _calls(client, admin, route="/v1/me"))["items"]) == 7
    assert (await _calls(client, admin, min_latency_ms=3_600_000))["items"] == []
    future = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    assert (await _calls(client, admin, **{"from": future}))["items"] == []


async def test_a_tenant_sees_only_its_own_calls_and_operators_any(
    app: FastAPI, client: AsyncClient, make_key: MakeKey
) -> None:
    mine = await make_key(Role.ADMIN)
    other = await make_key(Role.ADMIN, tenant="other")
    operator = await make_key(Role.OPERATOR, tenant="ops")
    await client.get("/v1/me", headers={**mine.headers, "x-request-id": "mine-1"})
    await _flush(app)
    assert (await _calls(client, other))["items"] == []
    refused = await client.get("/v1/usage/calls", params={"tenant_id": str(mine.tenant_id)}, headers=other.headers)
    assert refused.status_code == 404
    assert (await client.get("/v1/usage/calls/mine-1", headers=other.headers)).status_code == 404
    seen = await _calls(client, operator, tenant_id=str(mine.tenant_id))
    assert [c["request_id"] for c in seen["items"]] == ["mine-1"]
    one = await client.get("/v1/usage/calls/mine-1", headers=mine.headers)
    assert one.status_code == 200
    assert one.json()[0]["route"] == "/v1/me"
    missing = await client.get("/v1/usage/calls/nothing-here", headers=mine.headers)
    assert missing.status_code == 404
    assert missing.json()["type"] == "/problems/call-not-found"


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
async def test_the_export_streams_every_matching_call(
    app: FastAPI, client: AsyncClient, make_key: MakeKey, fmt: str
) -> None:
    admin = await make_key(Role.ADMIN)
    for index in range(5):
        await client.get("/v1/me", headers={**admin.headers, "x-request-id": f"export-{index}"})
    await _flush(app)
    response = await client.get("/v1/usage/calls/export", params={"format": fmt}, headers=admin.headers)
    assert response.status_code == 200
    if fmt == "csv":
        assert response.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(response.text)))
    else:
        assert response.headers["content-type"].startswith("application/x-ndjson")
        rows = [orjson.loads(line) for line in response.text.splitlines()]
    assert [row["request_id"] for row in rows] == [f"export-{i}" for i in reversed(range(5))]


@pytest.mark.parametrize("path", ["/v1/usage/calls", "/v1/usage/calls/export"])
async def test_a_control_character_in_the_route_filter_is_a_422_before_any_body(
    client: AsyncClient, make_key: MakeKey, path: str
) -> None:
    """A NUL reached Postgres (which refuses it in text) after the export's response had started: the client got
    a broken chunked stream (found by schemathesis). It is refused up front, as every other bad filter is."""
    admin = await make_key(Role.ADMIN)
    params = {"route": "/v1/me\x00", **({"format": "csv"} if path.endswith("export") else {})}
    response = await client.get(path, params=params, headers=admin.headers)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["parameter"] == "route"


async def test_a_full_buffer_drops_and_counts_never_blocks(settings: Settings, make_key: MakeKey) -> None:
    app = create_app(settings.model_copy(update={"call_log_max_pending": 2}))
    async with running(app) as client:
        from tests.keys.conftest import key_maker

        admin = await key_maker(app, settings)(Role.ADMIN)
        for _ in range(5):
            assert (await client.get("/v1/me", headers=admin.headers)).status_code == 200
        await _flush(app)
        page = await _calls(client, admin)
        assert len(page["items"]) == 2
        assert page["dropped"] == 3


async def test_refused_calls_are_logged_too(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"rate_limit_per_second": 0.001, "rate_limit_burst": 2}))
    async with running(app) as client:
        from tests.keys.conftest import key_maker

        admin = await key_maker(app, settings)(Role.ADMIN)
        statuses = [(await client.get("/v1/me", headers=admin.headers)).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        await _flush(app)
        async with app.state.session_factory() as session:
            logged = (await session.execute(text("SELECT status FROM api_calls ORDER BY at"))).scalars().all()
        assert sorted(logged) == [200, 200, 429]


async def test_postgres_keeps_a_partition_per_day_and_drops_them_at_the_retention(
    app: FastAPI, client: AsyncClient, make_key: MakeKey, settings: Settings
) -> None:
    await maintain(app.state.session_factory, settings)  # what start-up runs in the background
    admin = await make_key(Role.ADMIN)
    await client.get("/v1/me", headers=admin.headers)
    await _flush(app)
    today = datetime.now(UTC).date()
    async with app.state.session_factory() as session:
        where = (await session.execute(text("SELECT tableoid::regclass::text FROM api_calls"))).scalars().all()
        assert where == [f"api_calls_{today:%Y%m%d}"]
        old = today - timedelta(days=settings.call_log_retention_days + 5)
        bounds = f"FROM ('{old}') TO ('{old + timedelta(days=1)}')"
        await session.execute(text(f"CREATE TABLE api_calls_{old:%Y%m%d} PARTITION OF api_calls FOR VALUES {bounds}"))
        await session.commit()
    await maintain(app.state.session_factory, settings)
    async with app.state.session_factory() as session:
        names = (
            (
                await session.execute(
                    text("SELECT relname FROM pg_class WHERE relname LIKE 'api_calls_2%' ORDER BY relname")
                )
            )
            .scalars()
            .all()
        )
    assert f"api_calls_{old:%Y%m%d}" not in names
    ahead = today + timedelta(days=settings.call_log_partitions_ahead_days)
    assert f"api_calls_{ahead:%Y%m%d}" in names


async def test_calls_that_arrived_before_their_partition_are_moved_into_it(
    app: FastAPI, client: AsyncClient, make_key: MakeKey, settings: Settings
) -> None:
    admin = await make_key(Role.ADMIN)
    later = datetime.now(UTC).date() + timedelta(days=settings.call_log_partitions_ahead_days + 10)
    recorder: CallRecorder = app.state.call_log
    recorder.record(
        at=datetime(later.year, later.month, later.day, 12, tzinfo=UTC), tenant_id=admin.tenant_id,
        key_id=admin.key_id, method="GET", route="/v1/me", status=200, latency_ms=1.0, response_bytes=10,
        client_address=None, request_id="early", user_agent=None, cache=None,
    )  # fmt: skip
    await _flush(app)  # lands in the default partition: no partition covers that day yet
    async with app.state.session_factory() as session, session.begin():
        await ensure_partitions(session, later, 0)
    async with app.state.session_factory() as session:
        where = (await session.execute(text("SELECT tableoid::regclass::text FROM api_calls"))).scalars().all()
    assert where == [f"api_calls_{later:%Y%m%d}"]


async def test_a_call_refused_for_its_scopes_or_its_parameters_is_logged(
    app: FastAPI, client: AsyncClient, make_key: MakeKey
) -> None:
    reader = await make_key(Role.READER)
    admin = await make_key(Role.ADMIN)
    assert (await client.get("/v1/keys", headers=reader.headers)).status_code == 403
    assert (await client.get("/v1/me?nope=1", headers=reader.headers)).status_code == 422
    assert (await client.get("/v1/me", headers={"X-API-Key": "dfk_not-a-key"})).status_code == 401  # no tenant
    await _flush(app)
    logged = (await _calls(client, admin, key_id=str(reader.key_id)))["items"]
    assert [(c["route"], c["status"]) for c in logged] == [("/v1/me", 422), ("/v1/keys", 403)]
