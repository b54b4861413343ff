"""The market-data rules of POST /v1/analyze, on columns, whatever layout the body had.

Row JSON, columnar JSON and Arrow bodies all end here with one numpy array per field, so the three layouts
refuse exactly the same values with the same codes and details; only the pointer differs, following the
body's own layout: `#/candles/3/h` for rows, `#/candles/h/3` for columns (JSON or Arrow).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import ValidationError

from app.analytics import Candles, Trades
from app.core.errors import json_pointer
from app.trading.errors import MAX_REPORTED_ERRORS, BodyInvalid, InvalidMarketData
from app.trading.schemas import MAX_EPOCH_MS, MAX_MARKET_VALUE

FloatColumn = NDArray[np.float64]
Loc = tuple[str | int, ...]
# Value constraints the models also declare (for the docs); the vectorised checks report them instead.
VALUE_ERROR_TYPES = frozenset({"finite_number", "greater_than", "greater_than_equal", "less_than_equal"})
TIME_RANGE = f"must be an integer in [0, {MAX_EPOCH_MS}]"
_TOO_LARGE = f"is larger in magnitude than {MAX_MARKET_VALUE:g}"
# Rule order within one element, so errors read in body order and, per element, in field order.
CANDLE_ORDER = {"t": 0, "o": 1, "h": 2, "l": 3, "c": 4, "v": 5, "taker_buy_v": 6, "buy_v": 6, "trades_count": 7}
TRADE_ORDER = {"t": 0, "p": 1, "q": 2, "side": 3}


def error(loc: Loc, code: str, message: str) -> dict[str, Any]:
    """One entry of a `BodyInvalid` (rendered as the `validation-failed` problem)."""
    return {"type": code, "loc": loc, "msg": message}


def pydantic_errors(
    failure: ValidationError, prefix: Loc, *, skip: frozenset[str] = frozenset()
) -> list[dict[str, Any]]:
    return [
        error(prefix + tuple(item["loc"]), item["type"], item["msg"])
        for item in failure.errors(include_url=False, include_input=False, include_context=False)
        if item["type"] not in skip
    ][:MAX_REPORTED_ERRORS]


def _too_large(column: FloatColumn) -> NDArray[np.bool_]:
    with np.errstate(invalid="ignore"):  # NaN is reported as not finite
        return np.abs(column) > MAX_MARKET_VALUE


class Violations:
    """Market-data rule violations, gathered per rule and reported in body order."""

    def __init__(self, array: str, *, columnar: bool) -> None:
        self.array = array
        self.columnar = columnar
        self.order = CANDLE_ORDER if array == "candles" else TRADE_ORDER
        self.found: list[tuple[int, int, dict[str, Any]]] = []
        self.total = 0

    def pointer(self, field: str, index: int) -> str:
        return json_pointer((self.array, field, index) if self.columnar else (self.array, index, field))

    def check(self, mask: NDArray[np.bool_], field: str, code: str, detail: str) -> None:
        bad = np.flatnonzero(mask)
        self.total += int(bad.size)
        order = self.order.get(field, len(self.order))
        for index in bad[:MAX_REPORTED_ERRORS].tolist():
            entry = {"pointer": self.pointer(field, index), "detail": detail, "code": code}
            # Columnar bodies list a whole column before the next: report column by column there too.
            key = (order, index) if self.columnar else (index, order)
            self.found.append((*key, entry))

    def raise_if_any(self) -> None:
        if self.found:
            self.found.sort(key=lambda row: (row[0], row[1]))
            raise InvalidMarketData([row[2] for row in self.found[:MAX_REPORTED_ERRORS]], self.total)


def times_from_ints(values: list[int], field: str, bad: Violations) -> NDArray[np.int64]:
    """Python ints → int64, range-checked first: an out-of-range value would overflow int64 before numpy saw it."""
    if values and (min(values) < 0 or max(values) > MAX_EPOCH_MS):
        inside = np.array([0 <= value <= MAX_EPOCH_MS for value in values])
        bad.check(~inside, field, "out_of_range", TIME_RANGE)
        bad.raise_if_any()
    return np.array(values, dtype=np.int64)


def partial(present: NDArray[np.bool_], field: str, bad: Violations) -> None:
    """An optional column must be given for every element or for none (null counts as absent)."""
    bad.check(~present, field, "partial_column", "given for some candles but not this one")
    bad.raise_if_any()


@dataclass(frozen=True, slots=True)
class CandleColumns:
    t: NDArray[np.int64]
    o: FloatColumn
    h: FloatColumn
    l: FloatColumn  # noqa: E741 - the wire name
    c: FloatColumn
    v: FloatColumn
    taker: FloatColumn | None = None
    taker_key: str = "taker_buy_v"
    counts: NDArray[np.int64] | None = None


def candles(columns: CandleColumns, bad: Violations, interval_ms: int | None) -> Candles:
    times, o, h, lo, c, v, taker = columns.t, columns.o, columns.h, columns.l, columns.c, columns.v, columns.taker
    bad.check(np.concatenate(([False], np.diff(times) <= 0)), "t", "not_increasing", "is not after the previous t")
    for key, column in (("o", o), ("h", h), ("l", lo), ("c", c), ("v", v)):
        bad.check(~np.isfinite(column), key, "not_finite", "is not a finite number")
        bad.check(_too_large(column), key, "out_of_range", _TOO_LARGE)
    with np.errstate(invalid="ignore"):
        bad.check(h < np.maximum(o, c), "h", "high_below_body", "is below max(o, c)")
        bad.check(lo > np.minimum(o, c), "l", "low_above_body", "is above min(o, c)")
        bad.check(v < 0, "v", "negative", "is negative")
        if taker is not None:
            outside = ~np.isfinite(taker) | (taker < 0) | (taker > v)
            bad.check(outside, columns.taker_key, "outside_volume", "is not a number in [0, v]")
    bad.raise_if_any()
    if interval_ms is None and times.shape[0] < 2:
        raise BodyInvalid([error(("body", "interval_ms"), "missing", "Field required when only one candle is given")])
    return Candles.from_arrays(
        open_time=times, open=o, high=h, low=lo, close=c, volume=v,
        taker_buy_volume=taker, trade_count=columns.counts, interval_ms=interval_ms,
    )  # fmt: skip


def trades(
    times: NDArray[np.int64], price: FloatColumn, qty: FloatColumn, buy: NDArray[np.bool_], bad: Violations
) -> Trades:
    bad.check(np.concatenate(([False], np.diff(times) < 0)), "t", "not_sorted", "is before the previous t")
    bad.check(~np.isfinite(price) | (price <= 0), "p", "not_positive", "is not a positive finite number")
    bad.check(~np.isfinite(qty) | (qty < 0), "q", "not_non_negative", "is not a non-negative finite number")
    bad.check(_too_large(price), "p", "out_of_range", _TOO_LARGE)
    bad.check(_too_large(qty), "q", "out_of_range", _TOO_LARGE)
    bad.raise_if_any()
    side = np.where(buy, 1, -1).astype(np.int8)
    return Trades.from_arrays(time=times, price=price, qty=qty, side=side)


def check_size(name: str, count: int, limit: int) -> None:
    """The count bounds; the pointer is the array (or the object of columns) itself in every layout."""
    if count == 0 and name == "candles":
        detail, code = "at least one candle is required", "too_short"
    elif count > limit:
        detail, code = f"{count} items; the limit is {limit}", "too_long"
    else:
        return
    raise InvalidMarketData([{"pointer": f"#/{name}", "detail": detail, "code": code}])
