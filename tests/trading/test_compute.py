"""The worker function in-process (HTTP tests run it in worker processes, which coverage does not see), the
admission bound, and event-loop liveness while a large analysis runs."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from httpx import AsyncClient

from app.config import Settings
from app.core.errors import MalformedJson, json_pointer
from app.trading.compute import run_analysis
from app.trading.errors import AnalysisBusy, BodyInvalid, InvalidMarketData
from app.trading.parsing import Limits
from app.trading.service import AnalysisRunner
from tests.trading.conftest import MINUTE_MS, START_MS, candle_rows, trade_rows
from tests.trading.test_analyze import MARKET_DATA_CASES, SHAPE_CASES

LIMITS = Limits(max_candles=1_000, max_trades=10_000)


def run(body: Any) -> dict[str, Any]:
    result: dict[str, Any] = orjson.loads(run_analysis(orjson.dumps(body), LIMITS))
    return result


def test_compact_footprint_keeps_the_last_bar_only() -> None:
    rows = candle_rows(50, taker=False)
    trades = trade_rows(3_000, bars=50)
    compact = run({"candles": rows, "trades": trades, "modules": ["orderflow", "cvd"]})
    full = run({"candles": rows, "trades": trades, "modules": ["orderflow", "cvd"], "include_series": True})
    bars = full["orderflow"]["footprint"]["bars"]
    assert len(bars) == 50
    assert compact["orderflow"]["footprint"]["bars"] == bars[-1:]
    assert compact["cvd"]["side_source"] == "exchange_flag"
    assert compact["cvd"]["last"]["delta"] == full["cvd"]["delta"][-1]


def test_parameters_reach_the_engine() -> None:
    params = {
        "indicators": {"rsi_period": 7, "vwap_anchor": "none"},
        "fibonacci": {"retracements": [0.5, 0.618]},
        "signal": {"weights": {"smc": 1.0, "cvd": 0.0}, "account_equity": 10_000, "risk_pct": 1},
    }
    result = run({"candles": candle_rows(200), "params": params})
    assert result["indicators"]["params"]["rsi_period"] == 7
    assert [row["ratio"] for row in result["fibonacci"]["retracements"]] == [0.5, 0.618]
    weights = {component["name"]: component["weight"] for component in result["signal"]["components"]}
    assert weights["cvd"] == 0.0


def test_param_errors_are_collected_per_module() -> None:
    body = {"candles": candle_rows(5), "params": {"cvd": {"anchor": "month"}, "smc": {"atr_period": 1}}}
    with pytest.raises(BodyInvalid) as raised:
        run(body)
    locations = [error["loc"] for error in raised.value.errors]
    assert ("body", "params", "cvd", "anchor") in locations or ("body", "params", "cvd") in locations
    with pytest.raises(BodyInvalid) as raised:
        run({"candles": candle_rows(5), "params": {"smc": {"atr_period": 1}}})
    assert raised.value.errors[0]["loc"] == ("body", "params", "smc", "atr_period")


def test_market_data_errors_survive_pickling() -> None:
    import pickle

    error = InvalidMarketData([{"pointer": "#/candles/1/h", "detail": "is below max(o, c)", "code": "x"}], 7)
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes, as the worker pool does
    assert copy.extensions == error.extensions
    assert copy.detail == error.detail


def test_trades_may_be_empty_and_trades_count_is_accepted() -> None:
    rows = candle_rows(20)
    for index, row in enumerate(rows):
        row["trades_count"] = index
    result = run({"candles": rows, "trades": [], "modules": ["cvd"]})
    assert result["cvd"]["side_source"] == "exchange_flag"


def test_one_candle_with_an_interval() -> None:
    row = {"t": START_MS, "o": 1, "h": 2, "l": 0.5, "c": 1.5, "v": 3}
    assert run({"candles": [row], "interval_ms": MINUTE_MS})["bar_count"] == 1


async def test_admission_is_bounded(settings: Settings) -> None:
    runner = AnalysisRunner(settings.model_copy(update={"analyze_workers": 1, "analyze_max_queued": 1}))
    async with runner.admission(), runner.admission():
        with pytest.raises(AnalysisBusy) as raised:
            async with runner.admission():
                pass  # pragma: no cover - refused on entry
        assert raised.value.headers["retry-after"] == "1"
    async with runner.admission():
        pass
    await runner.aclose()


async def test_health_keeps_answering_while_a_large_analysis_runs(signals_client: AsyncClient) -> None:
    body = orjson.dumps({"candles": candle_rows(60_000), "include_series": True})
    analysis = asyncio.create_task(
        signals_client.post("/v1/analyze", content=body, headers={"content-type": "application/json"})
    )
    answered_during = 0
    while not analysis.done():
        response = await signals_client.get("/healthz")
        assert response.status_code == 200
        if not analysis.done():
            answered_during += 1
        await asyncio.sleep(0.01)
    assert (await analysis).status_code == 200
    # Liveness, not speed: the probe kept being answered many times while the analysis was in flight.
    assert answered_during >= 5


@pytest.mark.parametrize(("body", "pointer", "code"), MARKET_DATA_CASES.values(), ids=MARKET_DATA_CASES.keys())
def test_market_data_rules_in_process(body: dict[str, Any], pointer: str, code: str) -> None:
    with pytest.raises(InvalidMarketData) as raised:
        run(body)
    first = raised.value.errors[0]
    assert (first["pointer"], first["code"]) == (pointer, code)


@pytest.mark.parametrize(("body", "pointer", "code"), SHAPE_CASES.values(), ids=SHAPE_CASES.keys())
def test_shape_errors_in_process(body: Any, pointer: str, code: str) -> None:
    with pytest.raises(BodyInvalid) as raised:
        run(body)
    first = raised.value.errors[0]
    assert (json_pointer(first["loc"][1:]), first["type"]) == (pointer, code)


def test_overflowing_numbers_and_malformed_json_in_process() -> None:
    raw = orjson.dumps({"candles": candle_rows(5)}).replace(b'"v":', b'"v":1e400,"x":', 1)
    with pytest.raises(BodyInvalid):  # the unknown key "x" is a shape error, reported first
        run_analysis(raw, LIMITS)
    raw = orjson.dumps({"candles": candle_rows(5, taker=False)})
    head, _, tail = raw.partition(b'"v":')
    value_end = tail.index(b"}")
    overflowing = head + b'"v":1e400' + tail[value_end:]
    with pytest.raises(InvalidMarketData) as raised:
        run_analysis(overflowing, LIMITS)
    assert raised.value.errors[0]["pointer"] == "#/candles/0/v"
    with pytest.raises(MalformedJson):
        run_analysis(b'{"candles": [Infinity]}', LIMITS)
