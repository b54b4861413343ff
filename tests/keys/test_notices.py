"""Expiry notices (14/7/1 days, once each) and signed webhook delivery with retries and backoff."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select

from app.auth.scopes import Role
from app.config import Settings
from app.keys.jobs import ExpiryNotices
from app.models import AuditEvent, KeyExpiryNotice, WebhookDelivery
from app.tenants.webhooks import WebhookDeliverer
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


def _verify(secret: str, signature: str, body: bytes) -> bool:
    parts = dict(part.split("=", 1) for part in signature.split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


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
        assert _verify(secret, request.headers["deltaflow-signature"], request.body)
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


async def test_a_failing_webhook_is_retried_with_backoff_and_attempts_are_recorded(
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
        assert row.next_attempt_at == clock.now + deliverer.backoff(1)
        assert await deliverer.run_once() == 0, "not due before the backoff elapses"
        clock.advance(seconds=deliverer.backoff(1).total_seconds())
        assert await deliverer.run_once() == 1  # 503
        (row,) = await _rows(app, WebhookDelivery)
        assert row.next_attempt_at == clock.now + deliverer.backoff(2)
        assert deliverer.backoff(2) == 2 * deliverer.backoff(1)
        clock.advance(seconds=deliverer.backoff(2).total_seconds())
        assert await deliverer.run_once() == 1  # 200
    (row,) = await _rows(app, WebhookDelivery)
    assert (row.attempts, row.status, row.last_status_code) == (3, "delivered", 200)
    assert len(received) == 3
    assert len({r.headers["deltaflow-delivery"] for r in received}) == 1, "one delivery id across retries"


async def test_delivery_gives_up_after_the_attempt_limit(
    client: AsyncClient, app: FastAPI, settings: Settings, make_key: MakeKey
) -> None:
    clock = Clock()
    limited = settings.model_copy(update={"webhook_max_attempts": 2})
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
