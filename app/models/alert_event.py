from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.models import Base
from app.models.types import UtcDateTime, utcnow


class AlertEvent(Base):
    """One firing of a rule at one bar close: what the tenant is told (webhook, stream, history).

    `(rule_id, bar_ms)` is unique: a rule fires at most once per closed bar, whichever instance evaluated the close
    and however often the close was evaluated again (an instance killed mid-close, a replayed announcement). The
    rule's name, market and timeframe are copied so the history survives an edit or a deletion of the rule (its
    `rule_id` then becomes null). `bar_ms` names the bar as the rule's `last_bar_ms` does (the snapshot's `close_time`).
    `snapshot` is the signal and candle values the condition saw; `sentence` says it in words."""

    __tablename__ = "alert_events"
    __table_args__ = (
        UniqueConstraint("rule_id", "bar_ms", name="uq_alert_events_rule_id_bar_ms"),
        # The history and the stream's resume read a tenant's events in (created_at, id) order.
        Index("ix_alert_events_tenant_id_created_at_id", "tenant_id", "created_at", "id"),
        Index("ix_alert_events_tenant_id_rule_id_bar_ms", "tenant_id", "rule_id", "bar_ms"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    rule_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("alert_rules.id", ondelete="SET NULL"))
    rule_name: Mapped[str] = mapped_column(String(200))
    venue: Mapped[str] = mapped_column(String(32))
    symbol: Mapped[str] = mapped_column(String(64))
    timeframe: Mapped[str] = mapped_column(String(8))
    bar_ms: Mapped[int] = mapped_column(BigInteger)
    sentence: Mapped[str] = mapped_column(Text)
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
