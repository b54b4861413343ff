"""POST /v1/analyze JSON body → validated analytics inputs, column-wise.

Candles and trades given as arrays of objects (rows) are read here; given as objects of arrays they go to
`formats/columnar_in.py`, and Arrow bodies to `formats/arrow_in.py`. All three end in the same rules
(`checks.py`).

Measured on 100 000 candles (16.5 MB): pydantic per-item validation ~330 ms; this path ~140 ms (orjson ~70 ms,
then one list per column, a type census per column and numpy checks). The fast path only trusts what it has
checked: every item a dict, only documented keys, every required key present, numbers of JSON number types.
Anything else goes to pydantic, item by item, so shape errors read exactly like every other route's
(`validation-failed`). Value rules are checked vectorised and reported as `invalid-market-data`, each error
pointing at the offending element (`#/candles/3/h`).

JSON cannot carry NaN or infinities; orjson refuses numbers that overflow a double (`1e400`), which are valid
JSON grammar, so such a body is re-read with the standard library (overflow → inf) and the non-finite value is
reported with its pointer rather than as malformed JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray
from pydantic import TypeAdapter, ValidationError

from app.analytics import AnalysisParams, Candles, Trades
from app.analytics.evaluation import EvaluationParams
from app.analytics.orderflow import tick_problems
from app.core.errors import MalformedJson
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
from app.trading.formats import columnar_in as columnar
from app.trading.params import build_params
from app.trading.schemas import AnalyzeOptions, CandleIn, TradeIn

FloatColumn = NDArray[np.float64]
_NUMBER_TYPES = frozenset({int, float})
_CANDLE_ITEMS = TypeAdapter(list[CandleIn])
_TRADE_ITEMS = TypeAdapter(list[TradeIn])


@dataclass(frozen=True, slots=True)
class Limits:
    max_candles: int
    max_trades: int
    # `evaluate` of the calibrated signal refits its model at every bar: at most this many candles.
    max_calibrated_evaluate_candles: int = 5_000


@dataclass(frozen=True, slots=True, eq=False)
class AnalysisInput:
    candles: Candles
    trades: Trades | None
    modules: tuple[str, ...] | None
    params: AnalysisParams
    include_series: bool
    evaluate: EvaluationParams | None = None


class _Structural(Exception):
    """The fast path met something it does not handle; pydantic validates the array instead."""


def decode(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        if "depth limit" in str(error) or "recursion" in str(error):
            # orjson stops at 1 024 levels; the standard library would recurse until RecursionError (a 500).
            raise MalformedJson("The body nests arrays or objects more than 1024 levels deep.") from None
        try:
            return json.loads(body, parse_constant=_refuse_constant)
        except (ValueError, RecursionError):
            raise MalformedJson(f"The body is not valid JSON: {error}") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_body(body: bytes, limits: Limits) -> AnalysisInput:
    """A JSON body: candles (and trades) as an array of objects or as an object of columns (`columnar.py`)."""
    document = decode(body)
    if not isinstance(document, dict):
        raise BodyInvalid([error(("body",), "model_attributes_type", "Input should be an object")])
    options = parse_options({key: value for key, value in document.items() if key not in {"candles", "trades"}})
    if "candles" not in document:
        raise BodyInvalid([error(("body", "candles"), "missing", "Field required")])
    raw_candles, raw_trades = document["candles"], document.get("trades")
    if isinstance(raw_candles, dict):
        candles = columnar.candles(raw_candles, limits.max_candles, options.interval_ms)
    else:
        candles = _candles(raw_candles, limits.max_candles, options.interval_ms)
    if raw_trades is None:
        trades = None
    elif isinstance(raw_trades, dict):
        trades = columnar.trades(raw_trades, limits.max_trades)
    else:
        trades = _trades(raw_trades, limits.max_trades)
    return assemble(candles, trades, options, limits)


def parse_options(members: dict[str, Any]) -> AnalyzeOptions:
    """Every member but the two arrays (from a JSON body, or from an Arrow stream's schema metadata)."""
    try:
        return AnalyzeOptions.model_validate(members)
    except ValidationError as failure:
        raise BodyInvalid(pydantic_errors(failure, ("body",))) from None


def assemble(candles: Candles, trades: Trades | None, options: AnalyzeOptions, limits: Limits) -> AnalysisInput:
    modules = tuple(options.modules) if options.modules else None
    evaluate = None
    if options.evaluate is not None:
        if trades is not None:
            # The replay rebuilds the signal at every bar from candles alone; a record of another signal than
            # the one this response carries would mislead.
            message = "evaluate replays the signal from candles only: send the trades or evaluate, not both"
            raise BodyInvalid([error(("body", "evaluate"), "value_error", message)])
        chosen = options.evaluate
        evaluate = EvaluationParams(
            horizons=tuple(sorted(set(chosen.horizons))), fee_bps=chosen.fees_bps, slippage_bps=chosen.slippage_bps
        )
    params = build_params(options.params)
    if modules is None or "orderflow" in modules:
        too_fine = tick_problems(candles, trades, params.orderflow)
        if too_fine:
            raise BodyInvalid([error(("body", "params", "orderflow", name), "value_error", m) for name, m in too_fine])
    limit = limits.max_calibrated_evaluate_candles
    if evaluate is not None and params.signal.calibrated and len(candles) > limit:
        # Its replay refits the model at every bar (~1 ms a bar on 500-bar windows): bounded, so that one request
        # cannot hold an analysis worker for minutes. The walk-forward record over a long history is what
        # `deltaflow study` measures (docs/signal-study.md).
        message = (
            f"evaluate with the calibrated signal refits its model at every bar: at most {limit} candles "
            f"(DELTAFLOW_ANALYZE_EVALUATE_CALIBRATED_MAX_CANDLES), {len(candles)} given; the heuristic signal "
            '("params": {"signal": {"calibrated": false}}) has no such limit'
        )
        # The same problem type and pointer as the plain candle limit (`checks.check_size`).
        raise InvalidMarketData([{"pointer": "#/candles", "detail": message, "code": "too_long"}])
    return AnalysisInput(candles, trades, modules, params, options.include_series, evaluate)


def _size(items: Any, name: str, limit: int, adapter: TypeAdapter[Any]) -> Sequence[Any]:
    if not isinstance(items, list):
        try:
            adapter.validate_python(items)
        except ValidationError as error:
            raise BodyInvalid(pydantic_errors(error, ("body", name))) from None
    check_size(name, len(items), limit)
    result: Sequence[Any] = items
    return result


def _keys_present(items: Sequence[Any], allowed: frozenset[str]) -> tuple[set[str], set[str]]:
    """Keys present in every item and in some item; raises `_Structural` for non-objects or unknown keys."""
    if set(map(type, items)) != {dict}:
        raise _Structural
    layouts = {frozenset(layout) for layout in set(map(tuple, items))}
    anywhere = frozenset().union(*layouts)
    if not anywhere <= allowed:
        raise _Structural
    return set(frozenset.intersection(*layouts)), set(anywhere)


def _numbers(items: Sequence[dict[str, Any]], key: str) -> FloatColumn:
    values = [item[key] for item in items]
    if not set(map(type, values)) <= _NUMBER_TYPES:
        raise _Structural
    return np.array(values, dtype=np.float64)


def _integers(items: Sequence[dict[str, Any]], key: str, violations: Violations) -> NDArray[np.int64]:
    values = [item[key] for item in items]
    if set(map(type, values)) != {int}:
        raise _Structural
    return times_from_ints(values, key, violations)


def _optional(
    items: Sequence[dict[str, Any]],
    key: str,
    violations: Violations,
    read: Callable[[Sequence[dict[str, Any]], str], Any],
) -> Any:
    """A column given for every item (→ values) or none (→ None); null counts as absent."""
    present = np.array([item.get(key) is not None for item in items])
    if not present.any():
        return None
    if not present.all():
        partial(present, key, violations)
    return read(items, key)


def _with_pydantic(items: Sequence[Any], name: str, adapter: TypeAdapter[Any], parse: Callable[[], Any]) -> Any:
    try:
        return parse()
    except _Structural:
        try:
            adapter.validate_python(items)
        except ValidationError as error:
            errors = pydantic_errors(error, ("body", name), skip=VALUE_ERROR_TYPES)
            if errors:
                raise BodyInvalid(errors) from None
        raise  # pragma: no cover - the fast path and the models disagree: a bug, rendered as a 500


def _candles(raw: Any, limit: int, interval_ms: int | None) -> Candles:
    items = _size(raw, "candles", limit, _CANDLE_ITEMS)
    allowed = frozenset(CandleIn.model_fields)
    result: Candles = _with_pydantic(
        items, "candles", _CANDLE_ITEMS, lambda: _candle_columns(items, allowed, interval_ms)
    )
    return result


def _candle_columns(items: Sequence[Any], allowed: frozenset[str], interval_ms: int | None) -> Candles:
    everywhere, anywhere = _keys_present(items, allowed)
    if not {"t", "o", "h", "l", "c", "v"} <= everywhere:
        raise _Structural
    bad = Violations("candles", columnar=False)
    times = _integers(items, "t", bad)
    o, h, lo, c, v = (_numbers(items, key) for key in ("o", "h", "l", "c", "v"))
    # `buy_v` (GET /v1/candles' name) is the taker-buy volume; `taker_buy_v` wins when both are given.
    taker_key = "taker_buy_v" if "taker_buy_v" in anywhere else "buy_v"
    taker = _optional(items, taker_key, bad, _numbers)
    counts = _optional(items, "trades_count", bad, lambda rows, key: _integers(rows, key, bad))
    columns = CandleColumns(times, o, h, lo, c, v, taker, taker_key, counts)
    return checks.candles(columns, bad, interval_ms)


def _trades(raw: Any, limit: int) -> Trades:
    items = _size(raw, "trades", limit, _TRADE_ITEMS)
    result: Trades = _with_pydantic(items, "trades", _TRADE_ITEMS, lambda: _trade_columns(items))
    return result


def _trade_columns(items: Sequence[Any]) -> Trades:
    if items:
        everywhere, _ = _keys_present(items, frozenset(TradeIn.model_fields))
        if everywhere != {"t", "p", "q", "side"}:
            raise _Structural
    bad = Violations("trades", columnar=False)
    times = _integers(items, "t", bad) if items else np.zeros(0, dtype=np.int64)
    price = _numbers(items, "p") if items else np.zeros(0)
    qty = _numbers(items, "q") if items else np.zeros(0)
    sides = [item["side"] for item in items]
    if not all(isinstance(value, str) and value in {"buy", "sell"} for value in sides):
        raise _Structural
    return checks.trades(times, price, qty, np.array([value == "buy" for value in sides], dtype=bool), bad)
