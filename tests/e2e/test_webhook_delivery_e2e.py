"""Webhook delivery end to end: two real `deltaflow serve` processes on one Postgres run their delivery workers
against a real receiver on loopback. Every message arrives once (the claims hold across processes), every request
verifies with the independent `standardwebhooks` package, a failed attempt is retried on the schedule with the same
`webhook-id`, and redeliver and recover work through the API of either instance."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from app.alerts.events import message_id
from app.models import WebhookDelivery
from tests.alerts.outbox import add_event, add_notice, rows
from tests.alerts.receiver import Answer, Receiver, webhook_receiver
from tests.conftest import TEST_REDIS_URL, truncate_all
from tests.e2e.test_revocation import _bootstrap
from tests.e2e.test_serve import serve

pytestmark = pytest.mark.e2e

MESSAGES = 30
ENV = {
    "DELTAFLOW_BACKGROUND_JOBS": "true",
    "DELTAFLOW_WEBHOOK_POLL_SECONDS": "0.2",
    "DELTAFLOW_WEBHOOK_BATCH_SIZE": "10",  # several polls per instance, so the two interleave
    "DELTAFLOW_WEBHOOK_RETRY_SCHEDULE_SECONDS": "0,1,1",  # real time here: seconds, not Svix's hours
    "DELTAFLOW_WEBHOOK_ALLOW_PRIVATE_DESTINATIONS": "true",  # the receiver is on loopback
    "DELTAFLOW_ACCESS_LOG": "false",
    "DELTAFLOW_LOG_LEVEL": "WARNING",
}


@asynccontextmanager
async def database(url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        yield async_sessionmaker(engine, expire_on_commit=False)
    finally:
        await engine.dispose()


async def _until_recorded(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Until every delivery is recorded delivered: the servers write it after the receiver answered, and nothing
    announces it, so this polls (bounded)."""
    deadline = time.monotonic() + 10
    while {row.status for row in await rows(sessions, WebhookDelivery)} != {"delivered"}:
        assert time.monotonic() < deadline, "deliveries not recorded within 10 s"
        await asyncio.sleep(0.05)


async def _tenant_admin(client: httpx.AsyncClient, operator: dict[str, str]) -> tuple[uuid.UUID, dict[str, str]]:
    tenant = (await client.post("/v1/tenants", json={"name": "hooks"}, headers=operator)).json()["id"]
    created = await client.post(
        "/v1/keys", params={"tenant_id": tenant}, json={"name": "hooks", "role": "admin"}, headers=operator
    )
    return uuid.UUID(tenant), {"Authorization": f"Bearer {created.json()['secret']}"}


async def test_two_instances_deliver_each_message_once_signed_with_retries_and_replay(
    postgres_url: str, redis_client: object
) -> None:
    env = {**ENV, "DELTAFLOW_DATABASE_URL": postgres_url, "DELTAFLOW_REDIS_URL": TEST_REDIS_URL}
    flaky: list[str] = []  # the first message to arrive is answered 500 once

    def script(index: int, headers: dict[str, str]) -> Answer:
        if index == 0:
            flaky.append(headers["webhook-id"])
            return 500, {}
        return 200, {}

    operator = _bootstrap(env)
    try:
        async with AsyncExitStack() as stack:
            receiver: Receiver = await stack.enter_async_context(webhook_receiver(script))
            sessions = await stack.enter_async_context(database(postgres_url))
            _, url_a = await stack.enter_async_context(serve(env=env))
            _, url_b = await stack.enter_async_context(serve(env=env))
            a = await stack.enter_async_context(httpx.AsyncClient(base_url=url_a, timeout=30))
            b = await stack.enter_async_context(httpx.AsyncClient(base_url=url_b, timeout=30))
            tenant, admin = await _tenant_admin(a, {"Authorization": f"Bearer {operator}"})
            put = await b.put("/v1/webhook", json={"url": receiver.url}, headers=admin)
            receiver.secret = put.json()["signing_secret"]

            events = [(await add_event(sessions, tenant, bar_ms=n))[0] for n in range(MESSAGES)]
            await receiver.wait_for(MESSAGES + 1, within_seconds=30)  # each once, the flaky one twice

            counts = Counter(receiver.message_ids)
            assert set(counts) == {message_id(e) for e in events}
            assert counts[flaky[0]] == 2
            assert set(counts.values()) == {1, 2}, "no message sent twice but the retried one"
            assert receiver.verified_all()
            await _until_recorded(sessions)  # each instance records an attempt after its answer arrived

            flaky_event = next(e for e in events if message_id(e) == flaky[0])
            redelivered = await b.post(f"/v1/alerts/events/{flaky_event}/redeliver", headers=admin)
            assert redelivered.status_code == 202, redelivered.text
            await receiver.wait_for(MESSAGES + 2, within_seconds=15)
            assert receiver.requests[-1].headers["webhook-id"] == flaky[0]

            hour_ago = datetime.now(UTC) - timedelta(hours=1)
            failed = await add_notice(sessions, tenant, created_at=hour_ago, status="failed", attempts=3)
            since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
            recovered = await a.post("/v1/webhook/recover", params={"since": since}, headers=admin)
            assert recovered.json()["requeued"] == 1
            await receiver.wait_for(MESSAGES + 3, within_seconds=15)
            (row,) = await rows(sessions, WebhookDelivery, id=failed)
            assert receiver.requests[-1].headers["webhook-id"] == row.message_id
            assert receiver.verified_all()
            assert len(receiver.requests) == MESSAGES + 3
    finally:
        await truncate_all(postgres_url)
