"""Two real server processes sharing Postgres and Redis: a key revoked through one is rejected by the other
within a second (pub/sub invalidation), and the bootstrap CLI issues the first operator key."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_REDIS_URL
from tests.e2e.test_serve import serve

pytestmark = pytest.mark.e2e

DELTAFLOW = str(Path(sys.executable).parent / "deltaflow")


def _bootstrap(env: dict[str, str]) -> str:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DELTAFLOW_")} | env
    result = subprocess.run(
        [DELTAFLOW, "keys", "bootstrap", "--tenant", "e2e", "--force"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    secret = result.stdout.strip().splitlines()[-1]
    assert secret.startswith("dfk_"), result.stdout
    return secret


@asynccontextmanager
async def two_instances(
    postgres_url: str,
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient, dict[str, str]]]:
    """Two real server processes on one Postgres and one Redis, a client for each, and a bootstrapped operator's
    headers."""
    env = {"DELTAFLOW_DATABASE_URL": postgres_url, "DELTAFLOW_REDIS_URL": TEST_REDIS_URL}
    operator = _bootstrap(env)
    async with AsyncExitStack() as stack:
        _a, url_a = await stack.enter_async_context(serve(env=env))
        _b, url_b = await stack.enter_async_context(serve(env=env))
        a = await stack.enter_async_context(httpx.AsyncClient(base_url=url_a, timeout=5))
        b = await stack.enter_async_context(httpx.AsyncClient(base_url=url_b, timeout=5))
        yield a, b, {"Authorization": f"Bearer {operator}"}


async def test_a_key_revoked_on_one_instance_is_rejected_by_another_within_a_second(
    postgres_url: str, redis_client: object
) -> None:
    async with two_instances(postgres_url) as (a, b, admin_headers):
        created = await a.post("/v1/keys", json={"name": "victim"}, headers=admin_headers)
        assert created.status_code == 201
        victim = {"X-API-Key": created.json()["secret"]}
        for _ in range(3):  # cached in B's process and in Redis
            assert (await b.get("/v1/me", headers=victim)).status_code == 200

        revoked = await a.post(f"/v1/keys/{created.json()['id']}/revoke", headers=admin_headers)
        assert revoked.status_code == 200
        started = time.monotonic()
        while (await b.get("/v1/me", headers=victim)).status_code != 401:
            assert time.monotonic() - started < 1.0, "instance B still accepts the revoked key after 1 s"
            await asyncio.sleep(0.02)
        response = await b.get("/v1/me", headers=victim)
        assert response.json()["type"] == "/problems/api-key-revoked"
        assert (await b.get("/v1/me", headers=admin_headers)).status_code == 200


async def test_a_tenant_budget_is_shared_by_two_server_processes_and_changed_on_both_at_once(
    postgres_url: str, redis_client: object
) -> None:
    async with two_instances(postgres_url) as (a, b, admin_headers):
        # Six requests at once, then one per 1 000 s.
        budget = {"name": "budgeted", "rate_limit": {"per_second": 0.001, "burst": 6}}
        tenant = (await a.post("/v1/tenants", json=budget, headers=admin_headers)).json()["id"]
        created = await a.post(
            "/v1/keys", params={"tenant_id": tenant}, json={"name": "client", "role": "reader"}, headers=admin_headers
        )
        assert created.status_code == 201, created.text
        client = {"X-API-Key": created.json()["secret"]}

        # Alternating the two processes until both refuse: one bucket, six tokens in all.
        statuses = [(await (a if i % 2 else b).get("/v1/me", headers=client)).status_code for i in range(20)]
        assert statuses.count(200) == 6, statuses
        assert statuses[-4:] == [429] * 4

        # A larger budget set through A reaches B within a second (its cached verification is invalidated).
        larger = {"per_second": 1000, "burst": 1000}
        assert (await a.put(f"/v1/tenants/{tenant}/rate-limit", json=larger, headers=admin_headers)).status_code == 200
        started = time.monotonic()
        while (answer := await b.get("/v1/me", headers=client)).status_code != 200:
            assert time.monotonic() - started < 1.0, "B still applies the old budget"
            await asyncio.sleep(0.02)
        assert answer.json()["rate_limit"] == {"per_second": 1000.0, "burst": 1000, "source": "tenant"}
