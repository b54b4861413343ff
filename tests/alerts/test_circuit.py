"""The vectorised evaluation of a close agrees with the reference, rule by rule: the compiled circuit with
`evaluate` (and its sentences with `describe_firing`'s own evaluation), `step_many` with `step`."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from app.alerts.circuit import Circuit
from app.alerts.conditions import (
    BIASES,
    DIRECTIONS,
    EVENTS,
    FIB_RATIOS,
    NUMERIC_FIELDS,
    from_canonical,
    parse_condition,
    to_json,
)
from app.alerts.evaluator import BarEvent, BarSnapshot, describe_firing, evaluate
from app.alerts.frequency import FREQUENCY_CODES, NEVER, FireState, Frequency, step, step_many

MINUTE = 60_000
BAR = 1_700_000_040_000
# Few distinct thresholds, near the drawn values: leaves repeat (shared by rules) and comparisons go both ways.
NUMBERS = st.sampled_from([-1.0, 0.0, 0.5, 1.0, 2.0, 60.0, 100.0])
MAYBE = st.none() | NUMBERS | st.just(math.nan)

leaves = st.one_of(
    st.builds(
        lambda f, op, v: {"field": f, "op": op, "value": v},
        st.sampled_from(NUMERIC_FIELDS),
        st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte", "crosses_above", "crosses_below", "changes_to"]),
        NUMBERS,
    ),
    st.builds(
        lambda op, v: {"field": "bias", "op": op, "value": v},
        st.sampled_from(["eq", "ne", "changes_to"]),
        st.sampled_from(BIASES),
    ),
    st.builds(
        lambda e, d: {"event": e, "direction": d}, st.sampled_from(["bos", "choch", "fvg"]), st.sampled_from(DIRECTIONS)
    ),
    st.builds(lambda e: {"event": e}, st.sampled_from(EVENTS)),
    st.builds(
        lambda r, op: {"level": "fibonacci", "ratio": r, "op": op},
        st.sampled_from(FIB_RATIOS[:3]),
        st.sampled_from(["crosses_above", "crosses_below"]),
    ),
    st.builds(
        lambda lv, op: {"level": lv, "op": op},
        st.sampled_from(["stop", "target"]),
        st.sampled_from(["crosses_above", "crosses_below"]),
    ),
)
conditions = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.builds(lambda c: {"all": c}, st.lists(children, min_size=1, max_size=4)),
        st.builds(lambda c: {"any": c}, st.lists(children, min_size=1, max_size=4)),
        st.builds(lambda c: {"not": c}, children),
    ),
    max_leaves=12,
)


@st.composite
def snapshots(draw: st.DrawFn, close_time: int) -> BarSnapshot:
    events = draw(st.lists(st.builds(BarEvent, st.sampled_from(EVENTS), st.sampled_from([*DIRECTIONS, None]),
                                     NUMBERS, NUMBERS), max_size=3))  # fmt: skip
    fibonacci = {ratio: draw(NUMBERS) for ratio in draw(st.lists(st.sampled_from(FIB_RATIOS[:3]), max_size=3))}
    return BarSnapshot(
        close_time=close_time, bias=draw(st.sampled_from(BIASES)), score=draw(NUMBERS | st.just(math.nan)),
        confidence=draw(NUMBERS), close=draw(MAYBE), rsi=draw(MAYBE), cvd=draw(MAYBE), delta=draw(MAYBE),
        volume=draw(MAYBE), events=tuple(events), fibonacci=fibonacci, stop=draw(MAYBE), target=draw(MAYBE),
    )  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    raw=st.lists(conditions, min_size=1, max_size=12),
    current=snapshots(BAR),
    previous=st.none() | snapshots(BAR - MINUTE),
)
def test_the_circuit_agrees_with_evaluate_and_its_sentences_with_describe_firing(
    raw: list[Any], current: BarSnapshot, previous: BarSnapshot | None
) -> None:
    parsed = [parse_condition(c, max_depth=64, max_nodes=10_000) for c in raw]
    circuit = Circuit(parsed)
    values = circuit.evaluate(current, previous)
    results = values[circuit.roots].tolist()
    assert results == [evaluate(c, current, previous) for c in parsed]
    for position, condition in enumerate(parsed):
        if results[position]:
            holds = circuit.holds_by_node(condition, int(circuit.roots[position]), values.tolist())
            assert describe_firing(condition, current, None, holds) == describe_firing(condition, current, previous)


def test_a_circuit_can_say_a_rule_does_not_hold() -> None:
    """The agreement above is not vacuous: a rule that fails, in a circuit with one that holds."""
    parsed = [parse_condition(c, max_depth=8, max_nodes=64) for c in (
        {"all": [{"field": "volume", "op": "gt", "value": 1}, {"not": {"field": "bias", "op": "eq", "value": "long"}}]},
        {"any": [{"field": "volume", "op": "gt", "value": 100}, {"field": "rsi", "op": "crosses_above", "value": 50}]},
    )]  # fmt: skip
    current = BarSnapshot(BAR, "short", 0.0, 0.0, 1.0, rsi=55.0, volume=2.0)
    previous = BarSnapshot(BAR - MINUTE, "short", 0.0, 0.0, 1.0, rsi=45.0, volume=2.0)
    circuit = Circuit(parsed)
    assert circuit.evaluate(current, previous)[circuit.roots].tolist() == [True, True]
    assert circuit.evaluate(current, None)[circuit.roots].tolist() == [True, False]


def test_crosses_start_at_the_level_and_end_strictly_through_it() -> None:
    """TradingView's `ta.crossover`: at or beyond the level before, strictly through it now (the edges by hand:
    random draws rarely land exactly on them)."""
    ops = ("crosses_above", "crosses_below", "changes_to")
    parsed = [parse_condition({"field": "rsi", "op": op, "value": 50}, max_depth=8, max_nodes=64) for op in ops]
    circuit = Circuit(parsed)
    for before, now in [(50.0, 50.0), (50.0, 51.0), (49.0, 50.0), (50.0, 49.0), (51.0, 50.0), (49.0, 51.0)]:
        current = BarSnapshot(BAR, "long", 0.0, 0.0, 1.0, rsi=now)
        previous = BarSnapshot(BAR - MINUTE, "long", 0.0, 0.0, 1.0, rsi=before)
        expected = [evaluate(c, current, previous) for c in parsed]
        assert circuit.evaluate(current, previous)[circuit.roots].tolist() == expected, (before, now)
    assert [evaluate(c, current, previous) for c in parsed] == [True, False, False]  # 49 → 51: above only


@settings(max_examples=300, deadline=None)
@given(
    rules=st.lists(
        st.tuples(
            st.sampled_from(list(Frequency)),
            st.integers(0, 3),  # cooldown
            st.none() | st.booleans(),  # last result
            st.none() | st.integers(1, 6),  # bars since the last fire
            st.booleans(),  # this close's result
        ),
        min_size=1,
        max_size=30,
    )
)
def test_step_many_agrees_with_step(rules: list[tuple[Frequency, int, bool | None, int | None, bool]]) -> None:
    expected = []
    for frequency, cooldown, last, since, result in rules:
        fired_bar = None if since is None else BAR - since * MINUTE
        before = FireState(BAR - MINUTE, last, fired_bar)
        decision = step(before, result=result, bar_close=BAR, interval_ms=MINUTE, frequency=frequency,
                        cooldown_bars=cooldown)  # fmt: skip
        changed = decision.state != FireState(BAR, last, fired_bar)
        expected.append((decision.fire, decision.disable, changed or decision.disable))
    decided = step_many(
        last_result=np.asarray([NEVER if r[2] is None else int(r[2]) for r in rules], dtype=np.int8),
        last_fired_bar=np.asarray([NEVER if r[3] is None else BAR - r[3] * MINUTE for r in rules], dtype=np.int64),
        result=np.asarray([r[4] for r in rules], dtype=bool),
        bar_close=BAR,
        interval_ms=MINUTE,
        frequency=np.asarray([FREQUENCY_CODES[r[0]] for r in rules], dtype=np.int8),
        cooldown_bars=np.asarray([r[1] for r in rules], dtype=np.int64),
    )
    got = list(zip(decided.fire.tolist(), decided.disable.tolist(), decided.changed.tolist(), strict=True))
    assert got == expected


@settings(max_examples=200, deadline=None)
@given(raw=conditions)
def test_a_condition_comes_back_whole_from_its_canonical_json(raw: Any) -> None:
    """The rule cache keeps a rule's condition as canonical JSON and rebuilds it, unchecked, when the rule fires."""
    parsed = parse_condition(raw, max_depth=64, max_nodes=10_000)
    stored = orjson.dumps(to_json(parsed), option=orjson.OPT_SORT_KEYS)
    assert from_canonical(orjson.loads(stored)) == parsed
