"""A client that uses its own write at once, on a keep-alive connection to a real server process: a key created,
a tenant created then a key in it, a rotation's successor, and a revocation — 50 rounds on each backend, no miss.

In-process tests cannot show this race (httpx's ASGI transport waits for the whole app, so work done after the
response was sent still finishes first); a real server sends the status line as soon as the app does."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_REDIS_URL, truncate_all
from tests.e2e.test_revocation import DELTAFLOW, _bootstrap
from tests.e2e.test_serve import serve

pytestmark = pytest.mark.e2e

ROUNDS = 50
UNLIMITED = {"DELTAFLOW_RATE_LIMIT_PER_SECOND": "0"}  # the loops, not the default budget, are under test


async def _rounds(base_url: str, operator: str) -> list[str]:
    failures: list[str] = []
    admin = {"Authorization": f"Bearer {operator}"}
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:  # one keep-alive connection
        for round_ in range(ROUNDS):
            tenant = await client.post("/v1/tenants", json={"name": f"round-{round_}"}, headers=admin)
            assert tenant.status_code == 201, tenant.text
            key = await client.post(
                "/v1/keys", params={"tenant_id": tenant.json()["id"]}, json={"name": "k"}, headers=admin
            )
            if key.status_code != 201:
                failures.append(f"round {round_}: key in the new tenant → {key.status_code}")
                continue
            secret = {"X-API-Key": key.json()["secret"]}
            if (me := await client.get("/v1/me", headers=secret)).status_code != 200:
                failures.append(f"round {round_}: create-then-use → {me.status_code}")
            rotated = await client.post(f"/v1/keys/{key.json()['id']}/rotate", json={}, headers=admin)
            successor = {"X-API-Key": rotated.json()["secret"]}
            if (me := await client.get("/v1/me", headers=successor)).status_code != 200:
                failures.append(f"round {round_}: rotate-then-use → {me.status_code}")
            revoked = await client.post(f"/v1/keys/{rotated.json()['id']}/revoke", headers=admin)
            assert revoked.status_code == 200
            if (me := await client.get("/v1/me", headers=successor)).status_code != 401:
                failures.append(f"round {round_}: revoke-then-use → {me.status_code}")
    return failures


async def test_own_writes_are_visible_at_once_on_postgres(postgres_url: str, redis_client: object) -> None:
    env = {"DELTAFLOW_DATABASE_URL": postgres_url, "DELTAFLOW_REDIS_URL": TEST_REDIS_URL, **UNLIMITED}
    try:
        operator = _bootstrap(env)
        async with serve(env=env) as (_, base_url):
            assert await _rounds(base_url, operator) == []
    finally:
        await truncate_all(postgres_url)


async def test_own_writes_are_visible_at_once_on_the_embedded_default(tmp_path: Path) -> None:
    env = {
        "DELTAFLOW_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/e2e.db",
        "DELTAFLOW_REDIS_URL": "memory://",
        **UNLIMITED,
    }
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DELTAFLOW_")} | env
    await asyncio.to_thread(
        subprocess.run, [DELTAFLOW, "migrate"], env=environment, check=True, capture_output=True, timeout=60
    )
    operator = _bootstrap(env)
    async with serve(env=env) as (_, base_url):
        assert await _rounds(base_url, operator) == []
