"""Many rules' conditions compiled into one circuit, evaluated at a close with a few numpy operations instead of one
tree walk per rule. Pure: no I/O.

Compiled once per market when the rule cache loads its rules (`firing.MarketRules`), evaluated at every close:

- the leaves are made distinct by value (`Predicate`, `Event`, `Level` are frozen: equal leaves hash alike), so
  rules that share a predicate share its evaluation; the numeric predicates are grouped by (field, op) and each
  group is one vector comparison of the bar's value with every threshold; the rest (bias, events, levels: a few
  distinct ones whatever the number of rules) go through `evaluator.evaluate`, the reference;
- every node of every rule gets a slot in one boolean array, numbered in pre-order per rule (a node's children
  follow it), and the combinators are computed by height, one `logical_and/or.reduceat` per (height, kind);
- the result of a rule is its root's slot. `holds_by_node` gives a firing rule's node results back, so its sentence
  (`evaluator.describe_firing`) is built from the same values instead of evaluating the tree again.

`evaluate` stays the definition: the circuit is tested against it on random trees and bars.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.alerts.conditions import All, AnyOf, Condition, Event, Level, Not, Predicate
from app.alerts.evaluator import BarSnapshot, evaluate

Bools = npt.NDArray[np.bool_]
Ints = npt.NDArray[np.int64]
Leaf = Predicate | Event | Level

_COMPARE = {
    "eq": np.equal,
    "ne": np.not_equal,
    "gt": np.greater,
    "gte": np.greater_equal,
    "lt": np.less,
    "lte": np.less_equal,
}
_CROSSES = ("crosses_above", "crosses_below")


@dataclass(frozen=True, slots=True)
class _Group:
    """Numeric predicates on one (field, op): their leaf numbers and thresholds."""

    field: str
    op: str
    leaves: Ints
    values: npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class _Stage:
    """The combinators of one kind at one height: `nodes[i]` reduces `children[starts[i]:starts[i + 1]]`."""

    kind: str  # "all", "any" or "not"
    nodes: Ints
    children: Ints
    starts: Ints


class _Builder:
    def __init__(self) -> None:
        self.leaf_numbers: dict[Leaf, int] = {}
        self.leaf_nodes: list[int] = []  # node slot of each leaf occurrence
        self.leaf_of: list[int] = []  # its distinct leaf number
        self.heights: list[int] = []  # per node
        self.kinds: list[str] = []  # per node: "leaf", "all", "any", "not"
        self.children: list[list[int]] = []  # per node

    def node(self, condition: Condition) -> int:
        slot = len(self.heights)
        self.heights.append(0)
        self.kinds.append("leaf")
        self.children.append([])
        match condition:
            case All(children) | AnyOf(children):
                kids = [self.node(child) for child in children]
                self.kinds[slot] = "all" if isinstance(condition, All) else "any"
            case Not(child):
                kids = [self.node(child)]
                self.kinds[slot] = "not"
            case Predicate() | Event() | Level():
                number = self.leaf_numbers.setdefault(condition, len(self.leaf_numbers))
                self.leaf_nodes.append(slot)
                self.leaf_of.append(number)
                return slot
        self.children[slot] = kids
        self.heights[slot] = 1 + max(self.heights[kid] for kid in kids)
        return slot


class Circuit:
    """The conditions of `conditions` (one per rule, in the caller's order), compiled."""

    def __init__(self, conditions: Sequence[Condition]) -> None:
        builder = _Builder()
        roots = [builder.node(condition) for condition in conditions]
        self.roots: Ints = np.asarray(roots, dtype=np.int64)
        self.size = len(builder.heights)
        self._leaf_nodes: Ints = np.asarray(builder.leaf_nodes, dtype=np.int64)
        self._leaf_of: Ints = np.asarray(builder.leaf_of, dtype=np.int64)
        self._leaf_count = len(builder.leaf_numbers)
        numeric: dict[tuple[str, str], list[tuple[int, float]]] = {}
        self._others: list[tuple[int, Leaf]] = []
        for leaf, number in builder.leaf_numbers.items():
            if isinstance(leaf, Predicate) and isinstance(leaf.value, float):
                numeric.setdefault((leaf.field, leaf.op), []).append((number, leaf.value))
            else:
                self._others.append((number, leaf))
        self._groups = [
            _Group(field, op, np.asarray([n for n, _ in pairs], np.int64), np.asarray([v for _, v in pairs], float))
            for (field, op), pairs in numeric.items()
        ]
        self._stages = _stages(builder)
        # Subtree sizes (pre-order: a node's subtree is the slots from it to it + size - 1), to walk a rule's tree.
        self._sizes = _subtree_sizes(builder)

    def evaluate(self, current: BarSnapshot, previous: BarSnapshot | None) -> Bools:
        """Every node's value at this bar (index it with `roots` for the rules' results)."""
        leaves = np.zeros(self._leaf_count, dtype=bool)
        for group in self._groups:
            leaves[group.leaves] = _numeric(group, current, previous)
        for number, leaf in self._others:
            leaves[number] = evaluate(leaf, current, previous)
        values = np.zeros(self.size, dtype=bool)
        values[self._leaf_nodes] = leaves[self._leaf_of]
        for stage in self._stages:
            if stage.kind == "not":
                values[stage.nodes] = ~values[stage.children]
            else:
                reduce = np.logical_and if stage.kind == "all" else np.logical_or
                values[stage.nodes] = reduce.reduceat(values[stage.children], stage.starts)
        return values

    def holds_by_node(self, condition: Condition, root: int, values: Sequence[bool]) -> dict[int, bool]:
        """`id(node)` → its value, for every combinator's child in the rule whose tree is `condition` at slot
        `root` (what `describe_firing` asks of each part; nothing for a lone leaf). `values` as a list: numpy's
        per-item indexing costs more than the lookups."""
        found: dict[int, bool] = {}
        if isinstance(condition, Predicate | Event | Level):
            return found
        stack: list[tuple[Condition, int]] = [(condition, root)]
        sizes = self._sizes
        while stack:
            node, slot = stack.pop()
            found[id(node)] = values[slot]
            match node:
                case All(children) | AnyOf(children):
                    child_slot = slot + 1
                    for child in children:
                        stack.append((child, child_slot))
                        child_slot += sizes[child_slot]
                case Not(child):
                    stack.append((child, slot + 1))
                case _:
                    pass
        return found


def _numeric(group: _Group, current: BarSnapshot, previous: BarSnapshot | None) -> Bools:
    """`evaluator._predicate` over every threshold of the group at once (numpy compares doubles as Python does,
    NaN included). Written as threshold-versus-value comparisons: `before <= v` is `v >= before`."""
    now = current.value(group.field)
    values = group.values
    if now is None:
        return np.zeros(len(values), dtype=bool)
    now = float(now)
    if group.op in _COMPARE:
        compared: Bools = _COMPARE[group.op](now, values)
        return compared
    before = None if previous is None else previous.value(group.field)
    if before is None:
        return np.zeros(len(values), dtype=bool)
    before = float(before)
    crossed: Bools
    if group.op == "changes_to":
        crossed = (values != before) & (values == now)
    elif group.op == _CROSSES[0]:
        crossed = (values >= before) & (values < now)
    else:
        crossed = (values <= before) & (values > now)
    return crossed


def _stages(builder: _Builder) -> list[_Stage]:
    by_stage: dict[tuple[int, str], list[int]] = {}
    for slot, kind in enumerate(builder.kinds):
        if kind != "leaf":
            by_stage.setdefault((builder.heights[slot], kind), []).append(slot)
    stages = []
    for (_, kind), nodes in sorted(by_stage.items()):
        children: list[int] = []
        starts: list[int] = []
        for slot in nodes:
            starts.append(len(children))
            children += builder.children[slot]
        stages.append(
            _Stage(kind, np.asarray(nodes, np.int64), np.asarray(children, np.int64), np.asarray(starts, np.int64))
        )
    return stages


def _subtree_sizes(builder: _Builder) -> list[int]:
    sizes = [1] * len(builder.kinds)
    for slot in range(len(sizes) - 1, -1, -1):  # children have higher slots than their parent
        sizes[slot] += sum(sizes[kid] for kid in builder.children[slot])
    return sizes
