"""Replay: redeliver one alert event, recover a tenant's failed deliveries. Services only flush; the request's session
commits.

Decisions (where the issue is silent):
- Redeliver queues a new delivery of the event's document, due at once, carrying the event's `webhook-id`, to where
  the rule delivers now (its own URL, or the tenant's endpoint; a rule whose destination is `none`, or a deleted
  rule, goes where the event's last delivery went, else to the endpoint: an explicit redeliver asks for a delivery).
  A delivery of the event to that destination that is queued and not yet tried is returned instead of a new one, so
  a client repeating the call is not a duplicate at the receiver. A redelivery to a disabled destination is queued
  and fails without a request (its error says so): re-enable first (`PUT /v1/webhook`, or PATCH the rule's
  destination). Operators redeliver any tenant's event by id, as they read any tenant's rules.
- Recover requeues the tenant's `failed` deliveries created at or after `since` (one per message; see
  repository.requeue_failed), due at once with the schedule started afresh (`attempts` back to 0; the last error is
  kept until the next attempt). `since` must be within DELTAFLOW_WEBHOOK_RECOVER_MAX_AGE_DAYS and not in the future.
- Both answer 202 (the delivery happens later, in the worker) and are audited (`alert.redelivered` when a delivery
  was queued, `webhook.recovered` with the count).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.alerts.events import EVENT_TYPE, event_document, message_id
from app.alerts.history import AlertEventNotFound
from app.audit import repository as audit
from app.config import Settings
from app.core.errors import AppError
from app.keys.service import Actor
from app.models import AlertEvent
from app.webhooks import repository
from app.webhooks.schemas import RecoveryAccepted, RedeliveryAccepted


class RecoverSinceInvalid(AppError):
    slug = "webhook-recover-since-invalid"
    title = "Invalid recovery start"
    status = 422
    description = (
        "`since` is in the future or further back than DELTAFLOW_WEBHOOK_RECOVER_MAX_AGE_DAYS (14) days; "
        "deliveries older than that are not recovered."
    )


class ReplayService:
    def __init__(
        self, session: AsyncSession, settings: Settings, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.session = session
        self.settings = settings
        self.clock = clock

    async def redeliver(self, actor: Actor, event_id: uuid.UUID) -> RedeliveryAccepted:
        own = None if actor.principal.is_operator else actor.principal.tenant_id
        event = await repository.get_event(self.session, own, event_id)
        if event is None:
            raise AlertEventNotFound(f"Alert event {event_id} not found.")
        url = await self._destination_url(event)
        now = self.clock()
        delivery_id, queued = await repository.insert_redelivery(
            self.session,
            {
                "id": uuid.uuid4(),
                "tenant_id": event.tenant_id,
                "event": EVENT_TYPE,
                "payload": event_document(event),
                "status": repository.PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
                "message_id": message_id(event.id),
                "url": url,
                "alert_event_id": event.id,
            },
        )
        if queued:
            audit.record(
                self.session,
                tenant_id=event.tenant_id,
                actor_key_id=actor.principal.key_id,
                actor_user_id=actor.principal.user_id,
                action="alert.redelivered",
                target=f"alert_event:{event.id}",
                request_id=actor.request_id,
                details={"delivery_id": str(delivery_id), "destination": "url" if url else "endpoint"},
            )
        return RedeliveryAccepted(
            delivery_id=delivery_id, event_id=event.id, message_id=message_id(event.id), queued=queued
        )

    async def _destination_url(self, event: AlertEvent) -> str | None:
        """The URL a redelivery goes to (None: the tenant's endpoint)."""
        rule = await repository.rule_of_event(self.session, event.id)
        if rule is not None and rule.destination_type == "url" and rule.destination_url is not None:
            return rule.destination_url
        if rule is not None and rule.destination_type == "webhook":
            return None
        _, url = await repository.last_delivery_url(self.session, event.id)
        return url

    async def recover(self, actor: Actor, since: datetime) -> RecoveryAccepted:
        now = self.clock()
        oldest = now - timedelta(days=self.settings.webhook_recover_max_age_days)
        since = since.astimezone(UTC)
        if since > now or since < oldest:
            raise RecoverSinceInvalid(
                f"`since` must be between {_iso(oldest)} and now ({_iso(now)}); got {_iso(since)}.",
                extensions={
                    "errors": [{"parameter": "since", "in": "query", "detail": "out of the recoverable range"}]
                },
            )
        tenant_id = actor.principal.tenant_id
        count = await repository.requeue_failed(self.session, tenant_id, since, now)
        audit.record(
            self.session,
            tenant_id=tenant_id,
            actor_key_id=actor.principal.key_id,
            actor_user_id=actor.principal.user_id,
            action="webhook.recovered",
            target=f"webhook:{tenant_id}",
            request_id=actor.request_id,
            details={"since": _iso(since), "requeued": count},
        )
        return RecoveryAccepted(requeued=count, since=since)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
