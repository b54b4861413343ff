"""The fuzz stage's two phases for the defects a stateless fuzzer cannot see, against a real server on each backend:

- **stateful, on one keep-alive connection**: a seeded random walk of tenant and key administration in which every
  write is used at once (a created key calls `/v1/me`, a revoked one must be refused, a rotation's successor must
  work, a budget must show on the next call), checked against a model of what the API promised;
- **parallel duplicates of every mutating operation** in the OpenAPI document: eight identical copies at once,
  then invariants (one tenant per name, one successor per key, one audit event per revocation, every secret
  rotation counted). A mutating operation without a scenario here fails the test, so new routes join the stage.

`FUZZ_SEED` picks the walk (default fixed, so CI is reproducible); `FUZZ_STEPS` its length (default 300).
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from app.models import AlertEvent, Base, WebhookDelivery
from tests.conftest import TEST_REDIS_URL, truncate_all
from tests.e2e.test_fuzz import seed_market
from tests.e2e.test_revocation import DELTAFLOW, _bootstrap
from tests.e2e.test_serve import serve
from tests.trading.conftest import candle_rows

pytestmark = pytest.mark.e2e

SEED = int(os.environ.get("FUZZ_SEED", "20261202"))
STEPS = int(os.environ.get("FUZZ_STEPS", "300"))
COPIES = 8
ENV = {
    "DELTAFLOW_FEEDS": "sim:BTCUSDT",
    "DELTAFLOW_ACCESS_LOG": "false",
    "DELTAFLOW_LOG_LEVEL": "WARNING",
    "DELTAFLOW_BACKGROUND_JOBS": "false",
    # No default budget: only tenants the walk gives one are limited, at rates the walk never exhausts.
    "DELTAFLOW_RATE_LIMIT_PER_SECOND": "0",
    # Below the copies of one creation, so the duplicates show the limit holds under concurrency.
    "DELTAFLOW_ALERT_MAX_RULES_PER_TENANT": "5",
}


@asynccontextmanager
async def served(backend: str, tmp_path: Path, postgres_url: str) -> AsyncIterator[tuple[str, dict[str, str]]]:
    if backend == "postgres":
        env = {**ENV, "DELTAFLOW_DATABASE_URL": postgres_url, "DELTAFLOW_REDIS_URL": TEST_REDIS_URL}
    else:
        env = {**ENV, "DELTAFLOW_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/fuzz.db"}
        env["DELTAFLOW_REDIS_URL"] = TEST_REDIS_URL  # seeded market data lives there
        environment = {k: v for k, v in os.environ.items() if not k.startswith("DELTAFLOW_")} | env
        await asyncio.to_thread(
            subprocess.run, [DELTAFLOW, "migrate"], env=environment, check=True, capture_output=True, timeout=60
        )
    operator = _bootstrap(env)
    try:
        async with serve(env=env) as (_, base_url):
            yield base_url, {"Authorization": f"Bearer {operator}"}
    finally:
        if backend == "postgres":
            await truncate_all(postgres_url)


# --- phase 1: a stateful walk on one keep-alive connection ---------------------------------------------------


@dataclass
class KeyModel:
    id: str
    secret: str
    tenant: str
    usable: bool = True
    rotated: bool = False


@dataclass
class World:
    """What the API has promised so far."""

    tenants: dict[str, str] = field(default_factory=dict)  # name → id
    keys: list[KeyModel] = field(default_factory=list)
    webhook_versions: dict[str, int] = field(default_factory=dict)  # tenant id → secret version
    budgets: dict[str, float] = field(default_factory=dict)  # tenant id → per_second
    failures: list[str] = field(default_factory=list)

    def expect(self, step: int, what: str, response: httpx.Response, *statuses: int) -> bool:
        if response.status_code >= 500 or response.status_code not in statuses:
            self.failures.append(
                f"step {step} {what}: {response.status_code} (expected {statuses}) {response.text[:200]}"
            )
            return False
        return True


class Walk:
    def __init__(self, client: httpx.AsyncClient, operator: dict[str, str], rng: random.Random) -> None:
        self.client = client
        self.operator = operator
        self.rng = rng
        self.world = World()

    async def run(self, steps: int) -> list[str]:
        actions: list[Callable[[int], Awaitable[None]]] = [
            self.create_tenant, self.create_key, self.create_key, self.use_key, self.rotate_key,
            self.revoke_key, self.put_webhook, self.set_budget,
        ]  # fmt: skip
        for step in range(steps):
            await self.rng.choice(actions)(step)
        return self.world.failures

    def _key(self, *, usable: bool | None = None) -> KeyModel | None:
        keys = [k for k in self.world.keys if usable is None or k.usable == usable]
        return self.rng.choice(keys) if keys else None

    async def _me(self, step: int, key: KeyModel, what: str) -> httpx.Response:
        response = await self.client.get("/v1/me", headers={"X-API-Key": key.secret})
        self.world.expect(step, what, response, 200 if key.usable else 401)
        return response

    async def create_tenant(self, step: int) -> None:
        names = list(self.world.tenants)
        name = self.rng.choice(names) if names and self.rng.random() < 0.3 else f"t{step}-{self.rng.randrange(10**6)}"
        response = await self.client.post("/v1/tenants", json={"name": name}, headers=self.operator)
        if name in self.world.tenants:
            self.world.expect(step, "duplicate tenant", response, 409)
        elif self.world.expect(step, "create tenant", response, 201):
            self.world.tenants[name] = response.json()["id"]

    async def create_key(self, step: int) -> None:
        if not self.world.tenants:
            return await self.create_tenant(step)
        tenant = self.world.tenants[self.rng.choice(list(self.world.tenants))]
        role = self.rng.choice(["reader", "admin"])
        response = await self.client.post(
            "/v1/keys", params={"tenant_id": tenant}, json={"name": f"k{step}", "role": role}, headers=self.operator
        )
        if self.world.expect(step, "create key", response, 201):
            key = KeyModel(response.json()["id"], response.json()["secret"], tenant)
            self.world.keys.append(key)
            await self._me(step, key, "create-then-use")
        return None

    async def use_key(self, step: int) -> None:
        key = self._key()
        if key is not None:
            await self._me(step, key, "use")

    async def rotate_key(self, step: int) -> None:
        key = self._key()
        if key is None:
            return
        grace = self.rng.choice([0, 3600])
        response = await self.client.post(
            f"/v1/keys/{key.id}/rotate", json={"grace_seconds": grace}, headers=self.operator
        )
        if not key.usable or key.rotated:
            self.world.expect(step, "rotate a dead or rotated key", response, 409)
            return
        if self.world.expect(step, "rotate", response, 201):
            key.rotated = True
            key.usable = grace > 0
            successor = KeyModel(response.json()["id"], response.json()["secret"], key.tenant)
            self.world.keys.append(successor)
            await self._me(step, successor, "rotate-then-use successor")
            await self._me(step, key, "rotate-then-use predecessor")

    async def revoke_key(self, step: int) -> None:
        key = self._key()
        if key is None:
            return
        response = await self.client.post(f"/v1/keys/{key.id}/revoke", headers=self.operator)
        if self.world.expect(step, "revoke", response, 200):
            key.usable = False
            await self._me(step, key, "revoke-then-use")

    async def put_webhook(self, step: int) -> None:
        key = self._key(usable=True)
        if key is None:
            return
        me = await self.client.get("/v1/me", headers={"X-API-Key": key.secret})
        if me.status_code != 200 or "webhooks:write" not in me.json()["scopes"]:
            return
        rotate = key.tenant in self.world.webhook_versions and self.rng.random() < 0.5
        body = {"url": f"https://hooks.example.com/{step}", "rotate_secret": rotate}
        response = await self.client.put("/v1/webhook", json=body, headers={"X-API-Key": key.secret})
        if self.world.expect(step, "put webhook", response, 200):
            previous = self.world.webhook_versions.get(key.tenant)
            expected = 1 if previous is None else previous + int(rotate)
            version = response.json()["secret_version"]
            if version != expected:
                self.world.failures.append(f"step {step}: webhook secret version {version}, expected {expected}")
            self.world.webhook_versions[key.tenant] = version

    async def set_budget(self, step: int) -> None:
        key = self._key(usable=True)
        if key is None:
            return
        per_second = float(self.rng.choice([500, 1000, 2000]))
        response = await self.client.put(
            f"/v1/tenants/{key.tenant}/rate-limit",
            json={"per_second": per_second, "burst": 5000},
            headers=self.operator,
        )
        if self.world.expect(step, "set budget", response, 200):
            me = await self._me(step, key, "budget-then-use")
            if me.status_code == 200 and me.json()["rate_limit"]["per_second"] != per_second:
                self.world.failures.append(f"step {step}: the new budget is not applied on the next call")


# --- phase 2: parallel duplicates of every mutating operation ------------------------------------------------


@dataclass
class Fixture:
    client: httpx.AsyncClient
    operator: dict[str, str]
    database_url: str = ""  # the served database, for rows no route creates (alert events, failed deliveries)

    async def insert(self, *rows: Base) -> None:
        engine = create_async_engine(self.database_url, poolclass=NullPool)
        try:
            async with async_sessionmaker(engine, expire_on_commit=False)() as session, session.begin():
                session.add_all(rows)
        finally:
            await engine.dispose()

    async def tenant(self, name: str) -> str:
        response = await self.client.post("/v1/tenants", json={"name": name}, headers=self.operator)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def key(self, tenant: str, role: str = "admin") -> tuple[str, dict[str, str]]:
        response = await self.client.post(
            "/v1/keys", params={"tenant_id": tenant}, json={"name": "dup", "role": role}, headers=self.operator
        )
        assert response.status_code == 201, response.text
        return response.json()["id"], {"X-API-Key": response.json()["secret"]}

    async def audit(self, headers: dict[str, str], action: str) -> int:
        response = await self.client.get("/v1/audit", params={"action": action, "limit": 200}, headers=headers)
        return len(response.json()["items"])


Copies = list[httpx.Response]


async def _copies(base_url: str, method: str, path: str, **request: Any) -> Copies:
    async def one() -> httpx.Response:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as own:  # a connection each, truly parallel
            return await own.request(method, path, **request)

    return list(await asyncio.gather(*(one() for _ in range(COPIES))))


def _statuses(copies: Copies) -> list[int]:
    return sorted(response.status_code for response in copies)


async def dup_create_tenant(base_url: str, f: Fixture) -> None:
    copies = await _copies(base_url, "POST", "/v1/tenants", json={"name": "dup-tenant"}, headers=f.operator)
    assert _statuses(copies) == [201] + [409] * (COPIES - 1), [c.text for c in copies]
    listed = (await f.client.get("/v1/tenants", params={"limit": 1000}, headers=f.operator)).json()
    assert [t["name"] for t in listed].count("dup-tenant") == 1


async def dup_create_key(base_url: str, f: Fixture) -> None:
    tenant = await f.tenant("dup-keys")
    _, admin = await f.key(tenant)
    copies = await _copies(base_url, "POST", "/v1/keys", json={"name": "same"}, headers=admin)
    assert _statuses(copies) == [201] * COPIES  # not idempotent by design: each POST issues its own key
    for response in copies:
        me = await f.client.get("/v1/me", headers={"X-API-Key": response.json()["secret"]})
        assert me.status_code == 200


async def dup_rotate(base_url: str, f: Fixture) -> None:
    tenant = await f.tenant("dup-rotate")
    key_id, admin = await f.key(tenant)
    copies = await _copies(base_url, "POST", f"/v1/keys/{key_id}/rotate", json={}, headers=f.operator)
    assert _statuses(copies) == [201] + [409] * (COPIES - 1), [c.text for c in copies]
    keys = (await f.client.get("/v1/keys", params={"tenant_id": tenant}, headers=f.operator)).json()["items"]
    assert [k["rotated_from_id"] for k in keys].count(key_id) == 1
    assert await f.audit(admin, "key.rotated") == 1


async def dup_revoke(base_url: str, f: Fixture) -> None:
    tenant = await f.tenant("dup-revoke")
    _, admin = await f.key(tenant)
    victim, victim_headers = await f.key(tenant, "reader")
    copies = await _copies(base_url, "POST", f"/v1/keys/{victim}/revoke", headers=admin)
    assert _statuses(copies) == [200] * COPIES
    assert len({c.json()["revoked_at"] for c in copies}) == 1
    assert await f.audit(admin, "key.revoked") == 1
    assert (await f.client.get("/v1/me", headers=victim_headers)).status_code == 401


async def dup_put_budget(base_url: str, f: Fixture) -> None:
    tenant = await f.tenant("dup-budget")
    body = {"per_second": 123.0, "burst": 456}
    copies = await _copies(base_url, "PUT", f"/v1/tenants/{tenant}/rate-limit", json=body, headers=f.operator)
    assert _statuses(copies) == [200] * COPIES
    assert {c.json()["rate_limit"]["per_second"] for c in copies} == {123.0}


async def dup_delete_budget(base_url: str, f: Fixture) -> None:
    tenant = await f.tenant("dup-unbudget")
    await f.client.put(f"/v1/tenants/{tenant}/rate-limit", json={"per_second": 5, "burst": 5}, headers=f.operator)
    copies = await _copies(base_url, "DELETE", f"/v1/tenants/{tenant}/rate-limit", headers=f.operator)
    assert _statuses(copies) == [200] * COPIES
    listed = (await f.client.get("/v1/tenants", params={"limit": 1000}, headers=f.operator)).json()
    assert next(t for t in listed if t["id"] == tenant)["rate_limit"] is None


async def dup_put_quota(base_url: str, f: Fixture) -> None:
    tenant = await f.tenant("dup-quota")
    body = {"monthly_requests": 5000}
    copies = await _copies(base_url, "PUT", f"/v1/tenants/{tenant}/quota", json=body, headers=f.operator)
    assert _statuses(copies) == [200] * COPIES
    assert {c.json()["monthly_quota"] for c in copies} == {5000}


async def dup_delete_quota(base_url: str, f: Fixture) -> None:
    tenant = await f.tenant("dup-unquota")
    await f.client.put(f"/v1/tenants/{tenant}/quota", json={"monthly_requests": 5}, headers=f.operator)
    copies = await _copies(base_url, "DELETE", f"/v1/tenants/{tenant}/quota", headers=f.operator)
    assert _statuses(copies) == [200] * COPIES
    listed = (await f.client.get("/v1/tenants", params={"limit": 1000}, headers=f.operator)).json()
    assert next(t for t in listed if t["id"] == tenant)["monthly_quota"] is None


async def dup_put_webhook(base_url: str, f: Fixture) -> None:
    _, admin = await f.key(await f.tenant("dup-webhook"))
    url = "https://hooks.example.com/dup"
    first = await _copies(base_url, "PUT", "/v1/webhook", json={"url": url}, headers=admin)
    assert _statuses(first) == [200] * COPIES, [c.text for c in first]
    rotations = await _copies(base_url, "PUT", "/v1/webhook", json={"url": url, "rotate_secret": True}, headers=admin)
    assert sorted(c.json()["secret_version"] for c in rotations) == list(range(2, COPIES + 2))


async def dup_analyze(base_url: str, f: Fixture) -> None:
    copies = await _copies(base_url, "POST", "/v1/analyze", json={"candles": candle_rows(60)}, headers=f.operator)
    assert _statuses(copies) == [200] * COPIES
    assert len({c.json()["signal"]["bias"] for c in copies}) == 1


async def dup_signal_batch(base_url: str, f: Fixture) -> None:
    body = {"items": [{"venue": "sim", "symbol": "BTCUSDT", "timeframe": "1m"}]}
    copies = await _copies(base_url, "POST", "/v1/signals/batch", json=body, headers=f.operator)
    assert _statuses(copies) == [200] * COPIES
    assert {c.json()["results"][0]["status"] for c in copies} == {200}


ALERT_RULE = {"name": "dup", "venue": "sim", "symbol": "BTCUSDT", "timeframe": "1m", "condition": {"event": "bos"}}


async def dup_create_alert(base_url: str, f: Fixture) -> None:
    _, admin = await f.key(await f.tenant("dup-alerts"))
    copies = await _copies(base_url, "POST", "/v1/alerts", json=ALERT_RULE, headers=admin)
    # Not idempotent by design (each POST is a rule of its own), but never past the tenant's limit (5 here).
    assert _statuses(copies) == [201] * 5 + [409] * (COPIES - 5), [c.text for c in copies]
    listed = (await f.client.get("/v1/alerts", headers=admin)).json()["items"]
    assert len(listed) == 5
    assert await f.audit(admin, "alert.created") == 5


async def dup_patch_alert(base_url: str, f: Fixture) -> None:
    _, admin = await f.key(await f.tenant("dup-alert-patch"))
    rule = (await f.client.post("/v1/alerts", json=ALERT_RULE, headers=admin)).json()
    copies = await _copies(base_url, "PATCH", f"/v1/alerts/{rule['id']}", json={"enabled": False}, headers=admin)
    assert _statuses(copies) == [200] * COPIES, [c.text for c in copies]
    assert (await f.client.get(f"/v1/alerts/{rule['id']}", headers=admin)).json()["enabled"] is False


async def dup_delete_alert(base_url: str, f: Fixture) -> None:
    _, admin = await f.key(await f.tenant("dup-alert-delete"))
    rule = (await f.client.post("/v1/alerts", json=ALERT_RULE, headers=admin)).json()
    copies = await _copies(base_url, "DELETE", f"/v1/alerts/{rule['id']}", headers=admin)
    assert _statuses(copies) == [204] + [404] * (COPIES - 1), [c.text for c in copies]
    assert await f.audit(admin, "alert.deleted") == 1


def _alert_event(tenant: str) -> AlertEvent:
    return AlertEvent(
        id=uuid.uuid4(), tenant_id=uuid.UUID(tenant), rule_name="dup", venue="sim", symbol="BTCUSDT", timeframe="1m",
        bar_ms=1_700_000_000_000, sentence="dup", snapshot={}, created_at=datetime.now(UTC),
    )  # fmt: skip


async def dup_redeliver(base_url: str, f: Fixture) -> None:
    tenant = await f.tenant("dup-redeliver")
    _, admin = await f.key(tenant)
    event = _alert_event(tenant)
    await f.insert(event)
    copies = await _copies(base_url, "POST", f"/v1/alerts/events/{event.id}/redeliver", headers=admin)
    assert _statuses(copies) == [202] * COPIES, [c.text for c in copies]
    # One delivery however often it is asked for while none is tried yet (a receiver would see duplicates).
    assert len({c.json()["delivery_id"] for c in copies}) == 1
    assert sum(c.json()["queued"] for c in copies) == 1
    assert await f.audit(admin, "alert.redelivered") == 1


async def dup_recover(base_url: str, f: Fixture) -> None:
    tenant = await f.tenant("dup-recover")
    _, admin = await f.key(tenant)
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    failed = {"event": "api_key.expiring", "payload": {}, "status": "failed", "attempts": 8}
    await f.insert(*(WebhookDelivery(tenant_id=uuid.UUID(tenant), created_at=hour_ago, **failed) for _ in range(3)))
    since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    copies = await _copies(base_url, "POST", "/v1/webhook/recover", params={"since": since}, headers=admin)
    assert _statuses(copies) == [202] * COPIES, [c.text for c in copies]
    assert sum(c.json()["requeued"] for c in copies) == 3, "each failed delivery requeued once"
    assert await f.audit(admin, "webhook.recovered") == COPIES


async def dup_test_alert(base_url: str, f: Fixture) -> None:
    _, admin = await f.key(await f.tenant("dup-alert-test"))
    body = {**ALERT_RULE, "condition": {"field": "volume", "op": "gte", "value": 0}, "frequency": "once_per_bar"}
    copies = await _copies(base_url, "POST", "/v1/alerts/test", json={**body, "bars": 50}, headers=admin)
    # Read-only: every copy answers the same replay, and nothing is created.
    assert _statuses(copies) == [200] * COPIES, [c.text for c in copies]
    assert len({c.content for c in copies}) == 1
    assert len(copies[0].json()["firings"]) == 50
    assert (await f.client.get("/v1/alerts", headers=admin)).json()["items"] == []
    assert await f.audit(admin, "alert.created") == 0


DUPLICATES: dict[tuple[str, str], Callable[[str, Fixture], Awaitable[None]]] = {
    ("POST", "/v1/tenants"): dup_create_tenant,
    ("POST", "/v1/keys"): dup_create_key,
    ("POST", "/v1/keys/{key_id}/rotate"): dup_rotate,
    ("POST", "/v1/keys/{key_id}/revoke"): dup_revoke,
    ("PUT", "/v1/tenants/{tenant_id}/rate-limit"): dup_put_budget,
    ("DELETE", "/v1/tenants/{tenant_id}/rate-limit"): dup_delete_budget,
    ("PUT", "/v1/tenants/{tenant_id}/quota"): dup_put_quota,
    ("DELETE", "/v1/tenants/{tenant_id}/quota"): dup_delete_quota,
    ("PUT", "/v1/webhook"): dup_put_webhook,
    ("POST", "/v1/analyze"): dup_analyze,
    ("POST", "/v1/signals/batch"): dup_signal_batch,
    ("POST", "/v1/alerts"): dup_create_alert,
    ("PATCH", "/v1/alerts/{rule_id}"): dup_patch_alert,
    ("DELETE", "/v1/alerts/{rule_id}"): dup_delete_alert,
    ("POST", "/v1/alerts/events/{event_id}/redeliver"): dup_redeliver,
    ("POST", "/v1/webhook/recover"): dup_recover,
    ("POST", "/v1/alerts/test"): dup_test_alert,
}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
async def test_stateful_walk_and_parallel_duplicates_keep_every_promise(
    backend: str, tmp_path: Path, postgres_url: str, redis_client: Redis
) -> None:
    await seed_market(redis_client)
    async with (
        served(backend, tmp_path, postgres_url) as (base_url, operator),
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
    ):
        failures = await Walk(client, operator, random.Random(SEED)).run(STEPS)
        assert failures == [], "\n".join(failures[:20])

        document = (await client.get("/openapi.json")).json()
        mutating = {
            (method.upper(), path)
            for path, operations in document["paths"].items()
            for method in operations
            if method in {"post", "put", "patch", "delete"}
        }
        assert mutating == set(DUPLICATES), "give every mutating operation a duplicate scenario"
        database_url = postgres_url if backend == "postgres" else f"sqlite+aiosqlite:///{tmp_path}/fuzz.db"
        fixture = Fixture(client, operator, database_url)
        for scenario in DUPLICATES.values():
            await scenario(base_url, fixture)
