from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.models import Base
from app.models.types import UtcDateTime, utcnow

ALERT_DESTINATION_URL_MAX_LENGTH = 2048


class AlertRule(Base):
    """A tenant's alert: a condition on one market's closed bars, how often it may fire, and where it goes.

    `condition` is the canonical JSON of the parsed tree (app/alerts/conditions.py). `destination_type` is
    `webhook` (the tenant's endpoint, `PUT /v1/webhook`), `url` (its own, `destination_url`) or `none` (recorded
    and streamed only). `last_result` and `last_fired_bar_ms` are the frequency state machine's
    (app/alerts/frequency.py) as of the market's cursor (`AlertMarketCursor`); an edit of what the rule watches
    resets them."""

    __tablename__ = "alert_rules"
    __table_args__ = (
        Index("ix_alert_rules_tenant_id_created_at", "tenant_id", "created_at"),
        # Bar closes look rules up by market: only the rules of the closing market are touched.
        Index("ix_alert_rules_venue_symbol_timeframe", "venue", "symbol", "timeframe"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    venue: Mapped[str] = mapped_column(String(32))
    symbol: Mapped[str] = mapped_column(String(64))
    timeframe: Mapped[str] = mapped_column(String(8))
    condition: Mapped[dict[str, Any]] = mapped_column(JSON)
    frequency: Mapped[str] = mapped_column(String(16))
    cooldown_bars: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    destination_type: Mapped[str] = mapped_column(String(16), default="webhook")
    destination_url: Mapped[str | None] = mapped_column(String(ALERT_DESTINATION_URL_MAX_LENGTH), default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_result: Mapped[bool | None] = mapped_column(Boolean, default=None)
    last_fired_bar_ms: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # A `url` destination's delivery health, as the tenant endpoint's (`WebhookEndpoint.failing_since`,
    # `disabled_at`): a disabled destination gets no deliveries (events are still recorded and streamed) until the
    # rule's destination is set again.
    destination_failing_since: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    destination_disabled_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)


class AlertMarketCursor(Base):
    """The close time of the last bar evaluated on a market (venue, symbol, timeframe), for all its rules at once.

    A market's closes are evaluated in order and every rule of the market takes part in each, so one row per
    market says what a column per rule would, and a close writes it once instead of once per rule. The close's
    transaction advances it with compare-and-set: of two evaluations of one close only one commits."""

    __tablename__ = "alert_market_cursors"

    venue: Mapped[str] = mapped_column(String(32), primary_key=True)
    symbol: Mapped[str] = mapped_column(String(64), primary_key=True)
    timeframe: Mapped[str] = mapped_column(String(8), primary_key=True)
    last_bar_ms: Mapped[int] = mapped_column(BigInteger)
