"""All SQL of alert evaluation at bar close: which markets have rules, a market's rules and their fire state, and
the one transaction that writes a close's plan (the market's cursor, the new state of the rules whose state moved,
the events, the outbox rows).

Not filtered by tenant: the engine serves every tenant's rules of a market, and nothing here answers a caller.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, any_, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from app.alerts import firing_postgres
from app.alerts.events import EVENT_TYPE, FiredEvent, event_document, message_id
from app.alerts.firing import MarketState, Plan, state_of
from app.alerts.frequency import NEVER
from app.models import AlertEvent, AlertRule, WebhookDelivery
from app.models.alert_rule import AlertMarketCursor

_RULES = cast(Table, AlertRule.__table__)
_EVENTS = cast(Table, AlertEvent.__table__)
_DELIVERIES = cast(Table, WebhookDelivery.__table__)
_CURSORS = cast(Table, AlertMarketCursor.__table__)
# SQLite binds at most 32 766 variables per statement; Postgres takes the ids as one array parameter.
_SQLITE_CHUNK = 5000


def _market(venue: str, symbol: str, timeframe: str) -> ColumnElement[bool]:
    return (_RULES.c.venue == venue) & (_RULES.c.symbol == symbol) & (_RULES.c.timeframe == timeframe)


def _cursor_of(venue: str, symbol: str, timeframe: str) -> ColumnElement[bool]:
    return (_CURSORS.c.venue == venue) & (_CURSORS.c.symbol == symbol) & (_CURSORS.c.timeframe == timeframe)


async def markets_with_rules(session: AsyncSession) -> list[tuple[str, str, str]]:
    """(venue, symbol, timeframe) of every market with at least one enabled rule."""
    query = select(_RULES.c.venue, _RULES.c.symbol, _RULES.c.timeframe).where(_RULES.c.enabled.is_(True)).distinct()
    return [(row[0], row[1], row[2]) for row in await session.execute(query)]


async def market_state(session: AsyncSession, venue: str, symbol: str, timeframe: str) -> MarketState:
    """The market's cursor, then its enabled rules' fire state (the cursor first: a close committed between the
    two reads leaves the plan on the older cursor, which the transaction's compare-and-set then refuses)."""
    cursor = (
        await session.execute(select(_CURSORS.c.last_bar_ms).where(_cursor_of(venue, symbol, timeframe)))
    ).scalar()
    query = select(
        _RULES.c.id,
        _RULES.c.updated_at,
        _RULES.c.last_result,
        _RULES.c.last_fired_bar_ms,
        _RULES.c.destination_disabled_at.is_not(None),
    ).where(_market(venue, symbol, timeframe), _RULES.c.enabled.is_(True))
    rows = [(row[0], row[1], row[2], row[3], bool(row[4])) for row in await session.execute(query)]
    return state_of(cursor, rows)


async def rule_rows(session: AsyncSession, venue: str, symbol: str, timeframe: str) -> Sequence[Any]:
    """The enabled rules of a market, as the rule cache parses them."""
    query = select(
        _RULES.c.id,
        _RULES.c.tenant_id,
        _RULES.c.name,
        _RULES.c.condition,
        _RULES.c.frequency,
        _RULES.c.cooldown_bars,
        _RULES.c.expires_at,
        _RULES.c.created_at,
        _RULES.c.updated_at,
        _RULES.c.destination_type,
        _RULES.c.destination_url,
    ).where(_market(venue, symbol, timeframe), _RULES.c.enabled.is_(True))
    return (await session.execute(query)).all()


def _id_batches(session: AsyncSession, ids: list[uuid.UUID]) -> Iterator[tuple[ColumnElement[bool], dict[str, Any]]]:
    """`id` among `ids`, as few statements as the backend allows: one `= ANY(array)` on Postgres."""
    if session.get_bind().dialect.name == "postgresql":
        yield _RULES.c.id == any_(bindparam("ids", type_=postgresql.ARRAY(_RULES.c.id.type))), {"ids": ids}
        return
    for start in range(0, len(ids), _SQLITE_CHUNK):
        yield _RULES.c.id.in_(ids[start : start + _SQLITE_CHUNK]), {}


async def advance_cursor(session: AsyncSession, market: tuple[str, str, str], plan: Plan) -> bool:
    """Move the market's cursor from the plan's to its bar; False when another evaluation moved it first. The
    first statement of the close's transaction: on SQLite it takes the write lock, so nothing else writes until the
    commit; on Postgres a concurrent evaluation of the same close waits on the row, then finds it moved."""
    venue, symbol, timeframe = market
    if plan.cursor is None:
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        statement = (
            dialect.insert(_CURSORS)
            .values(venue=venue, symbol=symbol, timeframe=timeframe, last_bar_ms=plan.bar_ms)
            .on_conflict_do_nothing(index_elements=["venue", "symbol", "timeframe"])
            .returning(_CURSORS.c.last_bar_ms)
        )
    else:
        statement = (
            update(_CURSORS)
            .where(_cursor_of(venue, symbol, timeframe), _CURSORS.c.last_bar_ms == plan.cursor)
            .values(last_bar_ms=plan.bar_ms)
            .returning(_CURSORS.c.last_bar_ms)
        )
    return (await session.execute(statement)).first() is not None


def _postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


async def advance_rules(session: AsyncSession, plan: Plan) -> set[uuid.UUID]:
    """Write the new fire state of the rules whose state moves, each only if it is still enabled and still has
    the state the plan was built on (an edit that reset it, a deletion or a disable meanwhile wins). Returns the
    fired rules written (only those get events). Call it after `advance_cursor` succeeded, in the same transaction.
    Postgres: one statement (`firing_postgres.py`); SQLite (one writer at a time, held since `advance_cursor`):
    the rows read, compared, then updated in a statement per outcome."""
    writes = plan.writes
    if not writes.ids:
        return set()
    if _postgres(session):
        return await firing_postgres.advance_rules(session, writes, plan.bar_ms)
    expected = {
        rule_id: (result, fired)
        for rule_id, result, fired in zip(writes.ids, writes.read_result, writes.read_fired_bar_ms, strict=True)
    }
    current: dict[uuid.UUID, tuple[int, int]] = {}
    for among, params in _id_batches(session, writes.ids):
        query = select(_RULES.c.id, _RULES.c.last_result, _RULES.c.last_fired_bar_ms).where(
            among, _RULES.c.enabled.is_(True)
        )
        for row in await session.execute(query, params):
            current[row[0]] = (NEVER if row[1] is None else int(row[1]), NEVER if row[2] is None else row[2])
    groups: dict[tuple[bool, bool, bool], list[uuid.UUID]] = {}
    for rule_id, result, fired, disable in zip(writes.ids, writes.result, writes.fired, writes.disable, strict=True):
        if current.get(rule_id) == expected[rule_id]:
            groups.setdefault((result, fired, disable), []).append(rule_id)
    advanced: set[uuid.UUID] = set()
    for (result, fired, disable), ids in sorted(groups.items()):
        values: dict[str, Any] = {"last_result": result}
        if fired:
            values["last_fired_bar_ms"] = plan.bar_ms
            advanced.update(ids)
        if disable:
            values["enabled"] = False
        for among, params in _id_batches(session, ids):
            await session.execute(update(_RULES).where(among).values(**values), params)
    return advanced


async def insert_events(session: AsyncSession, events: list[FiredEvent]) -> list[FiredEvent]:
    """Insert one close's events; a rule's event for a bar that has one already is skipped (the unique key, the
    last line against a duplicate). Returns the inserted events."""
    if not events:
        return []
    if _postgres(session):
        inserted = await firing_postgres.insert_events(session, events)
    else:
        statement = sqlite.insert(_EVENTS).on_conflict_do_nothing(index_elements=["rule_id", "bar_ms"])
        rows = [event._asdict() for event in events]
        inserted = set((await session.execute(statement.returning(_EVENTS.c.id), rows)).scalars())
    return [e for e in events if e.id in inserted]


async def insert_deliveries(
    session: AsyncSession, deliveries: list[tuple[FiredEvent, str | None]], now: datetime
) -> None:
    """One outbox row per (event, own URL or None for the tenant's endpoint), in the close's transaction."""
    if not deliveries:
        return
    if _postgres(session):
        await firing_postgres.insert_deliveries(session, deliveries, now)
        return
    rows = [
        {
            "id": uuid.uuid4(),
            "tenant_id": event.tenant_id,
            "event": EVENT_TYPE,
            "payload": event_document(event),
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "message_id": message_id(event.id),
            "url": url,
            "alert_event_id": event.id,
        }
        for event, url in deliveries
    ]
    await session.execute(insert(_DELIVERIES), rows)


async def commit_plan(
    session: AsyncSession, market: tuple[str, str, str], plan: Plan, snapshot: dict[str, Any], now: datetime
) -> list[FiredEvent]:
    """The close's writes, in the caller's transaction: the cursor (nothing else when another evaluation moved
    it), the new state of the rules whose state moved, an event per fired rule written and an outbox row per
    delivered event. Returns the inserted events."""
    if not await advance_cursor(session, market, plan):
        return []
    advanced = await advance_rules(session, plan)
    venue, symbol, timeframe = market
    events = [
        FiredEvent(
            uuid.uuid4(),
            firing.rule.tenant_id,
            rule_id,
            firing.rule.name,
            venue,
            symbol,
            timeframe,
            plan.bar_ms,
            firing.sentence,
            snapshot,
            now,
        )
        for rule_id, firing in plan.firings.items()
        if rule_id in advanced
    ]
    inserted = await insert_events(session, events)
    deliveries = []
    for event in inserted:
        fired = plan.firings[event.rule_id] if event.rule_id is not None else None
        if fired is not None and fired.deliver:
            deliveries.append((event, fired.rule.destination_url if fired.rule.destination_type == "url" else None))
    await insert_deliveries(session, deliveries, now)
    return inserted
