"""The Postgres path of a close's writes (`firing_repository.py`): one statement per kind whatever the number of
rules, each row's values passed as arrays and joined with `unnest` (asyncpg encodes an array in C; a row per
parameter set costs SQLAlchemy and the driver ~100 µs each, which at 10 000 firings was most of the transaction).
The close's snapshot, the same in every event, is sent and serialised once. SQLite keeps the portable statements.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.alerts.events import EVENT_TYPE, FiredEvent, event_document, message_id
from app.alerts.firing import Writes

# Each rule written only if it is still enabled and still has the state the plan was read with (an edit that reset
# it meanwhile wins; on a concurrent update Postgres re-checks the condition on the new row version).
_ADVANCE = text(
    """
    UPDATE alert_rules AS r
    SET last_result = w.result,
        last_fired_bar_ms = CASE WHEN w.fired THEN CAST(:bar_ms AS bigint) ELSE r.last_fired_bar_ms END,
        enabled = NOT w.disable
    FROM unnest(CAST(:ids AS uuid[]), CAST(:read_result AS integer[]), CAST(:read_fired AS bigint[]),
                CAST(:result AS boolean[]), CAST(:fired AS boolean[]), CAST(:disable AS boolean[]))
         AS w(id, read_result, read_fired, result, fired, disable)
    WHERE r.id = w.id AND r.enabled
      AND coalesce(CAST(r.last_result AS integer), -1) = w.read_result
      AND coalesce(r.last_fired_bar_ms, -1) = w.read_fired
    RETURNING r.id, w.fired
    """
)
_EVENTS = text(
    """
    INSERT INTO alert_events (id, tenant_id, rule_id, rule_name, venue, symbol, timeframe, bar_ms, sentence,
                              snapshot, created_at)
    SELECT e.id, e.tenant_id, e.rule_id, e.rule_name, :venue, :symbol, :timeframe, CAST(:bar_ms AS bigint),
           e.sentence, CAST(:snapshot AS json), CAST(:now AS timestamptz)
    FROM unnest(CAST(:ids AS uuid[]), CAST(:tenants AS uuid[]), CAST(:rules AS uuid[]), CAST(:names AS text[]),
                CAST(:sentences AS text[])) AS e(id, tenant_id, rule_id, rule_name, sentence)
    ON CONFLICT (rule_id, bar_ms) DO NOTHING
    RETURNING id
    """
)
_DELIVERIES = text(
    """
    INSERT INTO webhook_deliveries (id, tenant_id, event, payload, status, attempts, next_attempt_at, created_at,
                                    message_id, url, alert_event_id)
    SELECT d.id, d.tenant_id, :event, CAST(d.payload AS json), 'pending', 0, CAST(:now AS timestamptz),
           CAST(:now AS timestamptz), d.message_id, d.url, d.alert_event_id
    FROM unnest(CAST(:ids AS uuid[]), CAST(:tenants AS uuid[]), CAST(:payloads AS text[]),
                CAST(:message_ids AS text[]), CAST(:urls AS text[]), CAST(:events AS uuid[]))
         AS d(id, tenant_id, payload, message_id, url, alert_event_id)
    """
)


async def advance_rules(session: AsyncSession, writes: Writes, bar_ms: int) -> set[uuid.UUID]:
    """Write `writes`; returns the fired rules written."""
    params = {
        "bar_ms": bar_ms,
        "ids": writes.ids,
        "read_result": writes.read_result,
        "read_fired": writes.read_fired_bar_ms,
        "result": writes.result,
        "fired": writes.fired,
        "disable": writes.disable,
    }
    return {row[0] for row in await session.execute(_ADVANCE, params) if row[1]}


async def insert_events(session: AsyncSession, events: Sequence[FiredEvent]) -> set[uuid.UUID]:
    """Insert one close's events (one market, one bar, one snapshot); returns the ids inserted (a rule's event for
    a bar that has one already is skipped: the unique key, the last line against a duplicate)."""
    first = events[0]
    params = {
        "venue": first.venue,
        "symbol": first.symbol,
        "timeframe": first.timeframe,
        "bar_ms": first.bar_ms,
        "snapshot": orjson.dumps(first.snapshot).decode(),
        "now": first.created_at,
        "ids": [e.id for e in events],
        "tenants": [e.tenant_id for e in events],
        "rules": [e.rule_id for e in events],
        "names": [e.rule_name for e in events],
        "sentences": [e.sentence for e in events],
    }
    return {row[0] for row in await session.execute(_EVENTS, params)}


async def insert_deliveries(
    session: AsyncSession, deliveries: Sequence[tuple[FiredEvent, str | None]], now: datetime
) -> None:
    params = {
        "event": EVENT_TYPE,
        "now": now,
        "ids": [uuid.uuid4() for _ in deliveries],
        "tenants": [event.tenant_id for event, _ in deliveries],
        "payloads": [orjson.dumps(event_document(event)).decode() for event, _ in deliveries],
        "message_ids": [message_id(event.id) for event, _ in deliveries],
        "urls": [url for _, url in deliveries],
        "events": [event.id for event, _ in deliveries],
    }
    await session.execute(_DELIVERIES, params)
