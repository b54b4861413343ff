"""Alert conditions: a small typed JSON tree, parsed into frozen dataclasses with every error pointing at its node.

Grammar (one kind of node per object; unknown members are refused, so a misspelt key never silently changes what a
rule means):

- combinators `{"all": [node, …]}`, `{"any": [node, …]}`, `{"not": node}`;
- predicates `{"field": F, "op": OP, "value": V}`: `bias` takes `long|short|neutral` with `eq`, `ne`, `changes_to`;
  the numeric fields take a finite number with any op (`crosses_*` and `changes_to` compare this closed bar with
  the previous one);
- events `{"event": E, "direction": "bullish"|"bearish"}` confirmed at this bar's close (`direction` optional: either;
  equal highs / lows have none, their kind says the side);
- levels `{"level": "fibonacci", "ratio": R, "op": "crosses_above"|"crosses_below"}` (R one of the signal's
  retracement or extension ratios) and `{"level": "stop"|"target", "op": …}` (the signal's own stop, first target).

Pure: no I/O, no settings import; the bounds come in as arguments.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.analytics.fibonacci import DEFAULT_EXTENSIONS, DEFAULT_RETRACEMENTS
from app.core.errors import json_pointer

BIASES = ("long", "short", "neutral")
NUMERIC_FIELDS = ("score", "confidence", "close", "rsi", "cvd", "delta", "volume")
FIELDS = ("bias", *NUMERIC_FIELDS)
COMPARISONS = ("eq", "ne", "gt", "gte", "lt", "lte")
CROSSES = ("crosses_above", "crosses_below")
OPS = (*COMPARISONS, *CROSSES, "changes_to")
BIAS_OPS = ("eq", "ne", "changes_to")
EVENTS = (
    "bos",
    "choch",
    "fvg",
    "order_block",
    "liquidity_sweep",
    "equal_highs",
    "equal_lows",
    "cvd_divergence",
)
UNDIRECTED_EVENTS = ("equal_highs", "equal_lows")
DIRECTIONS = ("bullish", "bearish")
LEVELS = ("fibonacci", "stop", "target")
FIB_RATIOS = tuple(sorted({*DEFAULT_RETRACEMENTS, *DEFAULT_EXTENSIONS}))
KINDS = ("all", "any", "not", "field", "event", "level")
MAX_ERRORS = 20


@dataclass(frozen=True, slots=True)
class All:
    children: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    children: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Not:
    child: Condition


@dataclass(frozen=True, slots=True)
class Predicate:
    field: str
    op: str
    value: float | str


@dataclass(frozen=True, slots=True)
class Event:
    event: str
    direction: str | None


@dataclass(frozen=True, slots=True)
class Level:
    level: str
    op: str
    ratio: float | None


Condition = All | AnyOf | Not | Predicate | Event | Level


@dataclass(frozen=True, slots=True)
class ConditionError:
    pointer: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"pointer": self.pointer, "detail": self.detail}


class ConditionInvalid(ValueError):
    """The tree breaks the grammar or a bound; `errors` (at most MAX_ERRORS) point at the offending nodes."""

    def __init__(self, errors: Sequence[ConditionError]) -> None:
        super().__init__("; ".join(f"{e.pointer}: {e.detail}" for e in errors[:5]))
        self.errors = tuple(errors)


def _finite_number(value: Any) -> float | None:
    """The value as a finite float; None for anything else (booleans, strings, and integers beyond a double)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _choices(values: Sequence[object]) -> str:
    return ", ".join(str(v) for v in values)


class _Parser:
    def __init__(self, max_depth: int, max_nodes: int) -> None:
        self.max_depth = max_depth
        self.max_nodes = max_nodes
        self.nodes = 0
        self.errors: list[ConditionError] = []

    def fail(self, path: Sequence[str | int], detail: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(ConditionError(json_pointer(path), detail))

    def node(self, raw: Any, path: tuple[str | int, ...], depth: int) -> Condition | None:  # noqa: PLR0911
        self.nodes += 1
        if self.nodes > self.max_nodes:
            if self.nodes == self.max_nodes + 1:
                self.fail(path, f"the condition has more than {self.max_nodes} nodes")
            return None
        if not isinstance(raw, Mapping):
            self.fail(path, f"a condition node is an object with one of: {_choices(KINDS)}")
            return None
        kinds = [kind for kind in KINDS if kind in raw]
        if len(kinds) != 1:
            found = f"found {_choices(kinds)}" if kinds else "found none"
            self.fail(path, f"a condition node has exactly one of {_choices(KINDS)} ({found})")
            return None
        kind = kinds[0]
        if kind in ("all", "any", "not"):
            if depth >= self.max_depth:
                self.fail(path, f"conditions nest at most {self.max_depth} levels deep")
                return None
            return self.combinator(raw, kind, path, depth)
        if kind == "field":
            return self.predicate(raw, path)
        if kind == "event":
            return self.event(raw, path)
        return self.level(raw, path)

    def members(self, raw: Mapping[str, Any], path: tuple[str | int, ...], allowed: tuple[str, ...]) -> bool:
        unknown = [key for key in raw if key not in allowed]
        for key in unknown:
            self.fail((*path, key), f"unknown member (this node takes {_choices(allowed)})")
        return not unknown

    def combinator(
        self, raw: Mapping[str, Any], kind: str, path: tuple[str | int, ...], depth: int
    ) -> Condition | None:
        ok = self.members(raw, path, (kind,))
        value = raw[kind]
        if kind == "not":
            child = self.node(value, (*path, "not"), depth + 1)
            return Not(child) if ok and child is not None else None
        if not isinstance(value, list) or not value:
            self.fail((*path, kind), f"`{kind}` takes a non-empty array of conditions")
            return None
        children = [self.node(item, (*path, kind, i), depth + 1) for i, item in enumerate(value)]
        if not ok or any(child is None for child in children):
            return None
        parsed = tuple(child for child in children if child is not None)
        return All(parsed) if kind == "all" else AnyOf(parsed)

    def predicate(self, raw: Mapping[str, Any], path: tuple[str | int, ...]) -> Predicate | None:
        ok = self.members(raw, path, ("field", "op", "value"))
        field, op = raw.get("field"), raw.get("op")
        if field not in FIELDS:
            self.fail((*path, "field"), f"one of {_choices(FIELDS)}")
            return None
        allowed_ops = BIAS_OPS if field == "bias" else OPS
        if op not in allowed_ops:
            self.fail((*path, "op"), f"`{field}` takes the ops {_choices(allowed_ops)}")
            ok = False
        if "value" not in raw:
            self.fail(path, "a predicate needs a `value`")
            return None
        value = raw["value"]
        if field == "bias":
            if value not in BIASES:
                self.fail((*path, "value"), f"`bias` is one of {_choices(BIASES)}")
                return None
        else:
            value = _finite_number(value)
            if value is None:
                self.fail((*path, "value"), f"`{field}` compares with a finite number")
                return None
        if not ok:
            return None
        return Predicate(str(field), str(op), value)

    def event(self, raw: Mapping[str, Any], path: tuple[str | int, ...]) -> Event | None:
        event, direction = raw.get("event"), raw.get("direction")
        if event not in EVENTS:
            self.fail((*path, "event"), f"one of {_choices(EVENTS)}")
            return None
        if event in UNDIRECTED_EVENTS and "direction" in raw:
            self.fail((*path, "direction"), f"`{event}` has no direction (its kind names the side)")
            return None
        ok = self.members(raw, path, ("event", "direction"))
        if direction is not None and direction not in DIRECTIONS:
            self.fail((*path, "direction"), f"one of {_choices(DIRECTIONS)}, or left out for either")
            return None
        return Event(str(event), None if direction is None else str(direction)) if ok else None

    def level(self, raw: Mapping[str, Any], path: tuple[str | int, ...]) -> Level | None:
        level, op = raw.get("level"), raw.get("op")
        ok = self.members(raw, path, ("level", "op", "ratio") if level == "fibonacci" else ("level", "op"))
        if level not in LEVELS:
            self.fail((*path, "level"), f"one of {_choices(LEVELS)}")
            return None
        if op not in CROSSES:
            self.fail((*path, "op"), f"a level takes the ops {_choices(CROSSES)}")
            ok = False
        ratio: float | None = None
        if level == "fibonacci":
            # Exactly one of the ratios (JSON's 0.618 is the same double as the signal's), as the schema's enum says.
            ratio = _finite_number(raw.get("ratio"))
            if ratio not in FIB_RATIOS:
                self.fail((*path, "ratio"), f"one of the signal's Fibonacci ratios: {_choices(FIB_RATIOS)}")
                return None
        return Level(str(level), str(op), ratio) if ok else None


def parse_condition(
    raw: Any, *, max_depth: int, max_nodes: int, path: tuple[str | int, ...] = ("condition",)
) -> Condition:
    """The typed tree, or `ConditionInvalid` listing each bad node by its JSON pointer (`#/condition/all/2/op`)."""
    parser = _Parser(max_depth, max_nodes)
    parsed = parser.node(raw, path, 0)
    if parser.errors or parsed is None:
        raise ConditionInvalid(parser.errors or [ConditionError(json_pointer(path), "invalid condition")])
    return parsed


def from_canonical(raw: Mapping[str, Any]) -> Condition:
    """The tree back from `to_json`'s form, without the parser's checks: only for conditions that were parsed once
    already (the rule cache rebuilds a firing rule's condition with it, in ~2 us where `parse_condition` takes ~7)."""
    if "all" in raw:
        return All(tuple(from_canonical(child) for child in raw["all"]))
    if "any" in raw:
        return AnyOf(tuple(from_canonical(child) for child in raw["any"]))
    if "not" in raw:
        return Not(from_canonical(raw["not"]))
    if "field" in raw:
        return Predicate(raw["field"], raw["op"], raw["value"])
    if "event" in raw:
        return Event(raw["event"], raw.get("direction"))
    return Level(raw["level"], raw["op"], raw.get("ratio"))


def to_json(condition: Condition) -> dict[str, Any]:
    """The canonical JSON form (what is stored and returned): only the members the node has."""
    match condition:
        case All(children):
            return {"all": [to_json(child) for child in children]}
        case AnyOf(children):
            return {"any": [to_json(child) for child in children]}
        case Not(child):
            return {"not": to_json(child)}
        case Predicate(field, op, value):
            return {"field": field, "op": op, "value": value}
        case Event(event, direction):
            return {"event": event} if direction is None else {"event": event, "direction": direction}
        case Level(level, op, ratio):
            return {"level": level, "op": op} if ratio is None else {"level": level, "ratio": ratio, "op": op}


CONDITION_DESCRIPTION = (
    "A condition node: exactly one of `all`, `any`, `not`, `field` (predicate), `event`, `level`, nested at most "
    "DELTAFLOW_ALERT_CONDITION_MAX_DEPTH levels and DELTAFLOW_ALERT_CONDITION_MAX_NODES nodes. Each malformed node "
    "is a 422 `alert-rule-invalid` whose `errors` point at it (`#/condition/all/2/op`)."
)
