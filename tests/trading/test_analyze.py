"""POST /v1/analyze through the app: results, the compact and full forms, and validation as problem+json."""

from __future__ import annotations

import asyncio
from concurrent.futures import ProcessPoolExecutor
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from httpx import AsyncClient, Response

from app.analytics import AnalysisParams, Candles, CvdParams, OrderflowParams, SmcParams, Trades, analyze
from app.analytics.signals import COMPONENTS
from app.config import Settings
from app.trading.service import shared_runner
from tests.trading.conftest import MINUTE_MS, START_MS, candle_rows, signals_client_with, trade_rows

GOLDEN: dict[str, Any] = {"t": START_MS, "o": 100, "h": 110, "l": 95, "c": 106, "v": 1000, "taker_buy_v": 620}


async def post(client: AsyncClient, body: dict[str, Any] | bytes) -> Response:
    if isinstance(body, bytes):
        return await client.post("/v1/analyze", content=body, headers={"content-type": "application/json"})
    return await client.post("/v1/analyze", json=body)


def problem(response: Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == f"/problems/{slug}"
    return body


def candles_of(rows: list[dict[str, Any]], interval_ms: int | None = None) -> Candles:
    def column(key: str) -> list[Any]:
        return [row[key] for row in rows]

    return Candles.from_arrays(
        open_time=column("t"), open=column("o"), high=column("h"), low=column("l"), close=column("c"),
        volume=column("v"), taker_buy_volume=column("taker_buy_v") if "taker_buy_v" in rows[0] else None,
        interval_ms=interval_ms,
    )  # fmt: skip


def json_roundtrip(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY))


async def test_golden_kline_delta_is_exact(signals_client: AsyncClient) -> None:
    response = await post(signals_client, {"candles": [GOLDEN], "interval_ms": MINUTE_MS, "modules": ["cvd"]})
    assert response.status_code == 200, response.text
    cvd = response.json()["cvd"]
    assert cvd["side_source"] == "kline_taker_volume"
    assert cvd["last"]["delta"] == 240.0
    assert cvd["last"]["buy_volume"] == 620.0
    assert cvd["last"]["sell_volume"] == 380.0


async def test_candles_endpoint_rows_are_accepted_and_buy_v_is_the_taker_buy_volume(
    signals_client: AsyncClient,
) -> None:
    row = {k: v for k, v in GOLDEN.items() if k != "taker_buy_v"}
    row |= {"buy_v": 620, "sell_v": 380, "delta": 240, "trades": 12, "vwap": 104.2, "closed": True}
    response = await post(signals_client, {"candles": [row], "interval_ms": MINUTE_MS, "modules": ["cvd"]})
    assert response.status_code == 200, response.text
    assert response.json()["cvd"]["last"]["delta"] == 240.0


async def test_full_form_equals_the_engine_on_the_same_input(signals_client: AsyncClient) -> None:
    rows, trades = candle_rows(400, taker=False), trade_rows(20_000, bars=400)
    params = {"cvd": {"anchor": "day", "swing_length": 3}, "smc": {"swing_length": 4}, "orderflow": {"tick": 1.0}}
    response = await post(signals_client, {"candles": rows, "trades": trades, "params": params, "include_series": True})
    assert response.status_code == 200, response.text
    trade_columns = Trades.from_arrays(
        time=[t["t"] for t in trades], price=[t["p"] for t in trades], qty=[t["q"] for t in trades],
        side=[1 if t["side"] == "buy" else -1 for t in trades],
    )  # fmt: skip
    engine_params = AnalysisParams(
        cvd=CvdParams(anchor="day", swing_length=3), smc=SmcParams(swing_length=4), orderflow=OrderflowParams(tick=1.0)
    )
    expected = json_roundtrip(analyze(candles_of(rows), trade_columns, params=engine_params).to_dict())
    got = response.json()
    assert got["include_series"] is True
    for name in ("cvd", "indicators"):
        got[name].pop("last")
    del got["include_series"]
    assert got == expected
    assert got["orderflow"]["footprint"] is not None


async def test_compact_form_leaves_out_series_but_keeps_the_last_bar(signals_client: AsyncClient) -> None:
    rows = candle_rows(300)
    response = await post(signals_client, {"candles": rows})
    assert response.status_code == 200, response.text
    got = response.json()
    assert got["include_series"] is False
    assert set(got["modules"]) == {"cvd", "orderflow", "smc", "fibonacci", "indicators"}
    assert "cvd" not in got["cvd"]
    assert "sma" not in got["indicators"]
    full = json_roundtrip(analyze(candles_of(rows)).to_dict())
    assert got["cvd"]["last"]["cvd"] == full["cvd"]["cvd"][-1]
    assert got["indicators"]["last"]["rsi"] == full["indicators"]["rsi"][-1]
    assert got["smc"] == full["smc"]
    assert got["signal"] == full["signal"]


async def test_modules_subset_returns_only_those_and_the_signal(signals_client: AsyncClient) -> None:
    response = await post(signals_client, {"candles": candle_rows(120), "modules": ["smc", "fibonacci"]})
    got = response.json()
    assert got["modules"] == ["smc", "fibonacci"]
    assert {"smc", "fibonacci", "signal"} <= set(got)
    assert not {"cvd", "orderflow", "indicators"} & set(got)


async def test_one_candle_needs_an_interval(signals_client: AsyncClient) -> None:
    body = problem(await post(signals_client, {"candles": [GOLDEN]}), 422, "validation-failed")
    assert body["errors"][0]["pointer"] == "#/interval_ms"
    response = await post(signals_client, {"candles": [GOLDEN], "interval_ms": MINUTE_MS})
    assert response.status_code == 200
    assert response.json()["bar_count"] == 1


async def test_flat_bars_and_zero_volume_are_analysed(signals_client: AsyncClient) -> None:
    rows = [{"t": START_MS + i * MINUTE_MS, "o": 50, "h": 50, "l": 50, "c": 50, "v": 0} for i in range(60)]
    response = await post(signals_client, {"candles": rows})
    assert response.status_code == 200, response.text
    got = response.json()
    assert got["cvd"]["last"]["delta"] == 0.0
    assert got["cvd"]["last"]["delta_pct"] is None  # 0 / 0 has no value
    assert got["signal"]["bias"] == "neutral"


def _mutated(index: int, **changes: Any) -> dict[str, Any]:
    rows = candle_rows(10)
    rows[index].update(changes)
    return {"candles": rows}


MARKET_DATA_CASES = {
    "low above the body": (_mutated(3, l=1e9), "#/candles/3/l", "low_above_body"),
    "high below the body": (_mutated(4, h=1.0), "#/candles/4/h", "high_below_body"),
    "negative volume": (_mutated(5, v=-1), "#/candles/5/v", "negative"),
    "repeated open time": (_mutated(6, t=START_MS + 5 * MINUTE_MS), "#/candles/6/t", "not_increasing"),
    "taker-buy above volume": (_mutated(2, v=1, taker_buy_v=2), "#/candles/2/taker_buy_v", "outside_volume"),
    "open time out of range": (_mutated(0, t=-1), "#/candles/0/t", "out_of_range"),
    "taker-buy on some candles only": (_mutated(7, taker_buy_v=None), "#/candles/7/taker_buy_v", "partial_column"),
    "trade time going back": (
        {"candles": candle_rows(3),
         "trades": [{"t": 5, "p": 1, "q": 1, "side": "buy"}, {"t": 4, "p": 1, "q": 1, "side": "sell"}]},
        "#/trades/1/t",
        "not_sorted",
    ),
    "trade price zero": (
        {"candles": candle_rows(3), "trades": [{"t": START_MS, "p": 0, "q": 1, "side": "buy"}]},
        "#/trades/0/p",
        "not_positive",
    ),
}  # fmt: skip


@pytest.mark.parametrize(("body", "pointer", "code"), MARKET_DATA_CASES.values(), ids=MARKET_DATA_CASES.keys())
async def test_market_data_rule_is_a_422_pointing_at_the_element(
    signals_client: AsyncClient, body: dict[str, Any], pointer: str, code: str
) -> None:
    problem_body = problem(await post(signals_client, body), 422, "invalid-market-data")
    first = problem_body["errors"][0]
    assert (first["pointer"], first["code"]) == (pointer, code)
    assert pointer in problem_body["detail"]


async def test_a_number_overflowing_to_infinity_is_reported_at_its_element(signals_client: AsyncClient) -> None:
    # JSON has no NaN or Infinity literals; 1e400 is valid JSON that overflows a double.
    raw = orjson.dumps(_mutated(3, h=0)).replace(b'"h":0', b'"h":1e400')
    problem_body = problem(await post(signals_client, raw), 422, "invalid-market-data")
    assert problem_body["errors"][0]["pointer"] == "#/candles/3/h"
    assert problem_body["errors"][0]["code"] == "not_finite"


SHAPE_CASES = {
    "string price": (_mutated(3, h="110"), "#/candles/3/h", "float_type"),
    "boolean volume": (_mutated(1, v=True), "#/candles/1/v", "float_type"),
    "null close": (_mutated(2, c=None), "#/candles/2/c", "float_type"),
    "fractional time": (_mutated(4, t=1.5), "#/candles/4/t", "int_type"),
    "unknown key": (_mutated(0, volume=3), "#/candles/0/volume", "extra_forbidden"),
    "candle not an object": ({"candles": [1, 2]}, "#/candles/0", "model_type"),
    "candles neither array nor object": ({"candles": 5}, "#/candles", "list_type"),
    "no candles": ({"modules": ["cvd"]}, "#/candles", "missing"),
    "unknown module": ({"candles": candle_rows(3), "modules": ["astrology"]}, "#/modules/0", "literal_error"),
    "trade side": ({"candles": candle_rows(3), "trades": [{"t": 1, "p": 1, "q": 1, "side": "BUY"}]},
                   "#/trades/0/side", "literal_error"),
    "unknown parameter": ({"candles": candle_rows(3), "params": {"smc": {"swing_len": 3}}},
                          "#/params/smc/swing_len", "extra_forbidden"),
    "parameter out of range": ({"candles": candle_rows(3), "params": {"cvd": {"swing_length": 0}}},
                               "#/params/cvd/swing_length", "value_error"),
    "nested parameter": ({"candles": candle_rows(3), "params": {"signal": {"weights": {"smc": -1}}}},
                         "#/params/signal/weights/smc", "value_error"),
    "nested rule": ({"candles": candle_rows(3), "params": {"signal": {"weights": dict.fromkeys(COMPONENTS, 0)}}},
                    "#/params/signal/weights", "value_error"),
    "body not an object": ([1], "#", "model_attributes_type"),
}  # fmt: skip


@pytest.mark.parametrize(("body", "pointer", "code"), SHAPE_CASES.values(), ids=SHAPE_CASES.keys())
async def test_shape_error_is_a_validation_problem_pointing_at_the_field(
    signals_client: AsyncClient, body: Any, pointer: str, code: str
) -> None:
    response = await post(signals_client, orjson.dumps(body))
    problem_body = problem(response, 422, "validation-failed")
    assert problem_body["errors"][0]["pointer"] == pointer
    assert problem_body["errors"][0]["code"] == code


async def test_errors_are_capped_and_counted(signals_client: AsyncClient) -> None:
    rows = candle_rows(100, taker=False)
    for row in rows:
        row["v"] = -1
    problem_body = problem(await post(signals_client, {"candles": rows}), 422, "invalid-market-data")
    assert len(problem_body["errors"]) == 20
    assert problem_body["detail"].startswith("100 invalid values")


async def test_malformed_json_is_a_400(signals_client: AsyncClient) -> None:
    problem(await post(signals_client, b'{"candles": [NaN]}'), 400, "malformed-json")


@pytest.mark.parametrize("depth", [1_025, 1_100, 5_000])
async def test_json_nested_too_deeply_is_a_400_not_a_recursion_error(signals_client: AsyncClient, depth: int) -> None:
    body = b'{"candles": ' + b"[" * depth + b"]" * depth + b"}"
    problem_body = problem(await post(signals_client, body), 400, "malformed-json")
    assert "1024 levels" in problem_body["detail"]


async def test_finite_quantities_whose_sum_would_overflow_are_refused_at_their_element(
    signals_client: AsyncClient,
) -> None:
    rows = candle_rows(3)
    trades = [{"t": rows[1]["t"] + i, "p": 100.0, "q": 1e308, "side": "buy"} for i in range(2)]
    problem_body = problem(await post(signals_client, {"candles": rows, "trades": trades}), 422, "invalid-market-data")
    assert [(e["pointer"], e["code"]) for e in problem_body["errors"]] == [
        ("#/trades/0/q", "out_of_range"),
        ("#/trades/1/q", "out_of_range"),
    ]
    huge_volume = _mutated(2, v=1e300)
    problem_body = problem(await post(signals_client, huge_volume), 422, "invalid-market-data")
    assert (problem_body["errors"][0]["pointer"], problem_body["errors"][0]["code"]) == (
        "#/candles/2/v",
        "out_of_range",
    )


async def test_the_largest_accepted_values_analyse_without_error(signals_client: AsyncClient) -> None:
    rows = candle_rows(50)
    for row in rows:
        row["v"] = row["taker_buy_v"] = 1e18
    trades = [{"t": rows[10]["t"] + i, "p": 1e18, "q": 1e18, "side": "sell"} for i in range(1_000)]
    response = await post(signals_client, {"candles": rows, "trades": trades})
    assert response.status_code == 200, response.text


async def test_candle_and_trade_counts_are_limited_by_settings(settings: Settings) -> None:
    async with signals_client_with(settings, analyze_max_candles=5, analyze_max_trades=1) as client:
        body = problem(await post(client, {"candles": candle_rows(6)}), 422, "invalid-market-data")
        assert body["errors"][0]["pointer"] == "#/candles"
        assert body["errors"][0]["code"] == "too_long"
        trades = trade_rows(2, bars=3)
        body = problem(await post(client, {"candles": candle_rows(3), "trades": trades}), 422, "invalid-market-data")
        assert body["errors"][0]["pointer"] == "#/trades"
        assert (await post(client, {"candles": candle_rows(5), "trades": trades[:1]})).status_code == 200
        empty = problem(await post(client, {"candles": []}), 422, "invalid-market-data")
        assert empty["errors"][0]["code"] == "too_short"


async def test_the_route_has_its_own_body_limit(settings: Settings) -> None:
    rows = candle_rows(2_000)  # ~250 KB
    async with signals_client_with(settings, max_body_bytes=50_000, analyze_max_body_bytes=400_000) as client:
        assert (await post(client, {"candles": rows})).status_code == 200
        too_big = problem(await post(client, {"candles": rows * 2}), 413, "payload-too-large")
        assert "400000 bytes" in too_big["detail"]
        # Every other route keeps the global limit.
        assert (await client.post("/healthz", content=b" " * 60_000)).status_code == 413


async def test_analyses_run_in_a_thread_when_workers_is_zero(settings: Settings) -> None:
    async with signals_client_with(settings, analyze_workers=0) as client:
        response = await post(client, {"candles": [GOLDEN], "interval_ms": MINUTE_MS, "modules": ["cvd"]})
        assert response.json()["cvd"]["last"]["delta"] == 240.0
        assert problem(await post(client, _mutated(3, l=1e9)), 422, "invalid-market-data")


async def test_openapi_documents_the_body_and_the_scope(signals_client: AsyncClient) -> None:
    schema = (await signals_client.get("/openapi.json")).json()
    operation = schema["paths"]["/v1/analyze"]["post"]
    body_schema = operation["requestBody"]["content"]["application/json"]["schema"]
    rows, columns = body_schema["properties"]["candles"]["anyOf"]
    assert {"t", "o", "h", "l", "c", "v", "taker_buy_v"} <= set(rows["items"]["properties"])
    assert columns["properties"]["c"]["type"] == "array"
    assert "$defs" not in orjson.dumps(body_schema).decode()
    assert {"406", "413", "415", "422"} <= set(operation["responses"])
    arrow = "application/vnd.apache.arrow.stream"
    assert operation["requestBody"]["content"][arrow]["schema"]["format"] == "binary"
    assert arrow in operation["responses"]["200"]["content"]
    assert {"rows", "columnar"} == set(operation["parameters"][0]["schema"]["enum"])
    assert all(scopes == ["signals:read"] for alternative in operation["security"] for scopes in alternative.values())


async def test_a_bar_flagged_partial_by_get_candles_can_be_posted_back(signals_client: AsyncClient) -> None:
    rows = candle_rows(30)
    rows[0]["partial"] = True  # the first bar of a session whose repair failed (GET /v1/candles flags it)
    response = await post(signals_client, {"candles": rows})
    assert response.status_code == 200, response.text


async def test_a_served_process_starts_its_analysis_workers_at_start_up(settings: Settings) -> None:
    """`deltaflow serve` forks every analysis worker in the background as it starts, so the first signal does not
    wait for one; an app built for tests starts none until it is used."""
    state = SimpleNamespace(served=True)
    async with shared_runner(state, settings.model_copy(update={"analyze_workers": 2})) as runner:
        for _ in range(400):  # forked by the background start-up task, without any call
            executor = runner._executor
            if isinstance(executor, ProcessPoolExecutor) and len(executor._processes) == 2:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the workers were not started")
    async with shared_runner(SimpleNamespace(), settings) as idle:
        await asyncio.sleep(0.05)
        assert idle._executor is None
