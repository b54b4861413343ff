from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.models import Base
from app.models.types import UtcDateTime, utcnow

WEBHOOK_URL_MAX_LENGTH = 2048


class WebhookEndpoint(Base):
    """A tenant's webhook URL. The signing secret is derived from the server pepper and `secret_version`
    (never stored); bumping the version rotates it."""

    __tablename__ = "webhook_endpoints"

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    url: Mapped[str] = mapped_column(String(WEBHOOK_URL_MAX_LENGTH))
    secret_version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # Delivery health: the first failure of the current run of failures (cleared by a success), and when the
    # endpoint was disabled (a 410, or failing for `webhook_disable_after_days`); PUT /v1/webhook re-enables it.
    failing_since: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    disabled_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)


class WebhookDelivery(Base):
    """An outgoing webhook (the outbox row, written in the transaction that made the event) and its delivery
    attempts. `message_id` is the Standard Webhooks `webhook-id`, the same on every attempt and redelivery (the
    receiver's idempotency key). `url` is set for an alert rule's own destination; null means the tenant's endpoint
    as it is when the attempt is made. `alert_event_id` links an alert's delivery to its event."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        # Recover (`POST /v1/webhook/recover?since=`) reads a tenant's failed deliveries since a time.
        Index("ix_webhook_deliveries_tenant_id_created_at", "tenant_id", "created_at"),
        Index("ix_webhook_deliveries_alert_event_id", "alert_event_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    last_status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    message_id: Mapped[str] = mapped_column(String(64), default=lambda: f"msg_{uuid.uuid4().hex}")
    url: Mapped[str | None] = mapped_column(String(WEBHOOK_URL_MAX_LENGTH), default=None)
    alert_event_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("alert_events.id", ondelete="CASCADE"), default=None
    )
