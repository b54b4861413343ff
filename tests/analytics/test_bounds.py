"""Declared parameter ranges (app/analytics/bounds.py): every value inside a field's declared range is accepted by
its dataclass, every value outside it is refused, and every numeric parameter has a declared range."""

from __future__ import annotations

import math
import typing
from dataclasses import fields
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.analytics import (
    CvdParams,
    FibonacciParams,
    IndicatorParams,
    OrderflowParams,
    SignalParams,
    SignalWeights,
    SmcParams,
)
from app.analytics.bounds import Bounds, ItemBounds, bounded, field_bounds

PARAMS: tuple[type[Any], ...] = (
    CvdParams, OrderflowParams, SmcParams, FibonacciParams, IndicatorParams, SignalParams, SignalWeights,
)  # fmt: skip
# Values another field must take for a bound to be reachable: macd_fast < macd_slow; equity and risk go together.
COMPANIONS: dict[tuple[type[Any], str], dict[str, Any]] = {
    (IndicatorParams, "macd_fast"): {"macd_slow": 100_000},
    (IndicatorParams, "macd_slow"): {"macd_fast": 2},
    (SignalParams, "account_equity"): {"risk_pct": 1.0},
    (SignalParams, "risk_pct"): {"account_equity": 10_000.0},
}
BOUNDED = [
    (cls, item.name, bounds) for cls in PARAMS for item in fields(cls) if (bounds := field_bounds(item)) is not None
]
IDS = [f"{cls.__name__}.{name}" for cls, name, _ in BOUNDED]
NUMERIC_HINTS = (int, float, float | None, tuple[float, ...])


def build(cls: type[Any], name: str, value: Any) -> Any:
    return cls(**{**COMPANIONS.get((cls, name), {}), name: value})


def accepted(cls: type[Any], name: str, value: Any) -> bool:
    try:
        build(cls, name, value)
    except ValueError:
        return False
    return True


def lower(bounds: Bounds) -> float:
    value = bounds.ge if bounds.ge is not None else bounds.gt
    assert value is not None
    return value


def upper(bounds: Bounds) -> float:
    value = bounds.le if bounds.le is not None else bounds.lt
    assert value is not None
    return value


def inside(bounds: Bounds) -> st.SearchStrategy[Any]:
    if bounds.integer:
        low = math.floor(lower(bounds)) + (1 if bounds.gt is not None else 0)
        high = math.ceil(upper(bounds)) - (1 if bounds.lt is not None else 0)
        return st.integers(low, high)
    return st.floats(lower(bounds), upper(bounds), exclude_min=bounds.gt is not None, exclude_max=bounds.lt is not None)


def outside(bounds: Bounds) -> st.SearchStrategy[Any]:
    """Below, above, NaN, and (for an integer field) a non-integral number within the range."""
    if bounds.integer:
        below: st.SearchStrategy[Any] = st.integers(max_value=math.ceil(lower(bounds)) - 1)
        above: st.SearchStrategy[Any] = st.integers(min_value=math.floor(upper(bounds)) + 1)
        fraction = st.floats(lower(bounds), upper(bounds)).filter(lambda value: not value.is_integer())
        return below | above | fraction
    below = st.floats(max_value=lower(bounds), exclude_max=bounds.ge is not None)
    above = st.floats(min_value=upper(bounds), exclude_min=bounds.le is not None)
    return below | above | st.just(math.nan)


def increasing(bounds: ItemBounds, size: st.SearchStrategy[int]) -> st.SearchStrategy[tuple[float, ...]]:
    """Strictly increasing ratios (the sequence rule the dataclass adds to the ranges) of a drawn length."""
    return size.flatmap(
        lambda n: st.lists(inside(bounds.items), min_size=n, max_size=n, unique=True).map(lambda x: tuple(sorted(x)))
    )


def edges(bounds: Bounds) -> list[tuple[float, bool]]:
    """(value, accepted?) at each end and one representable step beyond it."""

    def step(value: float, direction: float) -> float:
        return value + direction if bounds.integer else math.nextafter(value, direction * math.inf)

    low, high = lower(bounds), upper(bounds)
    cases = [(low, True), (step(low, -1), False)] if bounds.ge is not None else [(low, False), (step(low, 1), True)]
    cases += (
        [(high, True), (step(high, 1), False)] if bounds.le is not None else [(high, False), (step(high, -1), True)]
    )
    cast = int if bounds.integer else float
    return [(cast(value), ok) for value, ok in cases]


@pytest.mark.parametrize(("cls", "name", "bounds"), BOUNDED, ids=IDS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_values_inside_the_declared_range_are_accepted(
    cls: type[Any], name: str, bounds: Bounds | ItemBounds, data: st.DataObject
) -> None:
    if isinstance(bounds, ItemBounds):
        value: Any = data.draw(increasing(bounds, st.integers(bounds.min_length, bounds.max_length)))
    else:
        value = data.draw(inside(bounds))
    assert getattr(build(cls, name, value), name) == value


@pytest.mark.parametrize(("cls", "name", "bounds"), BOUNDED, ids=IDS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_values_outside_the_declared_range_are_refused_naming_the_field(
    cls: type[Any], name: str, bounds: Bounds | ItemBounds, data: st.DataObject
) -> None:
    if isinstance(bounds, ItemBounds):
        good = list(data.draw(increasing(bounds, st.integers(bounds.min_length, bounds.max_length))))
        good[data.draw(st.integers(0, len(good) - 1))] = data.draw(outside(bounds.items))
        too_long = data.draw(increasing(bounds, st.just(bounds.max_length + 1)))
        value: Any = data.draw(st.sampled_from([tuple(good), too_long, ()]))
    else:
        value = data.draw(outside(bounds))
    with pytest.raises(ValueError, match=f"^{name} must"):
        build(cls, name, value)


@pytest.mark.parametrize(
    ("cls", "name", "bounds"),
    [row for row in BOUNDED if isinstance(row[2], Bounds)],
    ids=[label for label, row in zip(IDS, BOUNDED, strict=True) if isinstance(row[2], Bounds)],
)
def test_each_end_of_a_range_is_where_the_declaration_puts_it(cls: type[Any], name: str, bounds: Bounds) -> None:
    assert [(value, accepted(cls, name, value)) for value, _ in edges(bounds)] == edges(bounds)


@pytest.mark.parametrize("cls", PARAMS, ids=lambda cls: cls.__name__)
def test_every_numeric_parameter_declares_a_range(cls: type[Any]) -> None:
    hints = typing.get_type_hints(cls)
    undeclared = [item.name for item in fields(cls) if hints[item.name] in NUMERIC_HINTS and not field_bounds(item)]
    assert undeclared == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ge": 1}, "upper"),
        ({"le": 1}, "lower"),
        ({"ge": 1, "gt": 0, "le": 2}, "lower"),
    ],
)
def test_a_range_needs_both_ends(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        Bounds(**kwargs)


def test_a_default_outside_its_own_range_is_refused_when_declared() -> None:
    with pytest.raises(ValueError, match=r"the default must be an integer in \[1, 5\]"):
        bounded(9, ge=1, le=5)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (lambda: SmcParams(swing_length=0), r"^swing_length must be an integer in \[1, 500\]$"),
        (lambda: SmcParams(liquidity_atr_multiple=11), r"^liquidity_atr_multiple must be in \(0, 10\]$"),
        (lambda: SignalParams(bias_threshold=1.0), r"^bias_threshold must be in \(0, 1\)$"),
        (lambda: OrderflowParams(imbalance_min_volume=1e13), r"^imbalance_min_volume must be in \[0, 1000000000000\]$"),
        (lambda: FibonacciParams(retracements=(0.5, 1.5)), r"^retracements must be numbers in \(0, 1\]$"),
        (lambda: FibonacciParams(extensions=tuple(range(1, 22))), "^extensions must have at most 20 items$"),
        # None is accepted only where the default is None (tick, profile_tick, account_equity, risk_pct).
        (lambda: SmcParams(swing_length=None), r"^swing_length must be an integer"),  # type: ignore[arg-type]
        (lambda: SmcParams(swing_length=True), r"^swing_length must be an integer"),
    ],
)
def test_range_errors_start_with_the_field_name_and_state_the_range(params: Any, message: str) -> None:
    # The field name first is what lets the HTTP layer point the error at the parameter (app/trading/params.py).
    with pytest.raises(ValueError, match=message):
        params()
