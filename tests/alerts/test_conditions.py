"""The condition parser on its own: canonical form, bounds, and that no JSON value makes it fail otherwise than by
`ConditionInvalid` with pointers into the condition."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from app.alerts import condition_schema as schema
from app.alerts.conditions import (
    BIAS_OPS,
    CROSSES,
    EVENTS,
    FIB_RATIOS,
    FIELDS,
    OPS,
    UNDIRECTED_EVENTS,
    All,
    ConditionInvalid,
    Event,
    Level,
    Not,
    Predicate,
    parse_condition,
    to_json,
)


def parse(raw: Any, depth: int = 8, nodes: int = 64) -> Any:
    return parse_condition(raw, max_depth=depth, max_nodes=nodes)


def test_the_typed_tree() -> None:
    parsed = parse(
        {
            "all": [
                {"field": "rsi", "op": "crosses_above", "value": 70},
                {"not": {"event": "bos", "direction": "bearish"}},
                {"level": "fibonacci", "ratio": 0.618, "op": "crosses_below"},
            ]
        }
    )
    assert parsed == All(
        (
            Predicate("rsi", "crosses_above", 70.0),
            Not(Event("bos", "bearish")),
            Level("fibonacci", "crosses_below", 0.618),
        )
    )
    assert parse(to_json(parsed)) == parsed


def test_the_documented_grammar_is_the_parsers() -> None:
    """The OpenAPI models (condition_schema.py) name exactly the fields, ops, events and levels the parser takes."""
    documented_fields = {"bias", *get_args(schema.NumericField)}
    assert documented_fields == set(FIELDS)
    assert set(get_args(schema.Op)) == set(OPS)
    assert set(get_args(schema.BiasOp)) == set(BIAS_OPS)
    assert set(get_args(schema.DirectedEvent)) | set(get_args(schema.UndirectedEvent)) == set(EVENTS)
    assert set(get_args(schema.UndirectedEvent)) == set(UNDIRECTED_EVENTS)
    assert set(get_args(schema.Cross)) == set(CROSSES)
    ratio = schema.AlertFibonacciLevel.model_json_schema()["properties"]["ratio"]
    assert ratio["enum"] == list(FIB_RATIOS)
    with pytest.raises(ConditionInvalid):  # the parser takes exactly the enum's values, as the document says
        parse({"level": "fibonacci", "ratio": 0.6180001, "op": "crosses_above"})


@pytest.mark.parametrize(
    "raw",
    [
        {"event": "equal_highs", "direction": None},
        {"field": "rsi", "op": "gt", "value": False},
        {"field": "bias", "op": "gt", "value": "long"},
    ],
)
def test_what_the_schema_refuses_the_parser_refuses(raw: dict[str, Any]) -> None:
    with pytest.raises(ConditionInvalid):
        parse(raw)
    with pytest.raises(ValidationError):
        TypeAdapter(schema.AlertConditionNode).validate_python(raw, strict=True)


def test_depth_counts_combinators() -> None:
    chain: dict[str, Any] = {"event": "bos"}
    for _ in range(3):
        chain = {"not": chain}
    assert parse(chain, depth=3) is not None
    with pytest.raises(ConditionInvalid) as caught:
        parse({"all": [chain]}, depth=3)
    assert [e.pointer for e in caught.value.errors] == ["#/condition/all/0/not/not"]  # the fourth combinator


def test_huge_numbers_are_refused_not_crashed() -> None:
    with pytest.raises(ConditionInvalid) as caught:
        parse({"all": [{"field": "close", "op": "gt", "value": 10**400}, {"level": "fibonacci", "ratio": 10**400,
               "op": "crosses_above"}]})  # fmt: skip
    assert [e.pointer for e in caught.value.errors] == ["#/condition/all/0/value", "#/condition/all/1/ratio"]


def test_errors_are_capped() -> None:
    with pytest.raises(ConditionInvalid) as caught:
        parse({"any": [{"event": "x"}] * 50}, nodes=100)
    assert len(caught.value.errors) == 20


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)
leaf = st.one_of(
    st.fixed_dictionaries(
        {"field": st.sampled_from([*FIELDS, "x"]), "op": st.sampled_from([*OPS, "x"]), "value": json_values}
    ),
    st.fixed_dictionaries({"event": st.sampled_from([*EVENTS, "x"])}, optional={"direction": json_values}),
    st.fixed_dictionaries(
        {"level": st.sampled_from(["fibonacci", "stop", "target", "x"]), "op": st.sampled_from(OPS)},
        optional={"ratio": st.sampled_from([*FIB_RATIOS, 0.7, "x"])},
    ),
    json_values,
)
trees = st.recursive(
    leaf,
    lambda children: st.one_of(
        st.builds(lambda items: {"all": items}, st.lists(children, max_size=4)),
        st.builds(lambda items: {"any": items}, st.lists(children, max_size=4)),
        st.builds(lambda child: {"not": child}, children),
    ),
    max_leaves=30,
)


@settings(max_examples=400)
@given(trees)
def test_any_tree_parses_or_is_refused_with_pointers(raw: Any) -> None:
    errors: tuple[Any, ...] = ()
    parsed = None
    try:
        parsed = parse(raw, depth=4, nodes=20)
    except ConditionInvalid as exc:
        errors = exc.errors
    if parsed is None:
        assert errors
        assert all(e.pointer.startswith("#/condition") and e.detail for e in errors)
    else:
        assert parse(to_json(parsed), depth=4, nodes=20) == parsed
