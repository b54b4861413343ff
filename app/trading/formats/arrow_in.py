"""Arrow IPC bodies (`Content-Type: application/vnd.apache.arrow.stream`).

The body is one Arrow IPC stream of candles, optionally followed by a second stream of trades (a stream has one
schema, and candles and trades have different lengths). Column names and meanings are the JSON form's
(`CandleIn`, `TradeIn`): `t` an integer type or `timestamp[ms]`, prices and volumes any integer or floating
type, `side` strings `buy`/`sell`. Everything else the JSON body carries (`interval_ms`, `modules`, `params`,
`include_series`) goes, as one JSON object, in the candle stream's schema metadata under the key `options`.

Validation is the JSON form's (`checks.py`), pointers in the columnar layout (`#/candles/c/17`). A column of
the wrong type is a 422 `validation-failed` pointing at the column; a null in a required column is one
pointing at the element; a body pyarrow cannot read is the 400 `malformed-arrow` problem.

Columns are taken from the body's buffers without a copy when they are float64/int64 without nulls; the row
count is bounded batch by batch, so an oversized stream is refused before it is all decoded.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from app.analytics import Candles, Trades
from app.trading import checks
from app.trading.checks import CandleColumns, Violations, check_size, error, partial
from app.trading.errors import BodyInvalid, MalformedArrow
from app.trading.parsing import AnalysisInput, Limits, assemble, parse_options
from app.trading.schemas import MAX_EPOCH_MS, CandleIn, TradeIn

OPTIONS_KEY = b"options"
CANDLE_NUMBERS = ("o", "h", "l", "c", "v")
_ARROW_ERRORS = (pa.ArrowException, ValueError, OSError, EOFError, TypeError, IndexError)


def parse_arrow(body: bytes, limits: Limits) -> AnalysisInput:
    source = pa.BufferReader(body)
    candle_table, metadata = _read(source, "candles", limits.max_candles)
    trade_table = None
    if source.tell() < len(body):
        trade_table, _ = _read(source, "trades", limits.max_trades)
        if source.tell() < len(body):
            raise MalformedArrow("The body holds more than a candle stream and a trade stream.")
    options = parse_options(_options(metadata))
    candles = _candles(candle_table, options.interval_ms)
    trades = None if trade_table is None else _trades(trade_table)
    return assemble(candles, trades, options, limits)


def _read(source: pa.BufferReader, name: str, limit: int) -> tuple[pa.Table, dict[bytes, bytes]]:
    try:
        reader = pa.ipc.open_stream(source)
        batches = []
        rows = 0
        for batch in reader:
            rows += batch.num_rows
            if rows > limit:
                check_size(name, rows, limit)
            batches.append(batch)
        table = pa.Table.from_batches(batches, schema=reader.schema)
        table.validate(full=True)  # offsets and lengths inside the buffers: a corrupt stream stops here
    except _ARROW_ERRORS as failure:
        raise MalformedArrow(f"The {name} stream is not a valid Arrow IPC stream: {failure}") from None
    check_size(name, table.num_rows, limit)
    return table, dict(reader.schema.metadata or {})


def _options(metadata: dict[bytes, bytes]) -> dict[str, Any]:
    raw = metadata.get(OPTIONS_KEY)
    if raw is None:
        return {}
    try:
        options = orjson.loads(raw)
    except orjson.JSONDecodeError as failure:
        raise MalformedArrow(f"The schema metadata `options` is not JSON: {failure}") from None
    if not isinstance(options, dict) or {"candles", "trades"} & set(options):
        raise MalformedArrow("The schema metadata `options` must be a JSON object without candles or trades.")
    return options


def _columns(table: pa.Table, name: str, allowed: frozenset[str], required: tuple[str, ...]) -> None:
    names = table.schema.names
    problems = [error(("body", name, key), "extra_forbidden", "Extra inputs are not permitted") for key in names
                if key not in allowed]  # fmt: skip
    problems += [error(("body", name, key), "missing", "Field required") for key in required if key not in names]
    problems += [error(("body", name, key), "duplicate", "Column given more than once")
                 for key in sorted({key for key in names if names.count(key) > 1})]  # fmt: skip
    if problems:
        raise BodyInvalid(problems)


def _no_nulls(column: pa.ChunkedArray, name: str, key: str, code: str, message: str) -> None:
    if column.null_count:
        nulls = np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[:20].tolist()
        raise BodyInvalid([error(("body", name, key, index), code, message) for index in nulls])


def _wrong_type(name: str, key: str, code: str, wanted: str, found: pa.DataType) -> BodyInvalid:
    return BodyInvalid([error(("body", name, key), code, f"Input should be a column of {wanted}, not {found}")])


def _numbers(table: pa.Table, name: str, key: str) -> NDArray[np.float64]:
    column = table.column(key)
    kind = column.type
    if not (pa.types.is_floating(kind) or pa.types.is_integer(kind)):
        raise _wrong_type(name, key, "float_type", "numbers", kind)
    _no_nulls(column, name, key, "float_type", "Input should be a valid number")
    return np.asarray(column.to_numpy(), dtype=np.float64)


def _integers(table: pa.Table, name: str, key: str, bad: Violations) -> NDArray[np.int64]:
    column = table.column(key)
    kind = column.type
    if pa.types.is_timestamp(kind) and kind.unit == "ms":
        column = column.cast(pa.int64())
    elif not pa.types.is_integer(kind):
        raise _wrong_type(name, key, "int_type", "integers (or timestamp[ms])", kind)
    _no_nulls(column, name, key, "int_type", "Input should be a valid integer")
    values = column.to_numpy()
    # Compared in the column's own type: a uint64 beyond int64 would wrap if cast first.
    outside = (values < 0) | (values > MAX_EPOCH_MS)
    if outside.any():
        bad.check(outside, key, "out_of_range", checks.TIME_RANGE)
        bad.raise_if_any()
    return np.asarray(values, dtype=np.int64)


def _present(table: pa.Table, key: str, bad: Violations) -> bool:
    """An optional column counts when it has a non-null value; given for only some candles it is refused."""
    if key not in table.schema.names:
        return False
    column = table.column(key)
    if column.null_count == len(column):
        return False
    if column.null_count:
        partial(column.is_valid().to_numpy(zero_copy_only=False), key, bad)
    return True


def _candles(table: pa.Table, interval_ms: int | None) -> Candles:
    _columns(table, "candles", frozenset(CandleIn.model_fields), ("t", *CANDLE_NUMBERS))
    bad = Violations("candles", columnar=True)
    times = _integers(table, "candles", "t", bad)
    o, h, lo, c, v = (_numbers(table, "candles", key) for key in CANDLE_NUMBERS)
    taker_key = "taker_buy_v" if _present(table, "taker_buy_v", bad) else "buy_v"
    taker = _numbers(table, "candles", taker_key) if _present(table, taker_key, bad) else None
    counts = _integers(table, "candles", "trades_count", bad) if _present(table, "trades_count", bad) else None
    return checks.candles(CandleColumns(times, o, h, lo, c, v, taker, taker_key, counts), bad, interval_ms)


def _trades(table: pa.Table) -> Trades:
    _columns(table, "trades", frozenset(TradeIn.model_fields), ("t", "p", "q", "side"))
    bad = Violations("trades", columnar=True)
    times = _integers(table, "trades", "t", bad)
    price, qty = _numbers(table, "trades", "p"), _numbers(table, "trades", "q")
    side = table.column("side")
    if pa.types.is_dictionary(side.type):
        side = side.cast(side.type.value_type)
    if not (pa.types.is_string(side.type) or pa.types.is_large_string(side.type)):
        raise _wrong_type("trades", "side", "literal_error", "strings 'buy' or 'sell'", side.type)
    _no_nulls(side, "trades", "side", "literal_error", "Input should be 'buy' or 'sell'")
    buy = pc.equal(side, "buy").to_numpy()
    wrong = np.flatnonzero(~buy & ~pc.equal(side, "sell").to_numpy())
    if wrong.size:
        message = "Input should be 'buy' or 'sell'"
        raise BodyInvalid(
            [error(("body", "trades", "side", index), "literal_error", message) for index in wrong[:20].tolist()]
        )
    return checks.trades(times, price, qty, buy, bad)
