"""Bad bodies in the columnar JSON and Arrow layouts: each one a problem (never a 500), read as in the row form."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest
from httpx import AsyncClient, Response

from app.config import Settings
from tests.trading.conftest import START_MS, candle_rows, signals_client_with
from tests.trading.test_analyze import problem
from tests.trading.test_formats import ARROW, arrow_stream, columns_of


def candle_columns(count: int = 30) -> dict[str, list[Any]]:
    return columns_of(candle_rows(count))


def changed(**changes: Any) -> dict[str, Any]:
    columns: dict[str, Any] = candle_columns()
    for key, value in changes.items():
        if value is None:
            columns.pop(key)
        elif callable(value):
            columns[key] = value(columns[key])
        else:
            columns[key] = value
    return columns


def at(index: int, value: Any) -> Any:
    def put(column: list[Any]) -> list[Any]:
        column = list(column)
        column[index] = value
        return column

    return put


async def post_json(client: AsyncClient, document: Any) -> Response:
    # The standard library writes integers beyond 64 bits (orjson refuses to).
    content = json.dumps(document).encode()
    return await client.post("/v1/analyze", content=content, headers={"content-type": "application/json"})


async def post_arrow(client: AsyncClient, body: bytes, **headers: str) -> Response:
    return await client.post("/v1/analyze", content=body, headers={"content-type": ARROW, **headers})


COLUMNAR_SHAPE_CASES = {
    "string price": (changed(c=at(17, "110")), "#/candles/c/17", "float_type"),
    "null close": (changed(c=at(2, None)), "#/candles/c/2", "float_type"),
    "boolean volume": (changed(v=at(1, True)), "#/candles/v/1", "float_type"),
    "fractional time": (changed(t=at(4, 1.5)), "#/candles/t/4", "int_type"),
    "missing column": (changed(h=None), "#/candles/h", "missing"),
    "unknown column": (changed(volume=[1] * 30), "#/candles/volume", "extra_forbidden"),
    "column not an array": (changed(o=5), "#/candles/o", "list_type"),
    "object in a column": (changed(l=at(0, {"x": 1})), "#/candles/l/0", "float_type"),
    # orjson reads integers beyond 64 bits as floats, in rows too (`int_type` there as well).
    "time beyond 64 bits": (changed(t=at(29, 2**70)), "#/candles/t/29", "int_type"),
}  # fmt: skip


@pytest.mark.parametrize(("columns", "pointer", "code"), COLUMNAR_SHAPE_CASES.values(), ids=COLUMNAR_SHAPE_CASES.keys())
async def test_columnar_shape_error_points_at_the_column_element(
    signals_client: AsyncClient, columns: dict[str, Any], pointer: str, code: str
) -> None:
    body = problem(await post_json(signals_client, {"candles": columns}), 422, "validation-failed")
    assert (body["errors"][0]["pointer"], body["errors"][0]["code"]) == (pointer, code)


def _with_taker(**changes: Any) -> dict[str, Any]:
    return {"taker_buy_v": [0.0] * 30, **changes}


COLUMNAR_RULE_CASES = {
    "low above the body": (changed(l=at(3, 1e9)), "#/candles/l/3", "low_above_body"),
    "high below the body": (changed(h=at(4, 1.0)), "#/candles/h/4", "high_below_body"),
    "negative volume": (changed(v=at(5, -1)), "#/candles/v/5", "negative"),
    "repeated open time": (changed(t=at(6, START_MS)), "#/candles/t/6", "not_increasing"),
    "time out of range": (changed(t=at(0, -1)), "#/candles/t/0", "out_of_range"),
    "time beyond int64": (changed(t=at(29, 2**63 + 5)), "#/candles/t/29", "out_of_range"),
    "value too large": (changed(v=at(2, 1e300)), "#/candles/v/2", "out_of_range"),
    "taker on some candles": (changed(taker_buy_v=at(7, None)), "#/candles/taker_buy_v/7", "partial_column"),
    "unequal lengths": (changed(c=lambda column: column[:-1]), "#/candles/c", "length_mismatch"),
    "empty": ({key: [] for key in "tohlcv"}, "#/candles", "too_short"),
}  # fmt: skip


@pytest.mark.parametrize(("columns", "pointer", "code"), COLUMNAR_RULE_CASES.values(), ids=COLUMNAR_RULE_CASES.keys())
async def test_columnar_market_data_rule_points_at_the_column_element(
    signals_client: AsyncClient, columns: dict[str, Any], pointer: str, code: str
) -> None:
    body = problem(await post_json(signals_client, {"candles": columns}), 422, "invalid-market-data")
    assert (body["errors"][0]["pointer"], body["errors"][0]["code"]) == (pointer, code)


async def test_columnar_errors_match_the_row_form_but_for_the_pointer(signals_client: AsyncClient) -> None:
    rows = candle_rows(40, taker=False)
    for index in (3, 9, 25):
        rows[index]["v"] = -1
        rows[index]["h"] = 0.5
    row_body = problem(await post_json(signals_client, {"candles": rows}), 422, "invalid-market-data")
    column_body = problem(await post_json(signals_client, {"candles": columns_of(rows)}), 422, "invalid-market-data")
    assert [(e["code"], e["detail"]) for e in row_body["errors"]] == [
        (e["code"], e["detail"]) for e in sorted(column_body["errors"], key=lambda e: int(e["pointer"].rsplit("/")[-1]))
    ]
    assert {e["pointer"] for e in column_body["errors"]} == {
        f"#/candles/{key}/{index}" for index in (3, 9, 25) for key in ("h", "v")
    }


async def test_columnar_trades_are_checked_like_rows(signals_client: AsyncClient) -> None:
    trades = {"t": [START_MS, START_MS + 1], "p": [1.0, 1.0], "q": [1.0, 1.0], "side": ["buy", "BUY"]}
    body = problem(await post_json(signals_client, {"candles": candle_columns(), "trades": trades}), 422,
                   "validation-failed")  # fmt: skip
    assert (body["errors"][0]["pointer"], body["errors"][0]["code"]) == ("#/trades/side/1", "literal_error")
    trades |= {"side": ["buy", ["sell"]]}
    body = problem(await post_json(signals_client, {"candles": candle_columns(), "trades": trades}), 422,
                   "validation-failed")  # fmt: skip
    assert body["errors"][0]["pointer"] == "#/trades/side/1"
    trades |= {"side": ["buy", "sell"], "t": [START_MS + 1, START_MS]}
    body = problem(await post_json(signals_client, {"candles": candle_columns(), "trades": trades}), 422,
                   "invalid-market-data")  # fmt: skip
    assert (body["errors"][0]["pointer"], body["errors"][0]["code"]) == ("#/trades/t/1", "not_sorted")


async def test_a_list_as_trade_side_in_rows_is_a_validation_problem(signals_client: AsyncClient) -> None:
    trades = [{"t": START_MS, "p": 1, "q": 1, "side": ["buy"]}]
    body = problem(await post_json(signals_client, {"candles": candle_rows(3), "trades": trades}), 422,
                   "validation-failed")  # fmt: skip
    assert body["errors"][0]["pointer"] == "#/trades/0/side"


def arrow_with(options: dict[str, Any] | None = None, **changes: Any) -> bytes:
    return arrow_stream(changed(**changes), options)


ARROW_VALIDATION_CASES = {
    "string column": (arrow_with(c=lambda column: [str(value) for value in column]), "#/candles/c", "float_type"),
    "float times": (arrow_with(t=lambda column: [float(value) for value in column]), "#/candles/t", "int_type"),
    "seconds timestamps": (
        arrow_with(t=lambda column: pa.array(np.array(column, dtype="datetime64[ms]"), type=pa.timestamp("s"))),
        "#/candles/t", "int_type",
    ),
    "nested column": (arrow_with(o=lambda column: [[value] for value in column]), "#/candles/o", "float_type"),
    "null close": (arrow_with(c=at(3, None)), "#/candles/c/3", "float_type"),
    "missing column": (arrow_with(l=None), "#/candles/l", "missing"),
    "unknown column": (arrow_with(volume=[1.0] * 30), "#/candles/volume", "extra_forbidden"),
    "unknown module": (arrow_with({"modules": ["astrology"]}), "#/modules/0", "literal_error"),
    "parameter out of range": (arrow_with({"params": {"cvd": {"swing_length": 0}}}), "#/params/cvd/swing_length",
                               "value_error"),
}  # fmt: skip


@pytest.mark.parametrize(
    ("body", "pointer", "code"), ARROW_VALIDATION_CASES.values(), ids=ARROW_VALIDATION_CASES.keys()
)
async def test_arrow_type_and_option_errors_are_validation_problems(
    signals_client: AsyncClient, body: bytes, pointer: str, code: str
) -> None:
    problem_body = problem(await post_arrow(signals_client, body), 422, "validation-failed")
    assert (problem_body["errors"][0]["pointer"], problem_body["errors"][0]["code"]) == (pointer, code)


ARROW_RULE_CASES = {
    "high below the body": (arrow_with(h=at(4, 1.0)), "#/candles/h/4", "high_below_body"),
    "not a number": (arrow_with(o=at(8, float("nan"))), "#/candles/o/8", "not_finite"),
    "infinite volume": (arrow_with(v=at(9, float("inf"))), "#/candles/v/9", "not_finite"),
    "time beyond int64": (
        arrow_with(t=lambda column: pa.array([*column[:-1], 2**64 - 1], type=pa.uint64())), "#/candles/t/29",
        "out_of_range",
    ),
    "negative time": (arrow_with(t=at(0, -5)), "#/candles/t/0", "out_of_range"),
    "taker on some candles": (arrow_with(taker_buy_v=at(2, None)), "#/candles/taker_buy_v/2", "partial_column"),
    "no rows": (arrow_stream({key: pa.array([], pa.float64()) for key in "tohlcv"}), "#/candles", "too_short"),
}  # fmt: skip


@pytest.mark.parametrize(("body", "pointer", "code"), ARROW_RULE_CASES.values(), ids=ARROW_RULE_CASES.keys())
async def test_arrow_market_data_rule_points_at_the_column_element(
    signals_client: AsyncClient, body: bytes, pointer: str, code: str
) -> None:
    problem_body = problem(await post_arrow(signals_client, body), 422, "invalid-market-data")
    assert (problem_body["errors"][0]["pointer"], problem_body["errors"][0]["code"]) == (pointer, code)


def _corrupted() -> bytes:
    body = bytearray(arrow_with())
    body[len(body) // 2 : len(body) // 2 + 64] = b"\xff" * 64
    return bytes(body)


def _options_raw(raw: bytes) -> bytes:
    table = pa.table(candle_columns()).replace_schema_metadata({b"options": raw})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    body: bytes = sink.getvalue().to_pybytes()
    return body


MALFORMED_ARROW = {
    "not arrow at all": b"this is not an arrow stream",
    "JSON sent as arrow": orjson.dumps({"candles": candle_rows(3)}),
    "truncated": arrow_with()[:-100],
    "corrupted buffers": _corrupted(),
    "empty body": b"",
    "three streams": arrow_with() + arrow_with() + arrow_with(),
    "options not JSON": _options_raw(b"{not json"),
    "options not an object": _options_raw(b"[1, 2]"),
}


@pytest.mark.parametrize("body", MALFORMED_ARROW.values(), ids=MALFORMED_ARROW.keys())
async def test_unreadable_arrow_is_a_400(signals_client: AsyncClient, body: bytes) -> None:
    problem(await post_arrow(signals_client, body), 400, "malformed-arrow")


@pytest.mark.parametrize("cut", [8, 100, 300, 1_000, 2_000])
async def test_any_truncation_of_an_arrow_body_is_a_problem(signals_client: AsyncClient, cut: int) -> None:
    response = await post_arrow(signals_client, arrow_with()[:cut])
    assert response.status_code in {400, 422}, response.text
    assert response.headers["content-type"] == "application/problem+json"


async def test_arrow_trades_stream_is_validated(signals_client: AsyncClient) -> None:
    candles = arrow_with()
    trades = {"t": [START_MS, START_MS + 1], "p": [1.0, 1.0], "q": [1.0, 1.0], "side": ["buy", "hold"]}
    body = problem(await post_arrow(signals_client, candles + arrow_stream(trades)), 422, "validation-failed")
    assert (body["errors"][0]["pointer"], body["errors"][0]["code"]) == ("#/trades/side/1", "literal_error")
    trades |= {"side": [1, -1]}
    body = problem(await post_arrow(signals_client, candles + arrow_stream(trades)), 422, "validation-failed")
    assert body["errors"][0]["pointer"] == "#/trades/side"
    trades |= {"side": ["buy", "sell"], "p": [1.0, 0.0]}
    body = problem(await post_arrow(signals_client, candles + arrow_stream(trades)), 422, "invalid-market-data")
    assert (body["errors"][0]["pointer"], body["errors"][0]["code"]) == ("#/trades/p/1", "not_positive")


async def test_unsupported_content_type_is_a_415(signals_client: AsyncClient) -> None:
    response = await signals_client.post("/v1/analyze", content=b"t,o,h,l,c,v", headers={"content-type": "text/csv"})
    problem(response, 415, "unsupported-media-type")


@pytest.mark.parametrize("accept", ["text/csv", "application/xml, text/html", f"{ARROW};q=0, application/json;q=0"])
async def test_unacceptable_accept_is_a_406(signals_client: AsyncClient, accept: str) -> None:
    body = orjson.dumps({"candles": candle_rows(5)})
    response = await signals_client.post(
        "/v1/analyze", content=body, headers={"content-type": "application/json", "accept": accept}
    )
    problem(response, 406, "not-acceptable")


async def test_arrow_bodies_have_the_same_limits(settings: Settings) -> None:
    async with signals_client_with(settings, analyze_max_candles=20, analyze_max_body_bytes=20_000) as client:
        body = problem(await post_arrow(client, arrow_with()), 422, "invalid-market-data")
        assert (body["errors"][0]["pointer"], body["errors"][0]["code"]) == ("#/candles", "too_long")
        columns = {key: values[:20] for key, values in candle_columns().items()}
        assert (await post_arrow(client, arrow_stream(columns))).status_code == 200
        big = arrow_stream(columns_of(candle_rows(1_000)))
        problem(await post_arrow(client, big), 413, "payload-too-large")
        body = problem(await post_json(client, {"candles": candle_columns()}), 422, "invalid-market-data")
        assert (body["errors"][0]["pointer"], body["errors"][0]["code"]) == ("#/candles", "too_long")


async def test_json_options_in_arrow_metadata_are_used(signals_client: AsyncClient) -> None:
    response = await post_arrow(signals_client, arrow_stream(candle_columns(), {"modules": ["fibonacci"]}))
    assert response.status_code == 200, response.text
    assert response.json()["modules"] == ["fibonacci"]
    assert json.loads(json.dumps(response.json()))["bar_count"] == 30
