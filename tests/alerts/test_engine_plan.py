"""The pure part of a close: which rules take part, which rules' state is written (only those whose state moves),
which firings get an outbox row; and the snapshot's JSON form (stored in events, kept in Redis as the next
`previous`)."""

from __future__ import annotations

import gc
import uuid
from datetime import UTC, datetime

from app.alerts.conditions import parse_condition
from app.alerts.evaluator import BarEvent, BarSnapshot
from app.alerts.firing import (
    MarketRules,
    MarketState,
    Plan,
    RuleDefinition,
    describe_firings,
    participants,
    plan_close,
    state_of,
)
from app.alerts.frequency import NEVER, Frequency
from app.alerts.snapshot_json import snapshot_document, snapshot_from_document

BAR = 1_700_000_060_000
MINUTE = 60_000
EDITED = datetime(2026, 1, 1, tzinfo=UTC)
SNAPSHOT = BarSnapshot(
    close_time=BAR,
    bias="long",
    score=0.4,
    confidence=0.7,
    close=64_210.5,
    rsi=None,
    cvd=-12.5,
    delta=3.0,
    volume=20.0,
    events=(BarEvent("choch", "bullish", 64_000.0, 64_000.0), BarEvent("equal_highs", None, 64_500.0, 64_510.0)),
    fibonacci={0.618: 63_900.0, 1.272: 65_000.0},
    stop=63_000.0,
    target=None,
)


def rule(*, created_ms: int = BAR - MINUTE, expires_ms: int | None = None, destination: str = "webhook",
         url: str | None = None, frequency: Frequency = Frequency.ONCE_PER_BAR,
         condition: object = None) -> RuleDefinition:  # fmt: skip
    parsed = parse_condition(condition or {"field": "volume", "op": "gte", "value": 0}, max_depth=8, max_nodes=64)
    return RuleDefinition(
        id=uuid.uuid4(), tenant_id=uuid.uuid4(), name="r", condition=parsed, frequency=frequency, cooldown_bars=0,
        expires_ms=expires_ms, created_ms=created_ms, updated_at=EDITED, destination_type=destination,
        destination_url=url,
    )  # fmt: skip


def market(rules: list[RuleDefinition], states: dict[uuid.UUID, tuple[bool | None, int | None, bool]],
           cursor: int | None = BAR - MINUTE) -> tuple[MarketRules, MarketState]:  # fmt: skip
    """The compiled rules and a state read with `cursor`: (last result, last fired bar, destination disabled) per
    rule (missing: never evaluated)."""
    versions = {r.id: r.updated_at for r in rules}
    rows = [(r.id, EDITED, *states.get(r.id, (None, None, False))) for r in rules]
    return MarketRules(rules, versions), state_of(cursor, rows)


def plan(rules: MarketRules, state: MarketState, previous: BarSnapshot | None = None) -> Plan:
    planned = plan_close(rules, state, SNAPSHOT, previous, BAR, MINUTE)
    describe_firings(planned, rules, state, SNAPSHOT, 0, len(planned.pending))
    return planned


def test_the_snapshot_round_trips_through_json() -> None:
    document = snapshot_document(SNAPSHOT)
    assert document["fibonacci"] == {"0.618": 63_900.0, "1.272": 65_000.0}
    assert document["events"][1] == {"kind": "equal_highs", "direction": None, "bottom": 64_500.0, "top": 64_510.0}
    assert document["rsi"] is None
    assert snapshot_from_document(document) == SNAPSHOT


def test_only_rules_alive_at_the_close_and_only_closes_past_the_cursor_take_part() -> None:
    live = rule()
    rules = [live, rule(created_ms=BAR), rule(expires_ms=BAR)]  # created at the close: too late; expired at it
    compiled, state = market(rules, {})
    assert [firing.rule.id for firing in plan(compiled, state).firings.values()] == [live.id]
    assert plan(compiled, state).evaluated == 1
    # A rule enabled but unknown to the compiled rules (its condition no longer parses) is skipped.
    unknown = state_of(BAR - MINUTE, [(uuid.uuid4(), EDITED, None, None, False)])
    assert plan(compiled, unknown).evaluated == 0
    for cursor in (BAR, BAR + MINUTE):  # this bar or a later one evaluated already: the close is refused whole
        seen = market(rules, {}, cursor=cursor)
        assert participants(*seen, BAR)[0].size == 0
        assert plan(*seen).evaluated == 0
        assert plan(*seen).writes.ids == []


def test_a_close_writes_only_the_rules_whose_state_moves() -> None:
    fires = [rule(), rule(destination="url", url="https://x.example/h"), rule(destination="none")]
    broken = rule(destination="url", url="https://y.example/h")
    quiet = rule(condition={"field": "volume", "op": "gt", "value": 1e9})
    still_quiet = rule(condition={"field": "volume", "op": "gt", "value": 1e9})
    held = rule(frequency=Frequency.ON_CHANGE)  # held at the previous close: no fire, nothing to write
    once = rule(frequency=Frequency.ONCE)
    late = rule()
    fired_before = BAR - MINUTE
    states: dict[uuid.UUID, tuple[bool | None, int | None, bool]] = {
        **{r.id: (True, fired_before, False) for r in [*fires, once]},
        broken.id: (True, fired_before, True),
        quiet.id: (True, None, False),  # the result falls: written
        still_quiet.id: (False, None, False),
        held.id: (True, fired_before, False),
    }
    compiled, state = market([*fires, broken, quiet, still_quiet, held, once, late], states)
    planned = plan(compiled, state)
    assert planned.evaluated == 9
    writes = {i: (read, fired_at, result, fired, disable) for i, read, fired_at, result, fired, disable in
              zip(*planned.writes, strict=True)}  # fmt: skip
    assert writes == {
        **{r.id: (1, fired_before, True, True, False) for r in [*fires, broken]},
        quiet.id: (1, NEVER, False, False, False),
        once.id: (1, fired_before, True, False, True),  # fired before (then re-enabled by hand): only disabled
        late.id: (NEVER, NEVER, True, True, False),  # never evaluated before
    }
    deliver = {rule_id: firing.deliver for rule_id, firing in planned.firings.items()}
    assert deliver == {fires[0].id: True, fires[1].id: True, fires[2].id: False, broken.id: False, late.id: True}
    assert planned.firings[late.id].sentence == "volume ≥ 0 (20)"


def test_compiled_rules_give_back_the_definitions_they_were_built_from() -> None:
    conditions = [
        {"all": [{"field": "bias", "op": "eq", "value": "long"}, {"not": {"event": "bos", "direction": "bearish"}}]},
        {"any": [{"level": "fibonacci", "ratio": 0.618, "op": "crosses_above"},
                 {"field": "rsi", "op": "lt", "value": 30}]},
        {"level": "stop", "op": "crosses_below"},
    ]  # fmt: skip
    rules = [
        rule(condition=conditions[0], expires_ms=BAR, destination="url", url="https://hook.example/a"),
        rule(condition=conditions[1], frequency=Frequency.ONCE, destination="none"),  # no expiry
        rule(condition=conditions[2], frequency=Frequency.ON_CHANGE),
    ]
    compiled, _ = market(rules, {})
    assert compiled.definitions() == rules
    assert len(compiled) == 3


def test_compiled_rules_hold_no_tracked_object_per_rule() -> None:
    """Every full garbage collection walks the tracked objects with the event loop stopped: 100 000 rules kept as
    objects (two UUIDs, a definition, a condition tree each) made those pauses 300-430 ms. The compiled form keeps
    columns of untracked values, so the objects it holds do not grow with the number of rules."""

    def compiled(count: int) -> MarketRules:
        rules = [rule(condition={"field": "close", "op": "gt", "value": 1000 + i}) for i in range(count)]
        return MarketRules(rules, {r.id: r.updated_at for r in rules})  # the definitions are freed on return

    def held(count: int) -> int:
        gc.collect()
        before = len(gc.get_objects())
        kept = compiled(count)
        gc.collect()
        assert len(kept) == count
        return len(gc.get_objects()) - before

    small, large = held(10), held(5000)
    assert large - small < 50, (small, large)
