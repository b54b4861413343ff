"""Expiry notices (14/7/1 days, once each) and their Standard Webhooks delivery with retries on the schedule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select
from standardwebhooks import Webhook

from app.auth.scopes import Role
from app.config import Settings
from app.keys.jobs import ExpiryNotices
from app.models import AuditEvent, KeyExpiryNotice, WebhookDelivery
from app.webhooks.deliverer import WebhookDeliverer
from tests.helpers import http_receiver
from tests.keys.conftest import IssuedKey, MakeKey


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


async def _set_webhook(client: AsyncClient, admin: IssuedKey, url: str) -> str:
    response = await client.put("/v1/webhook", json={"url": url}, headers=admin.headers)
    assert response.status_code == 200
    secret: str = response.json()["signing_secret"]
    return secret


async def _rows(app: FastAPI, model: type[Any], **filters: object) -> list[Any]:
    async with app.state.session_factory() as session:
        query: Any = select(model).filter_by(**filters)
        return list((await session.execute(query)).scalars().all())


async def test_each_threshold_fires_once_with_a_signed_webhook(
    client: AsyncClient, app: FastAPI, settings: Settings, make_key: MakeKey
) -> None:
    clock = Clock()
    admin = await make_key(Role.ADMIN)
    expiring = await make_key(Role.READER, expires_at=clock.now + timedelta(days=13, hours=12))
    notices = ExpiryNotices(settings, app.state.session_factory, clock=clock)
    async with http_receiver([200]) as (url, received), httpx.AsyncClient() as http:
        secret = await _set_webhook(client, admin, url)
        deliverer = WebhookDeliverer(settings, app.state.session_factory, http, clock=clock)

        assert await notices.run_once() == 1
        assert await notices.run_once() == 0, "the 14-day notice fires once"
        assert await deliverer.run_once() == 1
        clock.advance(days=7)  # 6.5 days left: the 7-day threshold
        assert await notices.run_once() == 1
        assert await notices.run_once() == 0
        assert await deliverer.run_once() == 1
        clock.advance(days=6)  # 12 hours left: the 1-day threshold
        assert await notices.run_once() == 1
        assert await deliverer.run_once() == 1
        assert await deliverer.run_once() == 0

    assert [orjson.loads(r.body)["threshold_days"] for r in received] == [14, 7, 1]
    for request in received:
        assert request.path == "/hooks/deltaflow"
        assert request.headers["deltaflow-event"] == "api_key.expiring"
        Webhook(secret).verify(request.body, request.headers)  # the spec's own library: raises if invalid
        assert orjson.loads(request.body)["key_id"] == str(expiring.key_id)
    audits = await _rows(app, AuditEvent, action="key.expiry_notice")
    assert len(audits) == 3


async def test_a_key_that_crosses_several_thresholds_is_notified_once_at_the_tightest(
    client: AsyncClient, app: FastAPI, settings: Settings, make_key: MakeKey
) -> None:
    clock = Clock()
    key = await make_key(Role.READER, expires_at=clock.now + timedelta(days=5))
    notices = ExpiryNotices(settings, app.state.session_factory, clock=clock)
    assert await notices.run_once() == 1
    rows = await _rows(app, KeyExpiryNotice, api_key_id=key.key_id)
    assert sorted((r.threshold_days, r.delivered) for r in rows) == [(7, True), (14, False)]
    assert await notices.run_once() == 0
    assert await _rows(app, WebhookDelivery) == [], "no webhook configured, so nothing is queued"


async def test_revoked_and_far_keys_get_no_notice(
    app: FastAPI, settings: Settings, client: AsyncClient, make_key: MakeKey
) -> None:
    admin = await make_key(Role.ADMIN)
    soon = await make_key(Role.READER, expires_at=datetime.now(UTC) + timedelta(days=3))
    await client.post(f"/v1/keys/{soon.key_id}/revoke", headers=admin.headers)
    await make_key(Role.READER)  # 90 days away
    assert await ExpiryNotices(settings, app.state.session_factory).run_once() == 0


async def test_a_failing_webhook_is_retried_on_the_schedule_and_attempts_are_recorded(
    client: AsyncClient, app: FastAPI, settings: Settings, make_key: MakeKey
) -> None:
    clock = Clock()
    admin = await make_key(Role.ADMIN)
    await make_key(Role.READER, expires_at=clock.now + timedelta(days=1, hours=-1))
    async with http_receiver([500, 503, 200]) as (url, received), httpx.AsyncClient() as http:
        await _set_webhook(client, admin, url)
        deliverer = WebhookDeliverer(settings, app.state.session_factory, http, clock=clock)
        await ExpiryNotices(settings, app.state.session_factory, clock=clock).run_once()

        assert await deliverer.run_once() == 1  # 500
        (row,) = await _rows(app, WebhookDelivery)
        assert (row.attempts, row.status, row.last_status_code) == (1, "pending", 500)
        schedule = settings.webhook_retry_schedule_seconds
        assert row.next_attempt_at == clock.now + timedelta(seconds=schedule[1])
        assert await deliverer.run_once() == 0, "not due before the schedule's delay elapses"
        clock.advance(seconds=schedule[1])
        assert await deliverer.run_once() == 1  # 503 (no Retry-After: the schedule alone)
        (row,) = await _rows(app, WebhookDelivery)
        assert row.next_attempt_at == clock.now + timedelta(seconds=schedule[2])
        clock.advance(seconds=schedule[2])
        assert await deliverer.run_once() == 1  # 200
    (row,) = await _rows(app, WebhookDelivery)
    assert (row.attempts, row.status, row.last_status_code) == (3, "delivered", 200)
    assert len(received) == 3
    assert {r.headers["webhook-id"] for r in received} == {row.message_id}, "one webhook-id across retries"


async def test_delivery_gives_up_after_the_attempt_limit(
    client: AsyncClient, app: FastAPI, settings: Settings, make_key: MakeKey
) -> None:
    clock = Clock()
    limited = settings.model_copy(update={"webhook_retry_schedule_seconds": (0.0, 60.0)})  # two attempts
    admin = await make_key(Role.ADMIN)
    await make_key(Role.READER, expires_at=clock.now + timedelta(hours=5))
    async with http_receiver([500]) as (url, _received), httpx.AsyncClient() as http:
        await _set_webhook(client, admin, url)
        deliverer = WebhookDeliverer(limited, app.state.session_factory, http, clock=clock)
        await ExpiryNotices(limited, app.state.session_factory, clock=clock).run_once()
        await deliverer.run_once()
        clock.advance(hours=1)
        await deliverer.run_once()
        clock.advance(hours=1)
        assert await deliverer.run_once() == 0
    (row,) = await _rows(app, WebhookDelivery)
    assert (row.attempts, row.status) == (2, "failed")
