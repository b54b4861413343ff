"""Each market's parsed rules, per process: parsing every condition at every close would cost more than evaluating
it. Two invalidations, each covering the other's gap:

- the market's rules generation (a field of `alerts:rules:generations`, bumped by AlertService on every create,
  update and delete of one of its rules): a changed generation reloads that market, and only it, at its next close;
- the per-close state read, which lists every enabled rule of the market with its `updated_at`: a rule missing
  from the cache or cached with another `updated_at` (a write whose generation bump this process read before the
  write committed) reloads the market's rules from that same read's session.

So a close never evaluates a stale definition; only the fire state is read from the database every time.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from app.alerts import firing_repository as repository
from app.alerts.conditions import Condition, ConditionInvalid, parse_condition
from app.alerts.firing import MarketRules, MarketState, RuleDefinition
from app.alerts.frequency import Frequency
from app.core.logging import get_logger

log = get_logger(__name__)

Market = tuple[str, str, str]  # venue, symbol, timeframe


def _ms(moment: datetime) -> int:
    if moment.tzinfo is None:  # SQLite hands back naive UTC
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def definition(row: Any, conditions: dict[bytes, Condition] | None = None) -> RuleDefinition | None:
    """A stored rule, parsed with the widest bounds (a rule stays live after the operator lowers them); None for a
    condition that no longer parses (it cannot fire; logged). `conditions` interns them: rules with the same
    condition share one parsed object, which a close then evaluates once (`firing.Plan`)."""
    text = orjson.dumps(row.condition, option=orjson.OPT_SORT_KEYS)
    condition = None if conditions is None else conditions.get(text)
    if condition is None:
        try:
            condition = parse_condition(row.condition, max_depth=64, max_nodes=10_000)
        except ConditionInvalid:
            log.warning("alerts.rule_unparsable", rule_id=str(row.id))
            return None
        if conditions is not None:
            conditions[text] = condition
    return RuleDefinition(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        condition=condition,
        frequency=Frequency(row.frequency),
        cooldown_bars=row.cooldown_bars,
        expires_ms=None if row.expires_at is None else _ms(row.expires_at),
        created_ms=_ms(row.created_at),
        updated_at=row.updated_at,
        destination_type=row.destination_type,
        destination_url=row.destination_url,
    )


def _compile(rows: Iterable[Any]) -> MarketRules:
    loaded: list[RuleDefinition] = []
    versions: dict[uuid.UUID, datetime] = {}
    conditions: dict[bytes, Condition] = {}
    for row in rows:
        versions[row.id] = _aware(row.updated_at)
        rule = definition(row, conditions)
        if rule is not None:
            loaded.append(rule)
    return MarketRules(loaded, versions)


class RuleCache:
    def __init__(self) -> None:
        # Per market: the rules generation it was loaded at (read before the load), and its compiled rules.
        self._markets: dict[Market, tuple[int, MarketRules]] = {}
        self.loads = 0  # market loads from the database (tests read it)

    async def rules(self, session: AsyncSession, market: Market, state: MarketState, generation: int) -> MarketRules:
        """The market's parsed and compiled rules, valid for `state` (read in `session` a moment ago) and for the
        market's rules `generation` (read before `state`). Rules whose condition no longer parses are left out (they
        cannot fire), but their `updated_at` is kept, so they are skipped without a reload at every close."""
        cached = self._markets.get(market)
        if cached is not None and cached[0] == generation and cached[1].fresh(state):
            return cached[1]
        self.loads += 1
        rows = await repository.rule_rows(session, *market)
        # In a thread: parsing and compiling 10 000 rules takes ~0.3 s of CPU, which would hold every request back
        # on the event loop; in a thread the interpreter switches to the loop every few milliseconds.
        compiled = await asyncio.to_thread(_compile, rows)
        self._markets[market] = (generation, compiled)
        return compiled

    def forget(self, markets: Iterable[Market]) -> None:
        for market in markets:
            self._markets.pop(market, None)
