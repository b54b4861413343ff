"""POST /v1/analyze in every body and response format: the same analysis whatever the layout.

Bodies: rows (JSON), columns (JSON), Arrow IPC. Responses: rows (JSON), columns (JSON, `format=columnar`),
Arrow IPC. Every input format gives byte-identical responses; the columnar and Arrow responses carry exactly the
row response's values. Validation of the new layouts: `test_formats_validation.py`.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest
from httpx import AsyncClient, Response

from app.trading.formats.columns_out import as_columns
from tests.analytics.real_data import hourly_candles
from tests.trading.conftest import candle_rows, trade_rows

ARROW = "application/vnd.apache.arrow.stream"


def columns_of(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {key: [row[key] for row in rows] for key in rows[0]}


def arrow_stream(columns: dict[str, Any], options: dict[str, Any] | None = None) -> bytes:
    table = pa.table(columns)
    if options is not None:
        table = table.replace_schema_metadata({"options": json.dumps(options)})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=max(1, table.num_rows // 3))  # several batches
    body: bytes = sink.getvalue().to_pybytes()
    return body


def bodies(
    rows: list[dict[str, Any]], trades: list[dict[str, Any]] | None, options: dict[str, Any]
) -> dict[str, tuple[bytes, str]]:
    """The same request as row JSON, columnar JSON and Arrow: body and Content-Type."""
    row_doc: dict[str, Any] = {"candles": rows, **options}
    column_doc: dict[str, Any] = {"candles": columns_of(rows), **options}
    arrow = arrow_stream(columns_of(rows), options)
    if trades is not None:
        row_doc["trades"], column_doc["trades"] = trades, columns_of(trades)
        arrow += arrow_stream(columns_of(trades))
    return {
        "rows": (orjson.dumps(row_doc), "application/json"),
        "columns": (orjson.dumps(column_doc), "application/json"),
        "arrow": (arrow, ARROW),
    }


RESPONSES = {"rows": ({}, {}), "columnar": ({"format": "columnar"}, {}), "arrow": ({}, {"accept": ARROW})}


async def analyse(client: AsyncClient, body: bytes, content_type: str, response: str) -> Response:
    params, headers = RESPONSES[response]
    return await client.post(
        "/v1/analyze", content=body, params=params, headers={"content-type": content_type, **headers}
    )


def empty_tables_as_rows(node: Any) -> Any:
    """The row layout writes an empty table as `[]`; the columnar one keeps its keys with empty arrays."""
    if isinstance(node, dict):
        if node and all(value == [] for value in node.values()):
            return []
        return {key: empty_tables_as_rows(value) for key, value in node.items()}
    return node


def arrow_document(body: bytes) -> dict[str, Any]:
    """The Arrow response put back together as the columnar JSON document."""
    table = pa.ipc.open_stream(body).read_all()
    assert table.num_rows == 1
    document: dict[str, Any] = json.loads(table.schema.metadata[b"document"])
    for name in table.column_names:
        struct = table.schema.field(name).type.value_type
        rows = table[name][0].as_py()
        columns = {struct.field(i).name: [row[struct.field(i).name] for row in rows] for i in range(struct.num_fields)}
        *parents, leaf = name.split(".") if name else [""]
        target = document
        for part in parents:
            target = target[part]
        target[leaf] = {**target.get(leaf, {}), **columns}
    return document


async def assert_formats_agree(
    client: AsyncClient, rows: list[dict[str, Any]], trades: list[dict[str, Any]] | None, options: dict[str, Any]
) -> None:
    by_response: dict[str, bytes] = {}
    for response_format in RESPONSES:
        contents = {}
        for body_format, (body, content_type) in bodies(rows, trades, options).items():
            response = await analyse(client, body, content_type, response_format)
            assert response.status_code == 200, (body_format, response_format, response.text)
            contents[body_format] = response.content
        # Byte-identical whatever layout the body had.
        assert contents["columns"] == contents["rows"], response_format
        assert contents["arrow"] == contents["rows"], response_format
        by_response[response_format] = contents["rows"]
    row_document = orjson.loads(by_response["rows"])
    columnar = orjson.loads(by_response["columnar"])
    assert empty_tables_as_rows(columnar) == as_columns(row_document)
    assert arrow_document(by_response["arrow"]) == columnar


def real_rows(count: int) -> list[dict[str, Any]]:
    candles = hourly_candles()
    columns = (candles.open_time, candles.open, candles.high, candles.low, candles.close, candles.volume)
    return [
        {"t": t, "o": o, "h": h, "l": lo, "c": c, "v": v}
        for t, o, h, lo, c, v in zip(*(column[-count:].tolist() for column in columns), strict=True)
    ]


async def test_real_candles_give_the_same_results_in_every_format(signals_client: AsyncClient) -> None:
    rows = real_rows(20_000)
    await assert_formats_agree(signals_client, rows, None, {"params": {"smc": {"swing_length": 5}}})


async def test_series_and_trades_give_the_same_results_in_every_format(signals_client: AsyncClient) -> None:
    rows, trades = candle_rows(300), trade_rows(5_000, bars=300)
    options = {"include_series": True, "params": {"orderflow": {"tick": 1.0}}}
    await assert_formats_agree(signals_client, rows, trades, options)


async def test_one_module_and_one_candle_in_every_format(signals_client: AsyncClient) -> None:
    rows = candle_rows(1)
    await assert_formats_agree(signals_client, rows, None, {"modules": ["cvd"], "interval_ms": 60_000})


async def test_arrow_response_types_and_layout(signals_client: AsyncClient) -> None:
    body, content_type = bodies(candle_rows(500), None, {"include_series": True})["arrow"]
    response = await analyse(signals_client, body, content_type, "arrow")
    assert response.headers["content-type"] == ARROW
    assert "accept" in response.headers["vary"].lower()
    table = pa.ipc.open_stream(response.content).read_all()
    order_blocks = pa.Table.from_struct_array(table["smc.order_blocks"].combine_chunks().values)
    assert order_blocks.schema.field("anchor_time").type == pa.int64()
    assert order_blocks.schema.field("top").type == pa.float64()
    assert order_blocks.num_rows > 0
    series = pa.Table.from_struct_array(table["cvd"].combine_chunks().values)
    assert series.num_rows == 500
    assert {"open_time", "delta", "cvd"} <= set(series.column_names)
    document = json.loads(table.schema.metadata[b"document"])
    assert document["bar_count"] == 500
    assert "order_blocks" not in document["smc"]
    assert "delta" not in document["cvd"]
    assert document["cvd"]["last"]["open_time"] == series["open_time"][-1].as_py()


async def test_columnar_response_keeps_the_keys_of_an_empty_table(signals_client: AsyncClient) -> None:
    flat = [{"t": 1_700_000_000_000 + i * 60_000, "o": 5, "h": 5, "l": 5, "c": 5, "v": 1} for i in range(30)]
    response = await analyse(signals_client, orjson.dumps({"candles": flat}), "application/json", "columnar")
    structure = response.json()["smc"]["structure"]
    assert structure["kind"] == []
    assert {"anchor_time", "status", "level"} <= set(structure)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (ARROW, ARROW),
        ("application/json", "application/json"),
        ("*/*", "application/json"),
        (f"application/json;q=0.5, {ARROW}", ARROW),
        (f"{ARROW};q=0.2, application/*;q=0.9", "application/json"),
        (f"text/html, {ARROW};q=0.1", ARROW),
    ],
)
async def test_accept_chooses_the_response_format(signals_client: AsyncClient, accept: str, expected: str) -> None:
    body = orjson.dumps({"candles": candle_rows(20), "modules": ["smc"]})
    response = await signals_client.post(
        "/v1/analyze", content=body, headers={"content-type": "application/json", "accept": accept}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == expected


async def test_arrow_body_of_many_batches_with_small_types_is_read(signals_client: AsyncClient) -> None:
    rows = candle_rows(100)
    columns: dict[str, Any] = columns_of(rows)
    columns["t"] = pa.array(np.array(columns["t"], dtype="datetime64[ms]"), type=pa.timestamp("ms", tz="UTC"))
    columns["v"] = pa.array(np.array(columns["v"], dtype=np.float32).astype(np.float64))
    columns["trades_count"] = pa.array(np.arange(100, dtype=np.uint16))
    body = arrow_stream(columns, {"modules": ["cvd"]})
    response = await analyse(signals_client, body, ARROW, "rows")
    assert response.status_code == 200, response.text
    assert response.json()["bar_count"] == 100
