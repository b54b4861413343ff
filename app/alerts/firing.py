"""What one bar close does to one market's rules: a pure plan (no I/O, no clock) the repository writes in one
transaction.

A rule takes part in a close when it is enabled, existed before the bar closed (a rule created now never fires on
a bar that closed before it: the catch-up sweep looks a few bars back, and a trader is told of new closes only),
and has not expired by the bar's close time (the bar decides, not the moment of evaluation, so a late catch-up
gives the answer a prompt evaluation would have). A market's closes are evaluated in order, so "the last bar
evaluated" is one cursor per market (`alert_market_cursors`), not a column per rule: a close at or before the
cursor is refused whole, and the transaction advances the cursor with compare-and-set on the value the plan was
read with, so of two evaluations of one close only one commits anything.

To keep 10 000 rules on a market cheap:

- the market's rules are compiled once (`MarketRules`, cached as columns of plain values): their conditions into
  one `circuit.Circuit`, their frequency, cooldown, creation and expiry into arrays;
- a close evaluates the circuit once, steps every rule at once (`frequency.step_many`) and builds a sentence only
  for the rules that fire;
- only the rules whose stored state moves are written (`Plan.writes`): the result changed, the rule fired, or
  `once` disabled it. In the steady state a quiet rule costs no write at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import orjson

from app.alerts.circuit import Circuit
from app.alerts.conditions import Condition, from_canonical, to_json
from app.alerts.evaluator import BarSnapshot, describe_firing
from app.alerts.frequency import FREQUENCY_CODES, NEVER, Frequency, step_many

Ints = npt.NDArray[np.int64]
NO_EXPIRY = np.iinfo(np.int64).max


@dataclass(frozen=True, slots=True)
class RuleDefinition:
    """What a rule watches and where it goes: cached per process, valid while `updated_at` is unchanged."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    condition: Condition
    frequency: Frequency
    cooldown_bars: int
    expires_ms: int | None
    created_ms: int
    updated_at: datetime
    destination_type: str
    destination_url: str | None


@dataclass(frozen=True, slots=True)
class MarketState:
    """A market's cursor and its enabled rules' fire state, as read at the close (never cached: a close may move
    it), one array per column. `last_result` is 1, 0 or NEVER; `last_fired_bar_ms` a close time or NEVER."""

    cursor: int | None  # close time of the last bar evaluated on this market (None: none yet)
    ids: Sequence[uuid.UUID]
    updated_at: Sequence[datetime]
    last_result: npt.NDArray[np.int8]
    last_fired_bar_ms: Ints
    destination_disabled: npt.NDArray[np.bool_]

    def keys(self) -> list[int]:
        """The ids as integers: dictionaries keyed by them hash in C (a UUID's `__hash__` is Python code, and a
        close looks up every rule of the market)."""
        return [rule_id.int for rule_id in self.ids]

    def versions(self, keys: list[int]) -> dict[int, datetime]:
        return dict(zip(keys, self.updated_at, strict=True))


class MarketRules:
    """A market's parsed rules, compiled for evaluation at its closes. `versions` holds every enabled rule's
    `updated_at` as loaded, unparsable ones included, so `fresh` is one dict comparison.

    Kept as columns of plain values (ints, strings, bytes, datetimes, numpy arrays), not one object per rule: a
    process with 100 000 rules held ~415 000 more objects tracked by the cyclic garbage collector (two UUIDs, a
    definition and a condition tree per rule), and every full (generation 2) collection walked them with the event
    loop stopped: 300-430 ms pauses measured under `bench/bench_alerts_scale.py`. A list is one tracked object
    whatever it holds, and CPython stops tracking a dict of such values. A firing rule's `RuleDefinition` is built
    when it fires (`definition`), its condition rebuilt from the canonical JSON kept here (~2 us), once per
    distinct condition and close."""

    def __init__(self, rules: Sequence[RuleDefinition], versions: dict[uuid.UUID, datetime]) -> None:
        texts: dict[int, bytes] = {}  # by id(condition): the rule cache hands identical conditions out as one object
        self.ids = [rule.id.int for rule in rules]
        self.tenant_ids = [rule.tenant_id.int for rule in rules]
        self.names = [rule.name for rule in rules]
        self.conditions = [_text_of(rule.condition, texts) for rule in rules]
        self.frequencies = [rule.frequency for rule in rules]  # enum members: shared, nothing new per rule
        self.updated_at = [rule.updated_at for rule in rules]
        self.destinations = [(rule.destination_type, rule.destination_url) for rule in rules]
        self.index = {rule_id: position for position, rule_id in enumerate(self.ids)}  # see `MarketState.keys`
        self.versions = {rule_id.int: version for rule_id, version in versions.items()}
        self.circuit = Circuit([rule.condition for rule in rules])
        self.frequency = np.asarray([FREQUENCY_CODES[r.frequency] for r in rules], dtype=np.int8)
        # The numeric fields live in these arrays only; `definition` reads them back (NO_EXPIRY is None again).
        self.cooldown = np.asarray([rule.cooldown_bars for rule in rules], dtype=np.int64)
        self.created_ms = np.asarray([rule.created_ms for rule in rules], dtype=np.int64)
        self.expires_ms = np.asarray(
            [NO_EXPIRY if rule.expires_ms is None else rule.expires_ms for rule in rules], dtype=np.int64
        )

    def __len__(self) -> int:
        return len(self.ids)

    def fresh(self, state: MarketState) -> bool:
        """Every enabled rule of `state` is loaded at its `updated_at` (rules loaded but no longer in it, like a
        `once` rule that disabled itself, do not matter: they do not take part)."""
        return state.versions(state.keys()).items() <= self.versions.items()

    def condition(self, position: int, parsed: dict[bytes, Condition] | None = None) -> Condition:
        """The rule's condition, rebuilt from its canonical JSON (parsed and checked once already, when compiled);
        `parsed` shares one object per distinct condition among the caller's lookups."""
        text = self.conditions[position]
        found = None if parsed is None else parsed.get(text)
        if found is None:
            found = from_canonical(orjson.loads(text))
            if parsed is not None:
                parsed[text] = found
        return found

    def definition(self, position: int, parsed: dict[bytes, Condition] | None = None) -> RuleDefinition:
        destination_type, destination_url = self.destinations[position]
        expires = int(self.expires_ms[position])
        return RuleDefinition(
            id=uuid.UUID(int=self.ids[position]),
            tenant_id=uuid.UUID(int=self.tenant_ids[position]),
            name=self.names[position],
            condition=self.condition(position, parsed),
            frequency=self.frequencies[position],
            cooldown_bars=int(self.cooldown[position]),
            expires_ms=None if expires == NO_EXPIRY else expires,
            created_ms=int(self.created_ms[position]),
            updated_at=self.updated_at[position],
            destination_type=destination_type,
            destination_url=destination_url,
        )

    def definitions(self) -> list[RuleDefinition]:
        parsed: dict[bytes, Condition] = {}
        return [self.definition(position, parsed) for position in range(len(self))]


def _text_of(condition: Condition, texts: dict[int, bytes]) -> bytes:
    text = texts.get(id(condition))
    if text is None:
        text = texts[id(condition)] = orjson.dumps(to_json(condition), option=orjson.OPT_SORT_KEYS)
    return text


class Firing(NamedTuple):
    rule: RuleDefinition
    sentence: str
    deliver: bool  # an outbox row: not for `none` destinations nor a disabled own URL


class Writes(NamedTuple):
    """The rules whose stored state moves, with the state the plan was built on (the transaction writes a rule
    only if it still has it: an edit that reset the rule meanwhile wins)."""

    ids: list[uuid.UUID]
    read_result: list[int]  # 1, 0 or NEVER
    read_fired_bar_ms: list[int]  # a close time or NEVER
    result: list[bool]
    fired: list[bool]
    disable: list[bool]


@dataclass
class Plan:
    bar_ms: int
    cursor: int | None  # the market's cursor the plan was read with (the transaction's compare-and-set)
    evaluated: int = 0
    writes: Writes = field(default_factory=lambda: Writes([], [], [], [], [], []))
    firings: dict[uuid.UUID, Firing] = field(default_factory=dict)
    # Filled in batches by `describe_firings` (rule position in `MarketRules`, firing's state row).
    pending: list[tuple[int, int]] = field(default_factory=list)
    values: npt.NDArray[np.bool_] | None = None  # the circuit's node values at this bar
    lists: tuple[list[bool], list[int], list[bool]] | None = None  # `describe_firings`' views of the arrays
    sentences: dict[bytes, str] = field(default_factory=dict)  # a condition's JSON → its sentence at this bar
    parsed: dict[bytes, Condition] = field(default_factory=dict)  # the firing rules' conditions, parsed
    phrases: dict[Any, str] = field(default_factory=dict)  # leaf → its phrase at this bar


def participants(rules: MarketRules, state: MarketState, bar_ms: int) -> tuple[Ints, Ints]:
    """(state rows, rule positions) of the rules that take part in the close at `bar_ms`: none at or before the
    market's cursor; else the enabled rules with a parsed definition, created before the bar and not expired."""
    if state.cursor is not None and bar_ms <= state.cursor:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    index = rules.index
    positions = np.fromiter((index.get(i.int, -1) for i in state.ids), dtype=np.int64, count=len(state.ids))
    known = positions >= 0
    rows = np.flatnonzero(known)
    found = positions[known]
    alive = (rules.created_ms[found] < bar_ms) & (bar_ms < rules.expires_ms[found])
    return rows[alive], found[alive]


def plan_close(
    rules: MarketRules,
    state: MarketState,
    current: BarSnapshot,
    previous: BarSnapshot | None,
    bar_ms: int,
    interval_ms: int,
) -> Plan:
    """Evaluate and step every participating rule at `bar_ms`; the firings' sentences are left to
    `describe_firings` (in batches, so the caller can yield to the event loop between them)."""
    plan = Plan(bar_ms, state.cursor)
    rows, found = participants(rules, state, bar_ms)
    plan.evaluated = len(rows)
    if not len(rows):
        return plan
    values = plan.values = rules.circuit.evaluate(current, previous)
    result = values[rules.circuit.roots[found]]
    last_result, last_fired = state.last_result[rows], state.last_fired_bar_ms[rows]
    decided = step_many(
        last_result=last_result,
        last_fired_bar=last_fired,
        result=result,
        bar_close=bar_ms,
        interval_ms=interval_ms,
        frequency=rules.frequency[found],
        cooldown_bars=rules.cooldown[found],
    )
    moved = np.flatnonzero(decided.changed)
    ids = state.ids
    plan.writes = Writes(
        ids=[ids[row] for row in rows[moved].tolist()],
        read_result=last_result[moved].tolist(),
        read_fired_bar_ms=last_fired[moved].tolist(),
        result=result[moved].tolist(),
        fired=decided.fire[moved].tolist(),
        disable=decided.disable[moved].tolist(),
    )
    firing = np.flatnonzero(decided.fire)
    plan.pending = list(zip(found[firing].tolist(), rows[firing].tolist(), strict=True))
    return plan


def describe_firings(
    plan: Plan, rules: MarketRules, state: MarketState, current: BarSnapshot, start: int, stop: int
) -> None:
    """The sentence and delivery of `plan.pending[start:stop]` into `plan.firings`. Rules with the same condition
    share one sentence, and equal leaves one phrase."""
    if plan.values is None:  # nothing took part: nothing is pending
        return
    if plan.lists is None:  # Python lists once per close: numpy's per-item indexing costs more than the lookups
        plan.lists = (plan.values.tolist(), rules.circuit.roots.tolist(), state.destination_disabled.tolist())
    values, roots, disabled = plan.lists
    circuit, sentences, phrases = rules.circuit, plan.sentences, plan.phrases
    for position, row in plan.pending[start:stop]:
        rule = rules.definition(position, plan.parsed)
        text = rules.conditions[position]
        sentence = sentences.get(text)
        if sentence is None:
            holds = circuit.holds_by_node(rule.condition, roots[position], values)
            sentence = sentences[text] = describe_firing(rule.condition, current, None, holds, phrases)
        deliver = rule.destination_type == "webhook" or (
            rule.destination_type == "url" and rule.destination_url is not None and not disabled[row]
        )
        plan.firings[rule.id] = Firing(rule, sentence, deliver)


def empty_state(cursor: int | None = None) -> MarketState:
    return MarketState(cursor, [], [], np.zeros(0, np.int8), np.zeros(0, np.int64), np.zeros(0, dtype=bool))


def state_of(
    cursor: int | None,
    rows: Sequence[tuple[uuid.UUID, datetime, bool | None, int | None, bool]],
) -> MarketState:
    """A MarketState from (id, updated_at, last_result, last_fired_bar_ms, destination disabled) tuples."""
    if not rows:
        return empty_state(cursor)
    ids, updated, results, fired, disabled = zip(*rows, strict=True)
    return MarketState(
        cursor=cursor,
        ids=ids,
        updated_at=updated,
        last_result=np.asarray([NEVER if r is None else int(r) for r in results], dtype=np.int8),
        last_fired_bar_ms=np.asarray([NEVER if f is None else f for f in fired], dtype=np.int64),
        destination_disabled=np.asarray(disabled, dtype=bool),
    )
