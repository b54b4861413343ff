"""Monthly quotas: exact across instances, refused with 429 quota-exceeded and the reset time, remaining in headers,
notices at 80 % and 100 % in the audit trail and by webhook, set by operators."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from fastapi import FastAPI
from httpx import AsyncClient
from redis.asyncio import Redis
from sqlalchemy import select

from app.auth.quota import QUOTA_PREFIX, month_window
from app.auth.scopes import Role
from app.config import Settings
from app.main import create_app
from app.models import AuditEvent, WebhookDelivery
from tests.helpers import running
from tests.keys.conftest import IssuedKey, MakeKey, key_maker


async def _set_quota(client: AsyncClient, operator: IssuedKey, tenant: object, quota: int | None) -> None:
    if quota is None:
        response = await client.delete(f"/v1/tenants/{tenant}/quota", headers=operator.headers)
    else:
        body = {"monthly_requests": quota}
        response = await client.put(f"/v1/tenants/{tenant}/quota", json=body, headers=operator.headers)
    assert response.status_code == 200, response.text
    assert response.json()["monthly_quota"] == quota


async def test_a_tenant_gets_its_quota_then_a_429_with_the_reset_time(client: AsyncClient, make_key: MakeKey) -> None:
    operator = await make_key(Role.OPERATOR, tenant="ops")
    reader = await make_key(Role.READER)
    await _set_quota(client, operator, reader.tenant_id, 5)
    remaining = []
    for _ in range(5):
        response = await client.get("/v1/me", headers=reader.headers)
        assert response.status_code == 200
        remaining.append(int(response.headers["x-quota-remaining"]))
        assert response.headers["x-quota-limit"] == "5"
    assert remaining == [4, 3, 2, 1, 0]
    refused = await client.get("/v1/me", headers=reader.headers)
    assert refused.status_code == 429
    problem = refused.json()
    assert problem["type"] == "/problems/quota-exceeded"
    _, reset = month_window(datetime.now(UTC))
    assert problem["reset"] == reset.isoformat().replace("+00:00", "Z")
    assert int(refused.headers["retry-after"]) > 0
    assert refused.headers["x-quota-remaining"] == "0"
    # Other tenants are untouched; removing the quota lets the tenant back in at once.
    assert (await client.get("/v1/me", headers=operator.headers)).status_code == 200
    await _set_quota(client, operator, reader.tenant_id, None)
    assert (await client.get("/v1/me", headers=reader.headers)).status_code == 200


async def test_two_instances_never_pass_the_quota_together(settings: Settings) -> None:
    first, second = create_app(settings), create_app(settings)
    async with running(first) as a, running(second) as b:
        reader = await key_maker(first, settings)(Role.READER)
        operator = await key_maker(first, settings)(Role.OPERATOR, tenant="ops")
        await _set_quota(a, operator, reader.tenant_id, 10)
        answers = await asyncio.gather(
            *(client.get("/v1/me", headers=reader.headers) for client in [a, b] * 15)
        )  # fmt: skip
        assert sorted(answer.status_code for answer in answers) == [200] * 10 + [429] * 20


async def test_unspent_leases_go_back_at_shutdown(settings: Settings, redis_client: Redis) -> None:
    app = create_app(settings)
    async with running(app) as client:
        reader = await key_maker(app, settings)(Role.READER)
        operator = await key_maker(app, settings)(Role.OPERATOR, tenant="ops")
        await _set_quota(client, operator, reader.tenant_id, 100_000)
        for _ in range(3):
            assert (await client.get("/v1/me", headers=reader.headers)).status_code == 200
        month, _ = month_window(datetime.now(UTC))
        counter = f"{QUOTA_PREFIX}{reader.tenant_id}:{month}"
        assert int(await redis_client.get(counter) or 0) == settings.quota_lease_size  # reserved, not all spent
    assert int(await redis_client.get(counter) or 0) == 3  # exactly what was served


async def test_notices_at_80_and_100_percent_once_each_in_the_audit_and_by_webhook(
    app: FastAPI, client: AsyncClient, make_key: MakeKey
) -> None:
    operator = await make_key(Role.OPERATOR, tenant="ops")
    admin = await make_key(Role.ADMIN)
    await client.put("/v1/webhook", json={"url": "https://hooks.example.com/q"}, headers=admin.headers)
    await _set_quota(client, operator, admin.tenant_id, 10)
    for _ in range(12):
        await client.get("/v1/me", headers=admin.headers)
    await app.state.quota_ledger.notify.drain()
    async with app.state.session_factory() as session:
        notices = (
            (await session.execute(select(AuditEvent.details).where(AuditEvent.action == "tenant.quota_notice")))
            .scalars()
            .all()
        )
        deliveries = (
            (await session.execute(select(WebhookDelivery.payload).where(WebhookDelivery.event == "quota.threshold")))
            .scalars()
            .all()
        )
    assert sorted(n["threshold_percent"] for n in notices) == [80, 100]
    assert sorted(d["threshold_percent"] for d in deliveries) == [80, 100]


async def test_only_operators_set_quotas(client: AsyncClient, make_key: MakeKey) -> None:
    admin = await make_key(Role.ADMIN)
    refused = await client.put(
        f"/v1/tenants/{admin.tenant_id}/quota", json={"monthly_requests": 1}, headers=admin.headers
    )
    assert refused.status_code == 403
    operator = await make_key(Role.OPERATOR, tenant="ops")
    bad = await client.put(
        f"/v1/tenants/{admin.tenant_id}/quota", json={"monthly_requests": 0}, headers=operator.headers
    )
    assert bad.status_code == 422
    await _set_quota(client, operator, admin.tenant_id, 1000)
    listed = await client.get("/v1/tenants", headers=operator.headers)
    assert {t["name"]: t["monthly_quota"] for t in listed.json()}["acme"] == 1000
