"""Rows for delivery tests, written straight into the database: a tenant's endpoint, alert events with their outbox
rows (as the engine writes them), and a clock the deliverer schedules by."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.alerts.events import EVENT_TYPE, event_document, message_id
from app.models import AlertEvent, WebhookDelivery, WebhookEndpoint


class Clock:
    def __init__(self, start: datetime | None = None) -> None:
        self.now = (start or datetime.now(UTC)).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)

    def catch_up(self) -> None:
        """Move to at least the real time (the API stamps rows with it)."""
        self.now = max(self.now, datetime.now(UTC))


Target = FastAPI | async_sessionmaker[AsyncSession]


def _sessions(target: Target) -> async_sessionmaker[AsyncSession]:
    """The app's sessions, or a session factory of its database (for a test driving a served process)."""
    if isinstance(target, FastAPI):
        factory: async_sessionmaker[AsyncSession] = target.state.session_factory
        return factory
    return target


async def set_endpoint(app: FastAPI, tenant_id: uuid.UUID, url: str) -> None:
    async with app.state.session_factory() as session, session.begin():
        session.add(WebhookEndpoint(tenant_id=tenant_id, url=url, secret_version=1, updated_at=datetime.now(UTC)))


async def add_event(
    app: Target,
    tenant_id: uuid.UUID,
    *,
    rule_id: uuid.UUID | None = None,
    url: str | None = None,
    bar_ms: int = 1_700_000_000_000,
    due_at: datetime | None = None,
    created_at: datetime | None = None,
    **delivery: Any,
) -> tuple[uuid.UUID, uuid.UUID]:
    """An alert event and its outbox row (`url`: a rule's own destination; None: the tenant's endpoint). Returns
    (event id, delivery id)."""
    created = created_at or datetime.now(UTC)
    async with _sessions(app)() as session, session.begin():
        event = AlertEvent(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            rule_id=rule_id,
            rule_name="btc turns long",
            venue="binance",
            symbol="BTCUSDT",
            timeframe="1m",
            bar_ms=bar_ms,
            sentence="bias turned long: bullish CHoCH at 64 210",
            snapshot={"bias": "long", "close": 64210.0},
            created_at=created,
        )
        session.add(event)
        await session.flush()
        row = WebhookDelivery(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            event=EVENT_TYPE,
            payload=event_document(event),
            message_id=message_id(event.id),
            url=url,
            alert_event_id=event.id,
            next_attempt_at=due_at or created,
            created_at=created,
            **delivery,
        )
        session.add(row)
        return event.id, row.id


async def add_notice(app: Target, tenant_id: uuid.UUID, *, created_at: datetime, **delivery: Any) -> uuid.UUID:
    """A non-alert delivery (a key-expiry notice's shape)."""
    async with _sessions(app)() as session, session.begin():
        row = WebhookDelivery(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            event="api_key.expiring",
            payload={"key_id": str(uuid.uuid4()), "threshold_days": 7},
            next_attempt_at=created_at,
            created_at=created_at,
            **delivery,
        )
        session.add(row)
        return row.id


async def rows(app: Target, model: type[Any], **filters: object) -> list[Any]:
    async with _sessions(app)() as session:
        query: Any = select(model).filter_by(**filters)
        return list((await session.execute(query)).scalars().all())


async def one(app: FastAPI, model: type[Any], key: object) -> Any:
    async with app.state.session_factory() as session:
        return await session.get(model, key)
