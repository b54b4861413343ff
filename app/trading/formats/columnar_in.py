"""Columnar JSON bodies: `{"candles": {"t": [...], "o": [...], ...}, "trades": {"t": [...], ...}}`.

The same fields as the row form (`CandleIn`, `TradeIn`), one array per field, all of the same length. Each
array becomes one numpy column in one call; the rules are then the row form's (`checks.py`), so every error
reads the same with the pointer in this layout: `#/candles/c/17`. An optional column (`taker_buy_v`,
`buy_v`, `trades_count`) is absent, `null`, or all-null to leave it out; given for some candles only it is
`partial_column`, as in the row form. Columns of unequal length are `length_mismatch`, pointing at the
column that differs from `t`.

Measured on 100 000 candles, in one run: 242 ms from bytes to validated arrays against 719 ms for the same
candles as rows (a dict per candle to build, then to take apart again) and 3 ms as Arrow (2 busy cores: absolute
figures vary with load, the ratios held).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import TypeAdapter, ValidationError

from app.analytics import Candles, Trades
from app.trading import checks
from app.trading.checks import (
    VALUE_ERROR_TYPES,
    CandleColumns,
    Violations,
    check_size,
    error,
    partial,
    pydantic_errors,
    times_from_ints,
)
from app.trading.errors import BodyInvalid, InvalidMarketData
from app.trading.schemas import CandleIn, TradeIn

_NUMBER_TYPES = frozenset({int, float})
CANDLE_REQUIRED = ("t", "o", "h", "l", "c", "v")
TRADE_REQUIRED = ("t", "p", "q", "side")


def _column_adapter(model: type[CandleIn] | type[TradeIn], key: str) -> TypeAdapter[Any]:
    field = model.model_fields[key]
    item: Any = Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
    return TypeAdapter(list[item])


_CANDLE_ADAPTERS = {key: _column_adapter(CandleIn, key) for key in (*CANDLE_REQUIRED, "taker_buy_v", "buy_v")}
_CANDLE_ADAPTERS["trades_count"] = _column_adapter(CandleIn, "trades_count")
_TRADE_ADAPTERS = {key: _column_adapter(TradeIn, key) for key in ("t", "p", "q")}
_SIDE_NAMES = frozenset({"buy", "sell"})
_SIDES = TypeAdapter(list[Literal["buy", "sell"]])


def _shape(raw: dict[str, Any], name: str, allowed: frozenset[str], required: tuple[str, ...]) -> int:
    """Unknown and missing columns, non-array columns and unequal lengths; returns the length."""
    problems = [
        error(("body", name, key), "extra_forbidden", "Extra inputs are not permitted")
        for key in raw
        if key not in allowed
    ]
    problems += [error(("body", name, key), "missing", "Field required") for key in required if key not in raw]
    if problems:
        raise BodyInvalid(problems)
    used = [key for key in raw if key in required or (key in _CANDLE_ADAPTERS and raw[key] is not None)]
    not_arrays = [key for key in used if not isinstance(raw[key], list)]
    if not_arrays:
        raise BodyInvalid(
            [error(("body", name, key), "list_type", "Input should be a valid list") for key in not_arrays]
        )
    length = len(raw["t"])
    mismatched = [
        {
            "pointer": f"#/{name}/{key}",
            "detail": f"has {len(raw[key])} values; t has {length}",
            "code": "length_mismatch",
        }
        for key in used
        if len(raw[key]) != length
    ]
    if mismatched:
        raise InvalidMarketData(mismatched)
    return length


def _typed(values: list[Any], name: str, key: str, adapter: TypeAdapter[Any]) -> None:
    """Per-element type errors (pydantic's, as in the row form) for a column the fast path refused."""
    try:
        adapter.validate_python(values)
    except ValidationError as failure:
        problems = pydantic_errors(failure, ("body", name, key), skip=VALUE_ERROR_TYPES)
        if problems:
            raise BodyInvalid(problems) from None
    raise BodyInvalid([error(("body", name, key), "float_type", "Input should be a valid number")])


def _numbers(values: list[Any], name: str, key: str, adapter: TypeAdapter[Any]) -> NDArray[np.float64]:
    if not set(map(type, values)) <= _NUMBER_TYPES:
        _typed(values, name, key, adapter)
    return np.array(values, dtype=np.float64)


def _integers(values: list[Any], name: str, key: str, adapter: TypeAdapter[Any], bad: Violations) -> NDArray[np.int64]:
    if values and set(map(type, values)) != {int}:
        _typed(values, name, key, adapter)
    return times_from_ints(values, key, bad)


def _optional(raw: dict[str, Any], key: str, bad: Violations) -> list[Any] | None:
    values = raw.get(key)
    if values is None:
        return None
    present = np.array([value is not None for value in values], dtype=bool)
    if not present.any():
        return None
    if not present.all():
        partial(present, key, bad)
    result: list[Any] = values
    return result


def candles(raw: dict[str, Any], limit: int, interval_ms: int | None) -> Candles:
    count = _shape(raw, "candles", frozenset(CandleIn.model_fields), CANDLE_REQUIRED)
    check_size("candles", count, limit)
    bad = Violations("candles", columnar=True)
    adapters = _CANDLE_ADAPTERS
    times = _integers(raw["t"], "candles", "t", adapters["t"], bad)
    o, h, lo, c, v = (_numbers(raw[key], "candles", key, adapters[key]) for key in ("o", "h", "l", "c", "v"))
    # `buy_v` (GET /v1/candles' name) is the taker-buy volume; `taker_buy_v` wins when both are given.
    taker_key = "taker_buy_v" if raw.get("taker_buy_v") is not None else "buy_v"
    taker_values = _optional(raw, taker_key, bad)
    taker = None if taker_values is None else _numbers(taker_values, "candles", taker_key, adapters[taker_key])
    count_values = _optional(raw, "trades_count", bad)
    counts = None
    if count_values is not None:
        counts = _integers(count_values, "candles", "trades_count", adapters["trades_count"], bad)
    return checks.candles(CandleColumns(times, o, h, lo, c, v, taker, taker_key, counts), bad, interval_ms)


def trades(raw: dict[str, Any], limit: int) -> Trades:
    count = _shape(raw, "trades", frozenset(TradeIn.model_fields), TRADE_REQUIRED)
    check_size("trades", count, limit)
    bad = Violations("trades", columnar=True)
    times = _integers(raw["t"], "trades", "t", _TRADE_ADAPTERS["t"], bad)
    price = _numbers(raw["p"], "trades", "p", _TRADE_ADAPTERS["p"])
    qty = _numbers(raw["q"], "trades", "q", _TRADE_ADAPTERS["q"])
    sides: list[Any] = raw["side"]
    if not all(isinstance(value, str) and value in _SIDE_NAMES for value in sides):
        _typed(sides, "trades", "side", _SIDES)
    buy = np.array([value == "buy" for value in sides], dtype=bool)
    return checks.trades(times, price, qty, buy, bad)
