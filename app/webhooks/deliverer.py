"""The delivery worker: claims due outbox rows, POSTs each as a Standard Webhook, records the outcome.

Every instance runs one (`DELTAFLOW_BACKGROUND_JOBS`); a compare-and-set claim on `next_attempt_at` gives each due
row to one of them, and an attempt is recorded only while its claim still holds, so no row is attempted twice at
once and no stale outcome overwrites a newer one. The HTTP attempt runs outside any transaction.

Per attempt (app/webhooks/schedule.py decides): a 2xx within `DELTAFLOW_WEBHOOK_TIMEOUT_SECONDS` delivers it and
clears the destination's failing mark; 410 fails it and disables the destination; anything else is retried on
`DELTAFLOW_WEBHOOK_RETRY_SCHEDULE_SECONDS` (429/503 `Retry-After` honoured up to its bound) and starts, or
continues, the destination's run of failures, which disables it after `DELTAFLOW_WEBHOOK_DISABLE_AFTER_DAYS`.
A disabled destination is told in the tenant's audit trail (`webhook.disabled`); its rows fail without a request.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit import repository as audit
from app.config import Settings
from app.core.logging import get_logger
from app.core.metrics import WEBHOOK_DELIVERIES, WEBHOOK_DESTINATIONS_DISABLED
from app.models import WebhookDelivery
from app.webhooks import repository
from app.webhooks.schedule import Decision, Verdict, decide
from app.webhooks.signing import attempt_headers, webhook_secret

log = get_logger(__name__)
for _outcome in ("delivered", "retry", "failed"):  # exported at 0 from the start
    WEBHOOK_DELIVERIES.labels(_outcome)
for _reason in ("gone", "failing"):
    WEBHOOK_DESTINATIONS_DISABLED.labels(_reason)

# A claim outlives the attempt it covers by this much (the database writes around the request).
_LEASE_MARGIN_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a row goes: the tenant's endpoint (`kind` endpoint, `key` the tenant id) or an alert rule's own URL
    (`kind` rule, `key` the rule id; None once the rule is deleted: then nobody's health is tracked)."""

    kind: repository.DestinationKind
    key: uuid.UUID | None
    url: str | None
    secret_version: int
    refusal: str | None = None  # why nothing is sent (no endpoint, disabled)


class _Superseded(Exception):
    """The row is no longer this claim's: its record is dropped."""


@dataclass(frozen=True, slots=True)
class Attempt:
    status_code: int | None
    retry_after: str | None
    error: str | None


class WebhookDeliverer:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        client: httpx.AsyncClient,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.client = client
        # `clock` schedules (tests inject one to walk through days of retries); `wall_clock` stamps
        # `webhook-timestamp`, which receivers compare with their own clock.
        self.clock = clock
        self.wall_clock = wall_clock
        self._slots = asyncio.Semaphore(settings.webhook_concurrency)

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.webhook_timeout_seconds + _LEASE_MARGIN_SECONDS)

    async def run_once(self) -> int:
        """Handle what is due now; returns the number of rows this instance claimed (sent, or failed unsent)."""
        now = self.clock()
        async with self.sessions() as session:
            due = await repository.due_deliveries(session, now, self.settings.webhook_batch_size)
        handled = await asyncio.gather(*(self._one(delivery) for delivery in due))
        return sum(handled)

    async def _one(self, delivery: WebhookDelivery) -> bool:
        async with self._slots:
            # From now, not from when the batch was read: a row may wait for a slot behind slow attempts.
            lease = self.clock() + self.lease
            async with self.sessions() as session, session.begin():
                if not await repository.claim(session, delivery.id, delivery.next_attempt_at, lease):
                    return False
            destination = await self._destination(delivery)
            if destination.refusal is not None or destination.url is None:
                attempt = Attempt(None, None, destination.refusal)
                decision = Decision(Verdict.FAILED)
            else:
                attempt = await self._post(delivery, destination)
                decision = decide(
                    status_code=attempt.status_code,
                    retry_after=attempt.retry_after,
                    attempts=delivery.attempts + 1,
                    schedule=self.settings.webhook_retry_schedule_seconds,
                    retry_after_max_seconds=self.settings.webhook_retry_after_max_seconds,
                    now=self.clock(),
                )
            await self._record(delivery, lease, destination, attempt, decision)
            return True

    async def _destination(self, delivery: WebhookDelivery) -> Destination:
        async with self.sessions() as session:
            endpoint = await repository.get_endpoint(session, delivery.tenant_id)
            # A rule's own URL is signed with the tenant's secret too (version 1 until an endpoint is set).
            version = 1 if endpoint is None else endpoint.secret_version
            if delivery.url is None:
                if endpoint is None:
                    return Destination("endpoint", delivery.tenant_id, None, version, "the tenant has no webhook")
                refusal = None
                if endpoint.disabled_at is not None:
                    refusal = f"the webhook endpoint was disabled at {_iso(endpoint.disabled_at)}"
                return Destination("endpoint", delivery.tenant_id, endpoint.url, version, refusal)
            rule = None
            if delivery.alert_event_id is not None:
                rule = await repository.rule_of_event(session, delivery.alert_event_id)
            if rule is None:
                return Destination("rule", None, delivery.url, version)
            refusal = None
            if rule.destination_disabled_at is not None:
                refusal = f"the alert rule's destination was disabled at {_iso(rule.destination_disabled_at)}"
            return Destination("rule", rule.id, delivery.url, version, refusal)

    async def _post(self, delivery: WebhookDelivery, destination: Destination) -> Attempt:
        assert destination.url is not None  # noqa: S101 - _one sends only to a destination with a URL
        body = orjson.dumps(delivery.payload)
        secret = webhook_secret(self.settings, delivery.tenant_id, destination.secret_version)
        headers = attempt_headers(secret, delivery.message_id, int(self.wall_clock()), delivery.event, body)
        try:
            # The whole exchange, connect to response headers, within the timeout (httpx's own timeouts are per
            # read, so a receiver trickling bytes could hold an attempt for ever); the body is never read.
            timeout = self.settings.webhook_timeout_seconds
            async with asyncio.timeout(timeout):
                post = self.client.stream("POST", destination.url, content=body, headers=headers, timeout=timeout)
                async with post as response:
                    status = response.status_code
                    retry_after = response.headers.get("retry-after")
        except (TimeoutError, httpx.TimeoutException):
            return Attempt(None, None, f"no response within {self.settings.webhook_timeout_seconds:g} s")
        except httpx.HTTPError as exc:
            return Attempt(None, None, f"{type(exc).__name__}: {exc}"[:500])
        return Attempt(status, retry_after, None if 200 <= status < 300 else f"HTTP {status}")

    async def _record(
        self, delivery: WebhookDelivery, lease: datetime, destination: Destination, attempt: Attempt, decision: Decision
    ) -> None:
        now = self.clock()
        verdict = decision.verdict
        error = attempt.error
        disabled: tuple[str, str] | None = None  # (reason, detail) when this attempt disabled its destination
        try:
            async with self.sessions() as session, session.begin():
                if destination.key is not None and destination.refusal is None and destination.url is not None:
                    disabled = await self._health(session, delivery, destination, attempt, verdict, now)
                    if disabled is not None and verdict is Verdict.RETRY:
                        verdict = Verdict.FAILED  # disabled by this very failure: no more attempts
                        error = f"{error}; destination disabled: {disabled[1]}"
                values: dict[str, Any] = {
                    "attempts": delivery.attempts + (0 if destination.refusal is not None else 1),
                    "last_attempt_at": now,
                    "last_status_code": attempt.status_code,
                    "last_error": error,
                }
                if verdict is Verdict.DELIVERED:
                    values |= {"status": repository.DELIVERED, "delivered_at": now, "next_attempt_at": now}
                elif verdict is Verdict.RETRY:
                    assert decision.next_attempt_at is not None  # noqa: S101 - decide() sets it for a retry
                    values["next_attempt_at"] = decision.next_attempt_at
                else:
                    values |= {"status": repository.FAILED, "next_attempt_at": now}
                if not await repository.finish(session, delivery.id, lease, values):
                    raise _Superseded  # rolls back the health marks and any audit event with it
                if verdict is Verdict.DELIVERED:
                    await repository.close_siblings(session, delivery.tenant_id, delivery.message_id, delivery.id, now)
        except _Superseded:
            # Another instance took the row over (this claim's lease ran out) or it was closed meanwhile: the
            # other record stands, and this attempt's outcome is dropped with everything it would have changed.
            log.warning("webhook.attempt_superseded", delivery_id=str(delivery.id))
            return
        outcome = "delivered" if verdict is Verdict.DELIVERED else "retry" if verdict is Verdict.RETRY else "failed"
        WEBHOOK_DELIVERIES.labels(outcome).inc()
        if disabled is not None:
            WEBHOOK_DESTINATIONS_DISABLED.labels(disabled[0]).inc()
            log.warning("webhook.disabled", tenant_id=str(delivery.tenant_id), delivery_id=str(delivery.id))
        log.info(
            "webhook.attempt",
            delivery_id=str(delivery.id),
            message_id=delivery.message_id,
            attempt=values["attempts"],
            status_code=attempt.status_code,
            outcome=outcome,
            error=error,
        )

    async def _health(
        self,
        session: AsyncSession,
        delivery: WebhookDelivery,
        destination: Destination,
        attempt: Attempt,
        verdict: Verdict,
        now: datetime,
    ) -> tuple[str, str] | None:
        """Update the destination's failing mark; returns (reason, detail) if this attempt disabled it, with the
        tenant's audit event added to the transaction."""
        assert destination.key is not None  # noqa: S101 - the caller checks
        if verdict is Verdict.DELIVERED:
            await repository.mark_succeeded(session, destination.kind, destination.key)
            return None
        if verdict is Verdict.GONE:
            if not await repository.disable(session, destination.kind, destination.key, now):
                return None
            reason, detail = "gone", "the receiver answered 410 Gone"
        else:
            days = self.settings.webhook_disable_after_days
            cutoff = now - timedelta(days=days)
            if not await repository.mark_failed(session, destination.kind, destination.key, now, cutoff):
                return None
            reason, detail = "failing", f"every attempt failed for {days:g} days (last: {attempt.error})"
        target = f"webhook:{delivery.tenant_id}" if destination.kind == "endpoint" else f"alert_rule:{destination.key}"
        audit.record(
            session,
            tenant_id=delivery.tenant_id,
            actor_key_id=None,
            action="webhook.disabled",
            target=target,
            request_id=None,
            details={
                "reason": reason,
                "detail": detail,
                "destination": "endpoint" if destination.kind == "endpoint" else "alert_rule",
                "url": destination.url,
                "delivery_id": str(delivery.id),
                "re_enable": "PUT /v1/webhook" if destination.kind == "endpoint" else "PATCH the rule's destination",
            },
        )
        return reason, detail


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
