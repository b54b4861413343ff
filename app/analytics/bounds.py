"""Declared parameter ranges: one statement that the parameter dataclasses enforce and the API documents.

A parameter dataclass declares each numeric field with `bounded(...)` (a sequence of numbers with
`bounded_items(...)`) and calls `check_bounds(self)` in `__post_init__`; `app.trading.schemas.params_model`
reads the same metadata to state the range in the JSON schema. Rules across fields (macd_fast < macd_slow) or
over a whole sequence (strictly increasing) are not ranges and stay explicit code in the dataclass.

Every range has both ends: an unbounded period, row count or lookback is a way to make one request exhaust the
server, so a declaration without an upper bound is refused when the module is imported.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

BOUNDS_KEY = "bounds"
T = TypeVar("T")


def _shown(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass(frozen=True, slots=True)
class Bounds:
    """One lower limit (`ge` inclusive or `gt` exclusive) and one upper (`le` or `lt`), named as pydantic names
    them; `integer` asks for an integral value."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    integer: bool = False

    def __post_init__(self) -> None:
        if (self.ge is None) == (self.gt is None) or (self.le is None) == (self.lt is None):
            raise TypeError("a range needs exactly one lower (ge or gt) and one upper (le or lt) limit")

    def limits(self) -> dict[str, float]:
        """The limits that are set, by their pydantic name (`{"ge": 1, "le": 500}`)."""
        named = {"ge": self.ge, "gt": self.gt, "le": self.le, "lt": self.lt}
        return {name: value for name, value in named.items() if value is not None}

    def contains(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.integer and not isinstance(value, numbers.Integral):
            return False
        number = float(value)
        # NaN fails every comparison, so it is outside every range.
        above = number >= self.ge if self.ge is not None else self.gt is not None and number > self.gt
        below = number <= self.le if self.le is not None else self.lt is not None and number < self.lt
        return above and below

    def interval(self) -> str:
        """The range in interval notation, as the error messages state it: `[1, 500]`, `(0, 10]`."""
        low = f"[{_shown(self.ge)}" if self.ge is not None else f"({_shown(self.gt or 0)}"
        high = f"{_shown(self.le)}]" if self.le is not None else f"{_shown(self.lt or 0)})"
        return f"{low}, {high}"

    def check(self, name: str, value: object) -> None:
        if not self.contains(value):
            what = "an integer in" if self.integer else "in"
            raise ValueError(f"{name} must be {what} {self.interval()}")


@dataclass(frozen=True, slots=True)
class ItemBounds:
    """A sequence of numbers: its length in [min_length, max_length] and every item within `items`."""

    items: Bounds
    min_length: int
    max_length: int

    def check(self, name: str, value: object) -> None:
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise ValueError(f"{name} must be a list of numbers")
        if len(value) < self.min_length:
            raise ValueError(
                f"{name} must not be empty" if self.min_length == 1 else f"{name} needs {self.min_length} items"
            )
        if len(value) > self.max_length:
            raise ValueError(f"{name} must have at most {self.max_length} items")
        if not all(self.items.contains(item) for item in value):
            raise ValueError(f"{name} must be numbers in {self.items.interval()}")


def bounded(
    default: T, *, ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None
) -> T:
    """A dataclass field with a declared range; integral when the default is an int (`None` means optional)."""
    integer = isinstance(default, int) and not isinstance(default, bool)
    bounds = Bounds(ge=ge, gt=gt, le=le, lt=lt, integer=integer)
    if default is not None:
        bounds.check("the default", default)
    result: T = field(default=default, metadata={BOUNDS_KEY: bounds})
    return result


def bounded_items(
    default: T,
    *,
    min_length: int,
    max_length: int,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> T:
    """A dataclass field holding a sequence of numbers, each within the range, with a bounded length."""
    bounds = ItemBounds(Bounds(ge=ge, gt=gt, le=le, lt=lt), min_length, max_length)
    bounds.check("the default", default)
    result: T = field(default=default, metadata={BOUNDS_KEY: bounds})
    return result


def field_bounds(item: Any) -> Bounds | ItemBounds | None:
    """The range declared on a `dataclasses.Field`, if any."""
    bounds: Bounds | ItemBounds | None = item.metadata.get(BOUNDS_KEY)
    return bounds


def check_bounds(instance: Any) -> None:
    """Raise `ValueError` ("<field> must be …") for the first field outside its declared range.

    A field whose default is None is optional: None is accepted there, and only there.
    """
    for item in fields(instance):
        bounds = field_bounds(item)
        value = getattr(instance, item.name)
        if bounds is None or (value is None and item.default is None):
            continue
        bounds.check(item.name, value)
