"""The Arrow IPC response (`Accept: application/vnd.apache.arrow.stream`).

One stream, one record batch of one row. Each table of the columnar document (`columns_out.py`) is one Arrow
column of type `list<struct<…>>`, named by its path in the document (`smc.order_blocks`, `cvd.divergences`,
`signal.components` …); its single value holds every row. Per-bar series (with `include_series`) form a table
too: in an object with an `open_time` array, that array and every sibling array of the same length become one
column named by the object's path (`cvd`, `indicators`, `orderflow.liquidations`). Everything else (counts,
parameters, `last`, the signal's scalars …) is the columnar document without those tables, as JSON in the
schema metadata under `document`. Numbers that JSON writes as null (NaN) are null; times are int64 epoch ms;
an event table's `kind`, `direction` and `status` are dictionary-encoded strings.

Reading it with pyarrow:

    table = pyarrow.ipc.open_stream(body).read_all()
    document = json.loads(table.schema.metadata[b"document"])
    order_blocks = pyarrow.Table.from_struct_array(table["smc.order_blocks"].combine_chunks().values)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pyarrow as pa
from numpy.typing import NDArray

from app.analytics.events import ACTIVE, BROKEN, MITIGATED, NO_TIME, SWEPT, EventTable
from app.trading.formats.columns_out import Columns

DOCUMENT_KEY = b"document"
STATUSES = (ACTIVE, MITIGATED, SWEPT, BROKEN)  # codes 0-3, the precedence `EventTable.status` applies


def _array(values: Any) -> Any:
    if isinstance(values, np.ndarray):
        return pa.array(values, from_pandas=values.dtype.kind == "f")  # NaN → null, as in JSON
    return pa.array(values)


def _event_arrays(table: EventTable) -> dict[str, Any]:
    """`event_columns(table)` as Arrow arrays, straight from the numpy columns (no Python object per value)."""
    count = len(table)

    def times(values: NDArray[np.int64]) -> Any:
        return pa.array(values, mask=values == NO_TIME)

    def floats(values: NDArray[np.float64]) -> Any:
        return pa.array(np.asarray(values, dtype=np.float64), from_pandas=True)

    def labels(codes: NDArray[np.int8], names: tuple[str, ...]) -> Any:
        # Dictionary-encoded: the codes are the numpy column as it is, no string per row.
        return pa.DictionaryArray.from_arrays(pa.array(codes, type=pa.int8()), pa.array(list(names)))

    broken, swept, mitigated = (values != NO_TIME for values in (table.broken_time, table.swept_time,
                                                                   table.mitigated_time))  # fmt: skip
    status = np.select([broken, swept, mitigated], [3, 2, 1], 0).astype(np.int8)
    nothing = pa.nulls(count, pa.float64())
    arrays = {
        "kind": labels(table.kind, table.kinds),
        "direction": labels((table.direction < 0).astype(np.int8), table.direction_names),
        "anchor_time": pa.array(table.anchor_time),
        "confirmed_time": pa.array(table.confirmed_time),
        "level": nothing if table.zone else floats(table.top),
        "top": floats(table.top) if table.zone else nothing,
        "bottom": floats(table.bottom) if table.zone else nothing,
        "mitigated_time": times(table.mitigated_time),
        "broken_time": times(table.broken_time),
        "swept_time": times(table.swept_time),
        "status": labels(status, STATUSES),
    }
    return arrays | {name: floats(column) for name, column in table.extra.items()}


def _struct_list(columns: Columns) -> Any:
    """One `list<struct>` value holding the whole table, or None when a column has no Arrow type (mixed kinds
    of values): such a table stays in the JSON document."""
    try:
        if columns.source is not None:
            built = _event_arrays(columns.source)
            arrays = [built[name] for name in columns]
        else:
            arrays = [_array(values) for values in columns.values()]
        rows = pa.StructArray.from_arrays(arrays, names=list(columns))
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError):
        return None
    return pa.ListArray.from_arrays(pa.array([0, len(rows)], type=pa.int32()), rows)


def _series(node: dict[str, Any]) -> Columns | None:
    open_time = node.get("open_time")
    if not isinstance(open_time, list) or not open_time:
        return None
    length = len(open_time)
    series = Columns(
        (key, value)
        for key, value in node.items()
        if isinstance(value, list) and len(value) == length and not isinstance(value[0], dict | list)
    )
    return series if len(series) > 1 else None


def _split(node: Any, path: tuple[str, ...], tables: dict[str, Any]) -> Any:
    """The node without its tables; each table's Arrow value goes into `tables` under its dotted path."""
    if isinstance(node, Columns):
        value = _struct_list(node)
        if value is not None:
            tables[".".join(path)] = value
            return _MOVED
        return node
    if isinstance(node, dict):
        series = _series(node)
        if series is not None:
            value = _struct_list(series)
            if value is not None:
                tables[".".join(path)] = value
                node = {key: item for key, item in node.items() if key not in series}
        kept = {key: _split(item, (*path, key), tables) for key, item in node.items()}
        return {key: item for key, item in kept.items() if item is not _MOVED}
    return node


_MOVED = object()


def encode(document: dict[str, Any]) -> bytes:
    tables: dict[str, Any] = {}
    rest = _split(document, (), tables)
    metadata = {DOCUMENT_KEY: orjson.dumps(rest, option=orjson.OPT_SERIALIZE_NUMPY)}
    batch = pa.RecordBatch.from_arrays(list(tables.values()), names=list(tables))
    schema = batch.schema.with_metadata(metadata)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        writer.write_batch(batch.replace_schema_metadata(metadata))
    body: bytes = sink.getvalue().to_pybytes()
    return body
