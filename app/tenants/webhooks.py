"""Webhook delivery: pending rows are claimed, POSTed with an HMAC signature, and retried with backoff.

Signature header: `Deltaflow-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`, the
tenant's secret coming from `PUT /v1/webhook`. Retries back off exponentially (base · 2^(attempt-1), capped);
after `webhook_max_attempts` the delivery is marked failed. Every attempt's outcome is recorded on the row.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.core.logging import get_logger
from app.core.security import sign_webhook
from app.models import WebhookDelivery
from app.tenants import repository
from app.tenants.service import webhook_secret

log = get_logger(__name__)


class WebhookDeliverer:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        client: httpx.AsyncClient,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.client = client
        self.clock = clock

    def backoff(self, attempts: int) -> timedelta:
        seconds = self.settings.webhook_backoff_base_seconds * 2 ** max(attempts - 1, 0)
        return timedelta(seconds=min(seconds, self.settings.webhook_backoff_max_seconds))

    async def run_once(self) -> int:
        """Deliver what is due now; returns the number of attempts made."""
        now = self.clock()
        async with self.sessions() as session:
            due = await repository.due_deliveries(session, now, self.settings.webhook_batch_size)
        attempts = 0
        for delivery in due:
            if await self._claim(delivery, now):
                await self._attempt(delivery)
                attempts += 1
        return attempts

    async def _claim(self, delivery: WebhookDelivery, now: datetime) -> bool:
        lease = now + timedelta(seconds=self.settings.webhook_timeout_seconds * 3)
        async with self.sessions() as session, session.begin():
            return await repository.claim_delivery(session, delivery.id, delivery.next_attempt_at, lease)

    async def _attempt(self, delivery: WebhookDelivery) -> None:
        async with self.sessions() as session:
            endpoint = await repository.get_webhook(session, delivery.tenant_id)
        status_code: int | None = None
        error: str | None = None
        if endpoint is None:
            error = "the tenant has no webhook endpoint"
        else:
            body = orjson.dumps(delivery.payload)
            secret = webhook_secret(self.settings, delivery.tenant_id, endpoint.secret_version)
            headers = {
                "content-type": "application/json",
                "deltaflow-event": delivery.event,
                "deltaflow-delivery": str(delivery.id),
                "deltaflow-signature": sign_webhook(secret, int(time.time()), body),
                "user-agent": "Deltaflow-Webhooks/1",
            }
            try:
                response = await self.client.post(
                    endpoint.url, content=body, headers=headers, timeout=self.settings.webhook_timeout_seconds
                )
                status_code = response.status_code
                if not 200 <= status_code < 300:
                    error = f"HTTP {status_code}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:500]
        await self._record(delivery, status_code, error, permanent=endpoint is None)

    async def _record(
        self, delivery: WebhookDelivery, status_code: int | None, error: str | None, *, permanent: bool
    ) -> None:
        now = self.clock()
        async with self.sessions() as session, session.begin():
            row = await session.get(WebhookDelivery, delivery.id)
            if row is None:  # pragma: no cover - deliveries are never deleted while pending
                return
            row.attempts += 1
            row.last_attempt_at = now
            row.last_status_code = status_code
            row.last_error = error
            if error is None:
                row.status = "delivered"
                row.delivered_at = now
            elif permanent or row.attempts >= self.settings.webhook_max_attempts:
                row.status = "failed"
            else:
                row.next_attempt_at = now + self.backoff(row.attempts)
        log.info(
            "webhook.attempt",
            delivery_id=str(delivery.id),
            attempt=row.attempts,
            status_code=status_code,
            outcome="delivered" if error is None else row.status,
        )
