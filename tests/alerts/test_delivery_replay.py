"""Claims between racing deliverers, redeliver (same webhook-id, repeats collapse, a success closes the original's
retries) and recover (only the tenant's failed deliveries since `since`)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from app.alerts.events import message_id
from app.auth.scopes import Role
from app.config import Settings
from app.models import AuditEvent, WebhookDelivery, WebhookEndpoint
from app.webhooks import repository
from app.webhooks.deliverer import Attempt, Destination, WebhookDeliverer
from tests.alerts.outbox import Clock, add_event, add_notice, one, rows, set_endpoint
from tests.alerts.receiver import answers, webhook_receiver
from tests.keys.conftest import MakeKey

Backend = tuple[FastAPI, AsyncClient]
ROWS = 12


async def test_two_deliverers_racing_for_the_same_rows_send_each_once(
    backend: Backend, backend_settings: Settings, make_backend_key: MakeKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, _ = backend
    admin = await make_backend_key(Role.ADMIN)
    clock = Clock()
    # Both deliverers read the due rows before either claims one: every row is contended.
    both_read = asyncio.Barrier(2)
    seen: list[int] = []
    original = repository.due_deliveries

    async def due_then_wait(session: AsyncSession, now: datetime, limit: int) -> Sequence[WebhookDelivery]:
        due = await original(session, now, limit)
        seen.append(len(due))
        await both_read.wait()
        return due

    monkeypatch.setattr(repository, "due_deliveries", due_then_wait)
    async with (
        webhook_receiver(answers(200)) as receiver,
        httpx.AsyncClient() as first,
        httpx.AsyncClient() as second,
    ):
        await set_endpoint(app, admin.tenant_id, receiver.url)
        for bar_ms in range(ROWS):
            await add_event(app, admin.tenant_id, bar_ms=bar_ms, due_at=clock.now)
        deliverers = [
            WebhookDeliverer(backend_settings, app.state.session_factory, h, clock=clock) for h in (first, second)
        ]
        claimed = await asyncio.gather(*(d.run_once() for d in deliverers))
    assert seen == [ROWS, ROWS], "both saw every row"
    assert sum(claimed) == ROWS
    assert len(receiver.requests) == ROWS
    assert len(set(receiver.message_ids)) == ROWS
    delivered = await rows(app, WebhookDelivery, status="delivered")
    assert len(delivered) == ROWS
    assert {row.attempts for row in delivered} == {1}


async def test_an_attempt_whose_claim_was_taken_over_records_nothing(
    backend: Backend, make_backend_key: MakeKey
) -> None:
    app, _ = backend
    admin = await make_backend_key(Role.ADMIN)
    now = datetime.now(UTC).replace(microsecond=0)
    _, delivery_id = await add_event(app, admin.tenant_id, due_at=now)
    lease, later_lease = now + timedelta(seconds=45), now + timedelta(seconds=90)
    async with app.state.session_factory() as session, session.begin():
        assert await repository.claim(session, delivery_id, now, lease)
        assert not await repository.claim(session, delivery_id, now, lease), "one claim per seen time"
        assert await repository.claim(session, delivery_id, lease, later_lease)  # the lease ran out: taken over
        assert not await repository.finish(session, delivery_id, lease, {"status": "delivered", "attempts": 1})
        assert await repository.finish(session, delivery_id, later_lease, {"status": "delivered", "attempts": 1})
    assert (await one(app, WebhookDelivery, delivery_id)).status == "delivered"


async def test_an_outcome_arriving_after_a_takeover_changes_nothing(
    backend: Backend, backend_settings: Settings, make_backend_key: MakeKey
) -> None:
    app, _ = backend
    admin = await make_backend_key(Role.ADMIN)
    clock = Clock()

    class SlowDeliverer(WebhookDeliverer):
        """Its attempt outlives its lease: another instance claims the row before the 410 is recorded."""

        async def _post(self, delivery: WebhookDelivery, destination: Destination) -> Attempt:
            attempt = await super()._post(delivery, destination)
            async with app.state.session_factory() as session, session.begin():
                row = await session.get(WebhookDelivery, delivery.id)
                assert row is not None
                later = row.next_attempt_at + timedelta(minutes=5)
                assert await repository.claim(session, delivery.id, row.next_attempt_at, later)
            return attempt

    async with webhook_receiver(answers(410)) as receiver, httpx.AsyncClient() as http:
        await set_endpoint(app, admin.tenant_id, receiver.url)
        _, delivery_id = await add_event(app, admin.tenant_id, due_at=clock.now)
        assert await SlowDeliverer(backend_settings, app.state.session_factory, http, clock=clock).run_once() == 1
    assert len(receiver.requests) == 1
    row = await one(app, WebhookDelivery, delivery_id)
    assert (row.status, row.attempts, row.last_status_code) == ("pending", 0, None), "the other claim's row"
    assert (await one(app, WebhookEndpoint, admin.tenant_id)).disabled_at is None, "no 410 applied"
    assert await rows(app, AuditEvent, action="webhook.disabled") == []


async def test_redeliver_sends_the_same_webhook_id_again_and_collapses_repeats(
    client: AsyncClient, app: FastAPI, settings: Settings, make_key: MakeKey
) -> None:
    admin = await make_key(Role.ADMIN)
    stranger = await make_key(Role.ADMIN, tenant="other")
    reader = await make_key(Role.READER)
    clock = Clock()
    async with webhook_receiver(answers(200)) as receiver, httpx.AsyncClient() as http:
        put = await client.put("/v1/webhook", json={"url": receiver.url}, headers=admin.headers)
        receiver.secret = put.json()["signing_secret"]
        event_id, original = await add_event(app, admin.tenant_id, due_at=clock.now)
        deliverer = WebhookDeliverer(settings, app.state.session_factory, http, clock=clock)
        assert await deliverer.run_once() == 1

        path = f"/v1/alerts/events/{event_id}/redeliver"
        first = await client.post(path, headers=admin.headers)
        assert first.status_code == 202, first.text
        body = first.json()
        assert body["message_id"] == message_id(event_id)
        assert body["queued"] is True
        assert body["delivery_id"] != str(original)
        repeat = (await client.post(path, headers=admin.headers)).json()
        assert (repeat["delivery_id"], repeat["queued"]) == (body["delivery_id"], False), "not yet tried: the same"

        assert (await client.post(path, headers=stranger.headers)).status_code == 404
        assert (await client.post(path, headers=reader.headers)).status_code == 403
        unknown = await client.post(f"/v1/alerts/events/{uuid.uuid4()}/redeliver", headers=admin.headers)
        assert unknown.status_code == 404
        assert unknown.json()["type"] == "/problems/alert-event-not-found"

        clock.catch_up()  # the API stamps real time, a moment after the deliverer's clock started
        assert await deliverer.run_once() == 1
        again = (await client.post(path, headers=admin.headers)).json()
        assert again["queued"] is True
        assert again["delivery_id"] != body["delivery_id"], "the last one was tried"
        clock.catch_up()
        assert await deliverer.run_once() == 1
    assert receiver.message_ids == [message_id(event_id)] * 3
    assert receiver.verified_all()
    assert len(await rows(app, AuditEvent, action="alert.redelivered")) == 2


async def test_a_successful_redelivery_ends_the_originals_retries(
    backend: Backend, backend_settings: Settings, make_backend_key: MakeKey
) -> None:
    app, client = backend
    admin = await make_backend_key(Role.ADMIN)
    clock = Clock()
    async with webhook_receiver(answers((429, {"retry-after": "3600"}), 200)) as receiver, httpx.AsyncClient() as http:
        await set_endpoint(app, admin.tenant_id, receiver.url)
        event_id, original = await add_event(app, admin.tenant_id, due_at=clock.now)
        deliverer = WebhookDeliverer(backend_settings, app.state.session_factory, http, clock=clock)
        assert await deliverer.run_once() == 1  # 429: the original waits an hour
        accepted = await client.post(f"/v1/alerts/events/{event_id}/redeliver", headers=admin.headers)
        redelivery = uuid.UUID(accepted.json()["delivery_id"])
        clock.catch_up()  # the API stamps real time, a moment after the deliverer's clock started
        assert await deliverer.run_once() == 1  # the redelivery: 200
        clock.advance(hours=2)
        assert await deliverer.run_once() == 0, "the original is closed, not retried"
    assert [r.answered for r in receiver.requests] == [429, 200]
    closed = await one(app, WebhookDelivery, original)
    assert closed.status == "delivered"
    assert closed.last_error == f"delivered by delivery {redelivery}"
    assert (await one(app, WebhookDelivery, redelivery)).status == "delivered"


async def test_recover_requeues_only_the_tenants_failed_deliveries_since(
    backend: Backend, make_backend_key: MakeKey
) -> None:
    app, client = backend
    admin = await make_backend_key(Role.ADMIN)
    other = await make_backend_key(Role.ADMIN, tenant="other")
    reader = await make_backend_key(Role.READER)
    now = datetime.now(UTC)
    since, before, after = now - timedelta(days=2), now - timedelta(days=3), now - timedelta(days=1)
    failed: dict[str, Any] = {"status": "failed", "attempts": 8, "last_error": "HTTP 500"}
    _, old = await add_event(app, admin.tenant_id, bar_ms=1, created_at=before, **failed)
    _, recent = await add_event(app, admin.tenant_id, bar_ms=2, created_at=after, **failed)
    notice = await add_notice(app, admin.tenant_id, created_at=after, **failed)
    _, delivered = await add_event(app, admin.tenant_id, bar_ms=3, created_at=after, status="delivered")
    _, pending = await add_event(app, admin.tenant_id, bar_ms=4, created_at=after, attempts=2)
    # One message, failed twice (the original and a redelivery): only the newest is requeued.
    event_id, twice_first = await add_event(app, admin.tenant_id, bar_ms=5, created_at=after, **failed)
    async with app.state.session_factory() as session, session.begin():
        twice_last = uuid.uuid4()
        session.add(
            WebhookDelivery(
                id=twice_last, tenant_id=admin.tenant_id, event="alert.fired", payload={}, **failed,
                message_id=message_id(event_id), alert_event_id=event_id, created_at=after + timedelta(minutes=1),
            )
        )  # fmt: skip
    _, foreign = await add_event(app, other.tenant_id, bar_ms=6, created_at=after, **failed)

    stamp = since.isoformat().replace("+00:00", "Z")
    response = await client.post("/v1/webhook/recover", params={"since": stamp}, headers=admin.headers)
    assert response.status_code == 202, response.text
    assert response.json()["requeued"] == 3
    states = {
        name: ((row := await one(app, WebhookDelivery, key)).status, row.attempts)
        for name, key in {
            "old": old, "recent": recent, "notice": notice, "delivered": delivered, "pending": pending,
            "twice_first": twice_first, "twice_last": twice_last, "foreign": foreign,
        }.items()
    }  # fmt: skip
    assert states == {
        "old": ("failed", 8),
        "recent": ("pending", 0),
        "notice": ("pending", 0),
        "delivered": ("delivered", 0),
        "pending": ("pending", 2),
        "twice_first": ("failed", 8),
        "twice_last": ("pending", 0),
        "foreign": ("failed", 8),
    }
    again = await client.post("/v1/webhook/recover", params={"since": stamp}, headers=admin.headers)
    assert again.json()["requeued"] == 0, "requeued rows are no longer failed"
    audits = await rows(app, AuditEvent, action="webhook.recovered")
    assert sorted(a.details["requeued"] for a in audits) == [0, 3]
    assert (
        await client.post("/v1/webhook/recover", params={"since": stamp}, headers=reader.headers)
    ).status_code == 403


async def test_recover_refuses_a_since_outside_the_window(client: AsyncClient, make_key: MakeKey) -> None:
    admin = await make_key(Role.ADMIN)
    now = datetime.now(UTC)
    for since in (
        (now - timedelta(days=15)).isoformat(),  # older than the 14-day window
        (now + timedelta(minutes=5)).isoformat(),  # the future
        "2026-12-01T00:00:00",  # no zone
        "yesterday",
    ):
        response = await client.post("/v1/webhook/recover", params={"since": since}, headers=admin.headers)
        assert response.status_code == 422, (since, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
