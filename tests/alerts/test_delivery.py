"""Webhook delivery against a real receiver on loopback: Standard Webhooks signatures (checked by the independent
`standardwebhooks` package), the Svix schedule under an injected clock, `Retry-After`, and disabling (410, five days
of failures) with its audit event and re-enabling. Storage-sensitive behaviour runs on Postgres and SQLite."""

from __future__ import annotations

import itertools
import time
from datetime import timedelta
from email.utils import format_datetime

import httpx
import orjson
from fastapi import FastAPI
from httpx import AsyncClient
from prometheus_client import REGISTRY

from app.alerts.events import message_id
from app.auth.scopes import Role
from app.config import Settings
from app.core.standard_webhooks import decode_secret
from app.models import AlertRule, AuditEvent, WebhookDelivery, WebhookEndpoint
from app.webhooks.deliverer import WebhookDeliverer
from app.webhooks.signing import webhook_secret
from tests.alerts.conftest import insert_rule
from tests.alerts.outbox import Clock, add_event, one, rows, set_endpoint
from tests.alerts.receiver import Answer, answers, webhook_receiver
from tests.helpers import blackhole_server
from tests.keys.conftest import MakeKey

Backend = tuple[FastAPI, AsyncClient]


def _disabled_count(reason: str) -> float:
    return REGISTRY.get_sample_value("deltaflow_webhook_destinations_disabled_total", {"reason": reason}) or 0.0


async def test_put_webhook_shows_a_whsec_secret_that_verifies_deliveries(
    client: AsyncClient, app: FastAPI, settings: Settings, make_key: MakeKey
) -> None:
    admin = await make_key(Role.ADMIN)
    clock = Clock()
    async with webhook_receiver(answers(200)) as receiver, httpx.AsyncClient() as http:
        response = await client.put("/v1/webhook", json={"url": receiver.url}, headers=admin.headers)
        secret = response.json()["signing_secret"]
        assert secret.startswith("whsec_")
        assert len(decode_secret(secret)) == 32
        receiver.secret = secret
        event_id, _ = await add_event(app, admin.tenant_id, due_at=clock.now)
        assert await WebhookDeliverer(settings, app.state.session_factory, http, clock=clock).run_once() == 1
    (request,) = receiver.requests
    assert request.verified is True
    assert request.headers["webhook-id"] == message_id(event_id)
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("Deltaflow-Webhooks/")
    assert request.headers["deltaflow-event"] == "alert.fired"
    assert "deltaflow-signature" not in request.headers
    assert orjson.loads(request.body)["id"] == str(event_id)
    rotated = await client.put("/v1/webhook", json={"url": receiver.url, "rotate_secret": True}, headers=admin.headers)
    assert rotated.json()["signing_secret"] != secret


async def test_retries_follow_the_svix_schedule_with_one_webhook_id_then_fail(
    backend: Backend, backend_settings: Settings, make_backend_key: MakeKey
) -> None:
    app, _ = backend
    admin = await make_backend_key(Role.ADMIN)
    clock = Clock()
    schedule = backend_settings.webhook_retry_schedule_seconds
    assert schedule == (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0), "Svix's, by default"
    start = clock.now
    seen_at = []
    async with webhook_receiver(answers(500)) as receiver, httpx.AsyncClient() as http:
        await set_endpoint(app, admin.tenant_id, receiver.url)
        receiver.secret = webhook_secret(backend_settings, admin.tenant_id, 1)
        event_id, delivery_id = await add_event(app, admin.tenant_id, due_at=clock.now)
        deliverer = WebhookDeliverer(backend_settings, app.state.session_factory, http, clock=clock)
        for delay in schedule:
            if delay:
                clock.advance(seconds=delay - 1)
                assert await deliverer.run_once() == 0, "not due a second early"
                clock.advance(seconds=1)
            assert await deliverer.run_once() == 1
            seen_at.append((clock.now - start).total_seconds())
        clock.advance(days=30)
        assert await deliverer.run_once() == 0, "given up after the last attempt"
    assert seen_at == list(itertools.accumulate(schedule))
    assert receiver.message_ids == [message_id(event_id)] * len(schedule)
    assert receiver.verified_all()
    row = await one(app, WebhookDelivery, delivery_id)
    assert (row.status, row.attempts, row.last_status_code, row.last_error) == ("failed", 8, 500, "HTTP 500")
    endpoint = await one(app, WebhookEndpoint, admin.tenant_id)
    assert endpoint.failing_since == start
    assert endpoint.disabled_at is None, "27.6 h of failures: not 5 days"


async def test_retry_after_on_429_and_503_lengthens_the_wait_up_to_its_bound(
    client: AsyncClient, app: FastAPI, settings: Settings, make_key: MakeKey
) -> None:
    admin = await make_key(Role.ADMIN)
    clock = Clock()
    hour_later = format_datetime(clock.now + timedelta(seconds=5 + 120 + 3600), usegmt=True)
    script: list[Answer] = [
        (429, {"retry-after": "120"}),  # schedule 5 s → 120 s
        (503, {"retry-after": hour_later}),  # an HTTP date an hour after this attempt; schedule 300 s → 3600 s
        (503, {"retry-after": "1"}),  # shorter than the schedule: 1800 s stays
        (429, {"retry-after": "99999999"}),  # past the bound: 36 000 s (the schedule says 7200)
        (500, {"retry-after": "99999"}),  # only 429/503 carry a meaningful Retry-After: 18 000 s
        (200, {}),
    ]
    waits = [120, 3600, 1800, 36000, 18000]
    async with webhook_receiver(answers(*script)) as receiver, httpx.AsyncClient() as http:
        await set_endpoint(app, admin.tenant_id, receiver.url)
        _, delivery_id = await add_event(app, admin.tenant_id, due_at=clock.now)
        deliverer = WebhookDeliverer(settings, app.state.session_factory, http, clock=clock)
        clock.advance(seconds=5)  # the first wait is measured from here
        for wait in waits:
            assert await deliverer.run_once() == 1
            row = await one(app, WebhookDelivery, delivery_id)
            assert row.next_attempt_at - clock.now == timedelta(seconds=wait), row.last_error
            clock.advance(seconds=wait)
        assert await deliverer.run_once() == 1
    row = await one(app, WebhookDelivery, delivery_id)
    assert (row.status, row.attempts) == ("delivered", 6)
    assert len(receiver.requests) == 6


async def test_no_answer_within_the_timeout_is_a_failed_attempt(
    app: FastAPI, client: AsyncClient, settings: Settings, make_key: MakeKey
) -> None:
    admin = await make_key(Role.ADMIN)
    quick = settings.model_copy(update={"webhook_timeout_seconds": 0.2})
    clock = Clock()
    async with blackhole_server() as port, httpx.AsyncClient() as http:
        await set_endpoint(app, admin.tenant_id, f"http://127.0.0.1:{port}/hook")
        _, delivery_id = await add_event(app, admin.tenant_id, due_at=clock.now)
        started = time.monotonic()
        assert await WebhookDeliverer(quick, app.state.session_factory, http, clock=clock).run_once() == 1
        assert time.monotonic() - started < 5
    row = await one(app, WebhookDelivery, delivery_id)
    assert (row.status, row.attempts, row.last_status_code) == ("pending", 1, None)
    assert row.last_error == "no response within 0.2 s"
    assert row.next_attempt_at == clock.now + timedelta(seconds=5)


async def test_410_disables_the_endpoint_at_once_and_put_webhook_enables_it_again(
    backend: Backend, backend_settings: Settings, make_backend_key: MakeKey
) -> None:
    app, client = backend
    admin = await make_backend_key(Role.ADMIN)
    clock = Clock()
    disabled_before = _disabled_count("gone")
    async with webhook_receiver(answers(410)) as receiver, httpx.AsyncClient() as http:
        await set_endpoint(app, admin.tenant_id, receiver.url)
        _, first = await add_event(app, admin.tenant_id, due_at=clock.now)
        _, second = await add_event(app, admin.tenant_id, bar_ms=2, due_at=clock.now + timedelta(minutes=1))
        deliverer = WebhookDeliverer(backend_settings, app.state.session_factory, http, clock=clock)
        assert await deliverer.run_once() == 1
        clock.advance(minutes=1)
        assert await deliverer.run_once() == 1
    assert len(receiver.requests) == 1, "nothing is sent to a disabled endpoint"
    assert _disabled_count("gone") == disabled_before + 1
    gone, unsent = await one(app, WebhookDelivery, first), await one(app, WebhookDelivery, second)
    assert (gone.status, gone.attempts, gone.last_status_code) == ("failed", 1, 410)
    assert (unsent.status, unsent.attempts) == ("failed", 0)
    assert "disabled" in unsent.last_error
    endpoint = await one(app, WebhookEndpoint, admin.tenant_id)
    assert endpoint.disabled_at == clock.now - timedelta(minutes=1)
    (audit,) = await rows(app, AuditEvent, action="webhook.disabled")
    assert audit.tenant_id == admin.tenant_id
    assert audit.target == f"webhook:{admin.tenant_id}"
    assert audit.details["reason"] == "gone"
    assert audit.details["url"] == receiver.url
    listed = await client.get("/v1/audit", params={"action": "webhook.disabled"}, headers=admin.headers)
    assert [e["details"]["reason"] for e in listed.json()["items"]] == ["gone"], "the tenant sees it"

    put = await client.put("/v1/webhook", json={"url": "https://hooks.example.com/back"}, headers=admin.headers)
    assert put.status_code == 200
    endpoint = await one(app, WebhookEndpoint, admin.tenant_id)
    assert endpoint.disabled_at is None
    assert endpoint.failing_since is None


async def test_410_from_a_rules_own_url_disables_that_rule_only_until_its_destination_is_set(
    backend: Backend, backend_settings: Settings, make_backend_key: MakeKey
) -> None:
    app, client = backend
    admin = await make_backend_key(Role.ADMIN)
    clock = Clock()
    async with (
        webhook_receiver(answers(410)) as rule_receiver,
        webhook_receiver(answers(200)) as endpoint_receiver,
        httpx.AsyncClient() as http,
    ):
        await set_endpoint(app, admin.tenant_id, endpoint_receiver.url)
        rule_id = await insert_rule(app, admin.tenant_id, destination_type="url", destination_url=rule_receiver.url)
        await add_event(app, admin.tenant_id, rule_id=rule_id, url=rule_receiver.url, due_at=clock.now)
        await add_event(app, admin.tenant_id, bar_ms=2, due_at=clock.now)  # another rule's, to the endpoint
        deliverer = WebhookDeliverer(backend_settings, app.state.session_factory, http, clock=clock)
        assert await deliverer.run_once() == 2
        _, later = await add_event(
            app, admin.tenant_id, rule_id=rule_id, url=rule_receiver.url, bar_ms=3, due_at=clock.now
        )
        assert await deliverer.run_once() == 1
    assert len(rule_receiver.requests) == 1
    assert len(endpoint_receiver.requests) == 1
    rule = await one(app, AlertRule, rule_id)
    assert rule.destination_disabled_at == clock.now
    endpoint = await one(app, WebhookEndpoint, admin.tenant_id)
    assert endpoint.disabled_at is None
    assert endpoint.failing_since is None
    unsent = await one(app, WebhookDelivery, later)
    assert unsent.status == "failed"
    assert "alert rule's destination was disabled" in unsent.last_error
    (audit,) = await rows(app, AuditEvent, action="webhook.disabled")
    assert audit.target == f"alert_rule:{rule_id}"
    assert audit.details["destination"] == "alert_rule"

    body = {"destination": {"type": "url", "url": "https://hooks.example.com/fixed"}}
    patched = await client.patch(f"/v1/alerts/{rule_id}", json=body, headers=admin.headers)
    assert patched.status_code == 200, patched.text
    rule = await one(app, AlertRule, rule_id)
    assert rule.destination_disabled_at is None
    assert rule.destination_failing_since is None


async def test_five_days_without_a_success_disable_the_endpoint_and_tell_the_tenant(
    backend: Backend, backend_settings: Settings, make_backend_key: MakeKey
) -> None:
    app, _ = backend
    admin = await make_backend_key(Role.ADMIN)
    once = backend_settings.model_copy(update={"webhook_retry_schedule_seconds": (0.0,)})  # one attempt per row
    clock = Clock()
    # Each step: how long after the previous one a new message is sent, and what the receiver answers.
    steps = [
        (timedelta(0), 500),  # the run of failures starts
        (timedelta(days=3), 200),  # a success ends it
        (timedelta(hours=1), 500),  # a new run starts here…
        (timedelta(days=4, hours=23), 500),  # …7 days after the first failure, but 4 d 23 h into this run
        (timedelta(hours=1), 500),  # 5 days into the run: disabled
    ]
    async with webhook_receiver(answers(*(status for _, status in steps))) as receiver, httpx.AsyncClient() as http:
        await set_endpoint(app, admin.tenant_id, receiver.url)
        deliverer = WebhookDeliverer(once, app.state.session_factory, http, clock=clock)
        marks = []
        for bar_ms, (gap, _status) in enumerate(steps):
            clock.advance(seconds=gap.total_seconds())
            await add_event(app, admin.tenant_id, bar_ms=bar_ms, due_at=clock.now)
            assert await deliverer.run_once() == 1
            endpoint = await one(app, WebhookEndpoint, admin.tenant_id)
            marks.append((endpoint.failing_since, endpoint.disabled_at))
            assert await rows(app, AuditEvent, action="webhook.disabled") == [] or bar_ms == len(steps) - 1
        clock.advance(minutes=1)
        _, unsent = await add_event(app, admin.tenant_id, bar_ms=99, due_at=clock.now)
        assert await deliverer.run_once() == 1
    started = [m[0] for m in marks]
    assert started[0] is not None
    assert started[1] is None, "a success clears the mark"
    assert started[2] == started[3] == started[4] is not None
    assert [m[1] is not None for m in marks] == [False, False, False, False, True]
    assert len(receiver.requests) == len(steps), "nothing is sent once disabled"
    assert "disabled" in (await one(app, WebhookDelivery, unsent)).last_error
    (audit,) = await rows(app, AuditEvent, action="webhook.disabled")
    assert audit.details["reason"] == "failing"
    assert audit.actor_key_id is None
