"""Database discipline per request, on Postgres: how many SQL statements each `/v1` operation runs (a budget per
operation, and list pages that cost the same at any size: no N+1), and the plans of the call log's tenant-scoped
queries (an index, never a sequential scan of `api_calls`).

Statements are captured at the driver (`before_cursor_execute`) while a real request runs through the app, so what
is counted and explained is exactly what the routes send. Each request is made twice and the second one counted:
the first may verify the key in the database, which the key cache then spares every later request.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.scopes import Role
from app.config import Settings
from app.usage.calls.repository import ensure_partitions
from tests.alerts.conftest import rule_body
from tests.alerts.history_fixtures import insert_events
from tests.alerts.outbox import add_event
from tests.keys.conftest import MakeKey
from tests.trading.test_markets import seed_feed

# The most statements one request of each operation may run (after its key is cached), as measured: a change that
# adds a statement must raise its budget here, visibly. Operations that serve market data from Redis run none, and
# so does a usage report served from its cache. A new operation fails `test_every_operation_has_a_budget` until it
# has one.
BUDGETS: dict[str, int] = {
    "GET /v1/me": 0,
    "GET /v1/markets": 0,
    "GET /v1/signals/{venue}/{symbol}": 0,
    "POST /v1/signals/batch": 0,
    "GET /v1/signals/{venue}/{symbol}/stream": 0,
    "GET /v1/analysis/{venue}/{symbol}/cvd": 0,
    "GET /v1/analysis/{venue}/{symbol}/orderflow": 0,
    "GET /v1/analysis/{venue}/{symbol}/smc": 0,
    "GET /v1/analysis/{venue}/{symbol}/fibonacci": 0,
    "GET /v1/analysis/{venue}/{symbol}/indicators": 0,
    "GET /v1/candles/{venue}/{symbol}": 0,
    "GET /v1/orderbook/{venue}/{symbol}": 0,
    "POST /v1/analyze": 0,
    "POST /v1/keys": 2,
    "GET /v1/keys": 1,
    "GET /v1/keys/{key_id}": 1,
    "POST /v1/keys/{key_id}/rotate": 4,
    "POST /v1/keys/{key_id}/revoke": 3,
    "POST /v1/tenants": 1,
    "GET /v1/tenants": 1,
    "PUT /v1/tenants/{tenant_id}/rate-limit": 3,
    "DELETE /v1/tenants/{tenant_id}/rate-limit": 3,
    "PUT /v1/tenants/{tenant_id}/quota": 3,
    "DELETE /v1/tenants/{tenant_id}/quota": 3,
    "PUT /v1/webhook": 2,
    "GET /v1/audit": 1,
    "GET /v1/usage": 0,
    "GET /v1/usage/calls": 1,
    "GET /v1/usage/calls/export": 2,
    "GET /v1/usage/calls/{request_id}": 1,
    "GET /v1/signals/{venue}/{symbol}/track-record": 0,
    "POST /v1/alerts": 4,
    "GET /v1/alerts": 1,
    "GET /v1/alerts/{rule_id}": 1,
    "PATCH /v1/alerts/{rule_id}": 1,
    "DELETE /v1/alerts/{rule_id}": 3,
    "POST /v1/alerts/events/{event_id}/redeliver": 5,
    "POST /v1/webhook/recover": 2,
    "GET /v1/alerts/events": 1,
    "GET /v1/alerts/events/{event_id}": 1,
    "GET /v1/alerts/stream": 2,
    "POST /v1/alerts/test": 0,
}
# List operations and the parameter that sizes their page: a page of 1 and a page of 50 cost the same statements.
PAGED = {
    "GET /v1/keys": "limit",
    "GET /v1/tenants": "limit",
    "GET /v1/audit": "limit",
    "GET /v1/usage/calls": "limit",
    "GET /v1/alerts": "limit",
    "GET /v1/alerts/events": "limit",
}
ITEMS = 60  # more than the larger page, so both pages are full


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Counts, calls and keys' last use are written only when a test flushes them, and a key's verification stays
    # cached for the whole test (by default it is looked up again every 5 s, on whichever request comes next): no
    # statement but the request's own lands inside a counted request, and no budget can run out mid-test.
    return settings.model_copy(
        update={
            "usage_flush_seconds": 3600.0,
            "call_log_flush_seconds": 3600.0,
            "key_last_used_flush_seconds": 3600.0,
            "auth_cache_ttl_seconds": 60.0,
        }
    )


class Statements:
    def __init__(self) -> None:
        self.recorded: list[tuple[str, Any]] = []
        self.active = False

    def on_execute(self, _conn: object, _cursor: object, statement: str, parameters: Any, *_: object) -> None:
        if self.active:
            self.recorded.append((statement, parameters))

    @contextmanager
    def capture(self) -> Iterator[list[tuple[str, Any]]]:
        self.recorded, self.active = [], True
        try:
            yield self.recorded
        finally:
            self.active = False


@pytest.fixture
def statements(app: FastAPI, client: AsyncClient) -> Iterator[Statements]:
    engine: AsyncEngine = app.state.engine
    recorder = Statements()
    event.listen(engine.sync_engine, "before_cursor_execute", recorder.on_execute)
    yield recorder
    event.remove(engine.sync_engine, "before_cursor_execute", recorder.on_execute)


def _operations(app: FastAPI) -> set[str]:
    return {
        f"{method.upper()} {path}"
        for path, operations in app.openapi()["paths"].items()
        if path.startswith("/v1")
        for method in operations
    }


def test_every_operation_has_a_budget(app: FastAPI) -> None:
    assert _operations(app) == set(BUDGETS)
    assert set(PAGED) <= set(BUDGETS)


async def _world(app: FastAPI, client: AsyncClient, make_key: MakeKey) -> dict[str, Any]:
    """An operator, ITEMS keys, tenants and audit events, and ITEMS logged calls."""
    operator = await make_key(Role.OPERATOR)
    for index in range(ITEMS):
        created = await client.post("/v1/keys", json={"name": f"k{index}"}, headers=operator.headers)
        assert created.status_code == 201, created.text
        tenant = await client.post("/v1/tenants", json={"name": f"tenant-{index}"}, headers=operator.headers)
        assert tenant.status_code == 201, tenant.text
    for index in range(ITEMS):
        assert (await client.get("/v1/me", headers={**operator.headers, "x-request-id": "seen"})).status_code == 200
        rule = await client.post("/v1/alerts", json=rule_body(name=f"rule {index}"), headers=operator.headers)
        assert rule.status_code == 201, rule.text
    await app.state.call_log.flush(app.state.session_factory)
    redeliverable, _ = await add_event(app, operator.tenant_id)
    events = await insert_events(app, operator.tenant_id, ITEMS)
    await seed_feed(app.state.redis)  # closed 1m bars of binance:BTCUSDT for POST /v1/alerts/test
    return {
        "first_event_id": str(events[0].id),
        "redeliverable_event_id": str(redeliverable),
        "operator": operator,
        "tenant_id": tenant.json()["id"],
        "key_id": created.json()["id"],
        "rule_id": rule.json()["id"],
    }


def _request(operation: str, world: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """A request the operation answers normally (any status; what counts is what it runs)."""
    method, template = operation.split(" ", 1)
    path = template.format(
        venue="sim",
        symbol="BTCUSDT",
        key_id=world["key_id"],
        tenant_id=world["tenant_id"],
        request_id="seen",
        rule_id=world["rule_id"],
        event_id=world["redeliverable_event_id"],
    )
    bodies: dict[str, dict[str, Any]] = {
        "POST /v1/keys": {"name": "budget"},
        "POST /v1/tenants": {"name": f"budget-{uuid.uuid4().hex[:8]}"},
        "PUT /v1/tenants/{tenant_id}/rate-limit": {"per_second": 5, "burst": 10},
        "PUT /v1/tenants/{tenant_id}/quota": {"monthly_requests": 1000},
        "PUT /v1/webhook": {"url": "https://hooks.example.com/deltaflow"},
        "POST /v1/signals/batch": {"markets": [{"venue": "sim", "symbol": "BTCUSDT"}]},
        "POST /v1/analyze": {"candles": []},
        "POST /v1/alerts": rule_body(),
        "PATCH /v1/alerts/{rule_id}": {"enabled": False},
        "POST /v1/alerts/test": rule_body(timeframe="1m"),
    }
    body = bodies.get(operation, {})
    params: dict[str, Any] = {"max_events": 1} if operation.endswith("/stream") else {}
    if operation == "GET /v1/alerts/stream":  # resumed after an event with more after it: it sends one and ends
        params["last_event_id"] = world["first_event_id"]
    if operation == "POST /v1/webhook/recover":
        params["since"] = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    with_body = method in {"POST", "PUT", "PATCH"}
    return method, path, {"json": body, "params": params} if with_body else {"params": params}


async def _count(client: AsyncClient, statements: Statements, operation: str, world: dict[str, Any]) -> int:
    method, path, options = _request(operation, world)
    headers = world["operator"].headers
    await client.request(method, path, headers=headers, **options)
    if operation == "DELETE /v1/alerts/{rule_id}":  # the first call deleted it: count deleting another
        fresh = await client.post("/v1/alerts", json=rule_body(name="fresh"), headers=headers)
        path = path.replace(world["rule_id"], fresh.json()["id"])
    if operation in {"POST /v1/keys/{key_id}/rotate", "POST /v1/keys/{key_id}/revoke"}:
        # The first call spent the key (rotated or revoked): count the same operation on a fresh one.
        fresh = await client.post("/v1/keys", json={"name": "fresh"}, headers=headers)
        path = path.replace(world["key_id"], fresh.json()["id"])
    with statements.capture() as recorded:
        response = await client.request(method, path, headers=headers, **options)
    assert response.status_code < 500, (operation, response.text)
    return len(recorded)


async def test_each_operation_stays_within_its_statement_budget(
    app: FastAPI, client: AsyncClient, make_key: MakeKey, statements: Statements
) -> None:
    world = await _world(app, client, make_key)
    over = {}
    for operation, budget in sorted(BUDGETS.items()):
        count = await _count(client, statements, operation, world)
        if count > budget:
            over[operation] = (count, budget)
    assert not over, f"statements per request over budget (ran, budget): {over}"


async def test_a_page_costs_the_same_statements_at_any_size(
    app: FastAPI, client: AsyncClient, make_key: MakeKey, statements: Statements
) -> None:
    world = await _world(app, client, make_key)
    headers = world["operator"].headers
    for operation, size in PAGED.items():
        path = operation.split(" ", 1)[1]
        counts, lengths = [], []
        for limit in (1, 50):
            await client.get(path, params={size: limit}, headers=headers)
            with statements.capture() as recorded:
                response = await client.get(path, params={size: limit}, headers=headers)
            assert response.status_code == 200, response.text
            counts.append(len(recorded))
            body = response.json()
            lengths.append(len(body["items"] if isinstance(body, dict) else body))
        assert lengths == [1, 50], (operation, lengths)
        assert counts[0] == counts[1], f"{operation}: {counts[0]} statements for 1 item, {counts[1]} for 50"


# --- the call log's query plans -----------------------------------------------------------------------------

TENANTS = 50
CALLS_PER_TENANT_DAY = 200
DAYS = 4


async def _seed_calls(app: FastAPI, tenant_id: uuid.UUID, key_id: uuid.UUID) -> date:
    """TENANTS x DAYS x CALLS_PER_TENANT_DAY calls in daily partitions (the one test tenant among them), then
    ANALYZE, as the planner would see a busy production table."""
    first = datetime.now(UTC).date() - timedelta(days=DAYS - 1)
    async with app.state.session_factory() as session, session.begin():
        await ensure_partitions(session, first, DAYS)
        await session.execute(
            text(
                "INSERT INTO api_calls (at, id, tenant_id, api_key_id, method, route, status, latency_ms,"
                " response_bytes, client_address, request_id, user_agent, cache)"
                " SELECT CAST(:first AS timestamptz) + (n * interval '1 second') * (86400.0 * :days / :total),"
                " gen_random_uuid(),"
                " CASE WHEN n % :tenants = 0 THEN CAST(:tenant AS uuid) ELSE"
                "  CAST(md5('tenant' || (n % :tenants)) AS uuid) END,"
                " CASE WHEN n % :tenants = 0 THEN CAST(:key AS uuid) ELSE CAST(md5('key' || (n % 7)) AS uuid) END,"
                " 'GET', CASE WHEN n % 3 = 0 THEN '/v1/me' ELSE '/v1/signals/{venue}/{symbol}' END,"
                " CASE WHEN n % 97 = 0 THEN 500 ELSE 200 END, (n % 1000) / 10.0, 512, '127.0.0.1',"
                " 'r' || n, 'bench', NULL FROM generate_series(0, :total - 1) AS n"
            ),
            {
                "first": first,
                "days": DAYS,
                "total": TENANTS * DAYS * CALLS_PER_TENANT_DAY,
                "tenants": TENANTS,
                "tenant": str(tenant_id),
                "key": str(key_id),
            },
        )
    async with app.state.engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text("ANALYZE api_calls"))
    return first


def _scans(plan: dict[str, Any]) -> Iterator[tuple[str, str]]:
    yield plan["Node Type"], plan.get("Relation Name", "")
    for child in plan.get("Plans", []):
        yield from _scans(child)


async def _empty(connection: asyncpg.Connection, relation: str) -> bool:
    assert relation.replace("_", "").isalnum()  # a partition name from the plan, safe to quote
    return not await connection.fetchval(f'SELECT EXISTS (SELECT 1 FROM "{relation}")')


async def test_tenant_scoped_call_log_queries_use_an_index(
    app: FastAPI, client: AsyncClient, make_key: MakeKey, statements: Statements, settings: Settings
) -> None:
    operator = await make_key(Role.OPERATOR)
    first = await _seed_calls(app, operator.tenant_id, operator.key_id)
    day = (first + timedelta(days=1)).isoformat()
    searches: list[dict[str, Any]] = [
        {},
        {"from": f"{day}T00:00:00Z", "to": f"{day}T06:00:00Z"},
        {"key_id": str(operator.key_id)},
        {"route": "/v1/me"},
        {"status": 500},
        {"min_latency_ms": 90},
        {"key_id": str(operator.key_id), "status": 500, "from": f"{day}T00:00:00Z"},
    ]
    recorded_all: list[tuple[str, Any]] = []
    for params in searches:
        with statements.capture() as recorded:
            response = await client.get("/v1/usage/calls", params=params, headers=operator.headers)
        assert response.status_code == 200, response.text
        assert response.json()["items"], params  # the search finds the tenant's calls
        recorded_all += recorded
    with statements.capture() as recorded:
        assert (await client.get("/v1/usage/calls/r50", headers=operator.headers)).status_code == 200
    recorded_all += recorded
    explained = 0
    dsn = settings.database_url.replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(dsn)
    try:
        for statement, parameters in recorded_all:
            if "api_calls" not in statement:
                continue
            plan = orjson.loads(await connection.fetchval(f"EXPLAIN (FORMAT JSON) {statement}", *parameters))
            scans = list(_scans(plan[0]["Plan"]))
            sequential = [relation for node, relation in scans if node == "Seq Scan" and "api_calls" in relation]
            # Reading an EMPTY partition whole costs nothing, and the planner rightly does: the partitions made
            # ahead for the coming days, and the default one (calls from before their day's partition existed).
            sequential = [relation for relation in sequential if not await _empty(connection, relation)]
            assert not sequential, f"sequential scan of {sequential} for {statement} {parameters}: {scans}"
            explained += 1
    finally:
        await connection.close()
    assert explained == len(searches) + 1
