"""Evaluate a condition on a closed bar, and say in words what it means and why it fired. Pure: no I/O, no clock.

Only closed bars are evaluated — a snapshot is taken of the last closed bar, never the forming one — so a result
never changes afterwards (no repainting). `crosses_*` and `changes_to` compare the bar with the previous closed
bar; without a previous bar (the rule's first evaluation) they are false. A field without a value (RSI while
warming up, a level the signal does not have) makes every predicate on it false, `ne` included.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.alerts.conditions import All, AnyOf, Condition, ConditionInvalid, Event, Level, Not, Predicate, parse_condition


@dataclass(frozen=True, slots=True)
class BarEvent:
    """An event confirmed at the bar's close: its kind, direction (None for equal highs / lows) and price (a zone's
    bottom and top; a level event has bottom == top)."""

    kind: str
    direction: str | None
    bottom: float
    top: float


@dataclass(frozen=True, slots=True)
class BarSnapshot:
    close_time: int
    bias: str
    score: float
    confidence: float
    close: float | None
    rsi: float | None = None
    cvd: float | None = None
    delta: float | None = None
    volume: float | None = None
    events: tuple[BarEvent, ...] = ()
    fibonacci: Mapping[float, float] = field(default_factory=dict)  # ratio → price
    stop: float | None = None
    target: float | None = None

    def value(self, name: str) -> float | str | None:
        found: float | str | None = getattr(self, name)
        return found

    def level(self, level: Level) -> float | None:
        if level.level == "fibonacci":
            return None if level.ratio is None else self.fibonacci.get(level.ratio)
        return self.stop if level.level == "stop" else self.target


def _compare(op: str, current: float | str, value: float | str) -> bool:
    if op == "eq":
        return current == value
    if op == "ne":
        return current != value
    # The parser allows order comparisons on numeric fields only.
    assert isinstance(current, float)  # noqa: S101
    assert isinstance(value, float)  # noqa: S101
    if op == "gt":
        return current > value
    if op == "gte":
        return current >= value
    if op == "lt":
        return current < value
    return current <= value  # lte


def _crossed(op: str, before: float, before_level: float, now: float, now_level: float) -> bool:
    """TradingView's `ta.crossover` / `ta.crossunder`: at or beyond the level before, strictly through it now."""
    if op == "crosses_above":
        return before <= before_level and now > now_level
    return before >= before_level and now < now_level


def _predicate(node: Predicate, current: BarSnapshot, previous: BarSnapshot | None) -> bool:
    now = current.value(node.field)
    if now is None:
        return False
    if node.op in ("eq", "ne", "gt", "gte", "lt", "lte"):
        return _compare(node.op, now, node.value)
    before = None if previous is None else previous.value(node.field)
    if before is None:
        return False
    if node.op == "changes_to":
        return before != node.value and now == node.value
    assert isinstance(before, float)  # noqa: S101 - crosses are numeric-only (the parser)
    assert isinstance(now, float)  # noqa: S101
    assert isinstance(node.value, float)  # noqa: S101
    return _crossed(node.op, before, node.value, now, node.value)


def _event(node: Event, current: BarSnapshot) -> bool:
    return any(e.kind == node.event and node.direction in (None, e.direction) for e in current.events)


def _level(node: Level, current: BarSnapshot, previous: BarSnapshot | None) -> bool:
    if previous is None:
        return False
    now_level, before_level = current.level(node), previous.level(node)
    if now_level is None or before_level is None or current.close is None or previous.close is None:
        return False
    return _crossed(node.op, previous.close, before_level, current.close, now_level)


def evaluate(condition: Condition, current: BarSnapshot, previous: BarSnapshot | None) -> bool:
    match condition:
        case All(children):
            return all(evaluate(child, current, previous) for child in children)
        case AnyOf(children):
            return any(evaluate(child, current, previous) for child in children)
        case Not(child):
            return not evaluate(child, current, previous)
        case Predicate():
            return _predicate(condition, current, previous)
        case Event():
            return _event(condition, current)
        case Level():
            return _level(condition, current, previous)


# --- words ---------------------------------------------------------------------------------------------------

_FIELD_NAMES = {"rsi": "RSI", "cvd": "CVD"}
_EVENT_NAMES = {
    "bos": "BOS",
    "choch": "CHoCH",
    "fvg": "FVG",
    "order_block": "order block",
    "liquidity_sweep": "liquidity sweep",
    "equal_highs": "equal highs",
    "equal_lows": "equal lows",
    "cvd_divergence": "CVD divergence",
}
_OP_WORDS = {
    "eq": "is",
    "ne": "is not",
    "gt": ">",
    "gte": "≥",
    "lt": "<",
    "lte": "≤",
    "crosses_above": "crosses above",
    "crosses_below": "crosses below",
    "changes_to": "changes to",
}
_CROSSED = {"crosses_above": "crossed above", "crosses_below": "crossed below"}


def number(value: float) -> str:
    """A price or value the way a trader reads it: thousands grouped by a space (`64 210`, `64 210.5`, `0.618`)."""
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 1000:
        text = f"{value:,.2f}".rstrip("0").rstrip(".")
        return text.replace(",", " ")
    return f"{value:.6g}"


def _value_text(value: float | str) -> str:
    return value if isinstance(value, str) else number(value)


def _level_name(node: Level) -> str:
    if node.level == "fibonacci":
        return f"the {number(node.ratio or 0.0)} Fibonacci level"
    return "the signal's stop" if node.level == "stop" else "the signal's first target"


def describe_condition(condition: Condition) -> str:
    """The rule in words: `bias changes to long and bullish CHoCH`."""
    match condition:
        case All(children) | AnyOf(children):
            joiner = " and " if isinstance(condition, All) else " or "
            parts = [_grouped(child) for child in children]
            return joiner.join(parts)
        case Not(child):
            return f"not {_grouped(child)}"
        case Predicate(name, op, value):
            return f"{_FIELD_NAMES.get(name, name)} {_OP_WORDS[op]} {_value_text(value)}"
        case Event(event, direction):
            name = _EVENT_NAMES[event]
            return name if direction is None else f"{direction} {name}"
        case Level(_, op, _):
            return f"close {_OP_WORDS[op]} {_level_name(condition)}"


def describe_stored(stored: Any) -> str:
    """The words for a stored (canonical) condition. Parsed with the widest bounds: a rule stays readable after the
    operator lowers the configured ones."""
    try:
        return describe_condition(parse_condition(stored, max_depth=64, max_nodes=10_000))
    except ConditionInvalid:
        return ""


def _grouped(condition: Condition) -> str:
    text = describe_condition(condition)
    return f"({text})" if isinstance(condition, All | AnyOf) and len(condition.children) > 1 else text


def _event_phrase(node: Event, current: BarSnapshot) -> str:
    found = next(e for e in current.events if e.kind == node.event and node.direction in (None, e.direction))
    name = _EVENT_NAMES[node.event]
    if node.event == "cvd_divergence":  # the wording: "CVD divergence bullish"
        return f"{name} {found.direction}"
    where = number(found.top) if found.bottom == found.top else f"{number(found.bottom)} to {number(found.top)}"
    return f"{name} at {where}" if found.direction is None else f"{found.direction} {name} at {where}"


def _leaf_phrase(node: Predicate | Event | Level, current: BarSnapshot) -> str:
    if isinstance(node, Event):
        return _event_phrase(node, current)
    if isinstance(node, Level):
        return f"close {_CROSSED[node.op]} {_level_name(node)} at {number(current.level(node) or 0.0)}"
    name = _FIELD_NAMES.get(node.field, node.field)
    now = current.value(node.field)
    if node.op == "changes_to":
        return f"{name} turned {_value_text(node.value)}"
    if node.field == "bias":
        return f"bias {_OP_WORDS[node.op]} {_value_text(node.value)}"
    shown = "" if now is None else f" ({_value_text(now)})"
    if node.op in _CROSSED:
        return f"{name} {_CROSSED[node.op]} {_value_text(node.value)}{shown}"
    return f"{name} {_OP_WORDS[node.op]} {_value_text(node.value)}{shown}"


def _reasons(
    condition: Condition, current: BarSnapshot, holds: Callable[[Condition], bool], phrases: dict[Any, str]
) -> list[str]:
    """Phrases for the parts that made the condition true, in the rule's order."""
    match condition:
        case All(children) | AnyOf(children):
            return [phrase for child in children if holds(child) for phrase in _reasons(child, current, holds, phrases)]
        case Not(child):
            return [f"not {_grouped(child)}"]
        case Predicate() | Event() | Level():
            phrase = phrases.get(condition)
            if phrase is None:
                phrase = phrases[condition] = _leaf_phrase(condition, current)
            return [phrase]


def describe_firing(
    condition: Condition,
    current: BarSnapshot,
    previous: BarSnapshot | None,
    holds: Mapping[int, bool] | None = None,
    phrases: dict[Any, str] | None = None,
) -> str:
    """Why a condition holds at this bar, for a person: `bias turned long: bullish CHoCH at 64 210, CVD divergence
    bullish` (the first reason leads, the others follow the colon). Call it only when `evaluate` is true. `holds`
    (`id(node)` → its value, from `circuit.Circuit.holds_by_node`) spares evaluating the parts again; `phrases`
    (leaf → phrase, kept by the caller for one bar) spares phrasing a leaf shared by several rules again."""
    phrases = {} if phrases is None else phrases
    if holds is None:
        reasons = _reasons(condition, current, lambda part: evaluate(part, current, previous), phrases)
    else:
        reasons = _reasons(condition, current, lambda part: holds[id(part)], phrases)
    reasons = reasons or [describe_condition(condition)]
    head, rest = reasons[0], reasons[1:]
    return f"{head}: {', '.join(rest)}" if rest else head
