"""`POST /v1/analyze` with the calibrated signal (the default; `params.signal.calibrated` false gives the heuristic
one): the engine's answer with its `model` block, the model's parameters validated like every other parameter."""

from __future__ import annotations

from typing import Any

import pytest
from httpx import AsyncClient

from app.analytics import AnalysisParams, SignalParams, analyze
from app.analytics.evaluation import EvaluationParams
from app.analytics.model import ModelParams
from app.analytics.track_record import track_record
from app.config import Settings
from tests.trading.conftest import candle_rows, signals_client_with
from tests.trading.test_analyze import candles_of, json_roundtrip, post, problem

MODEL: dict[str, int] = {"horizon": 12, "window": 300, "min_rows": 100}


async def test_the_calibrated_signal_is_the_engines_with_its_model_block(signals_client: AsyncClient) -> None:
    rows = candle_rows(400)
    body = {"candles": rows, "params": {"signal": {"calibrated": True, "model": MODEL}}}
    response = await post(signals_client, body)
    assert response.status_code == 200, response.text
    signal = response.json()["signal"]
    params = AnalysisParams(
        signal=SignalParams(calibrated=True, model=ModelParams(horizon=12, window=300, min_rows=100))
    )
    assert signal == json_roundtrip(analyze(candles_of(rows), params=params).signal.to_dict())
    model = signal["model"]
    assert (model["horizon_bars"], model["window_bars"], model["fees_round_trip_bp"]) == (12, 300, 20.0)
    assert model["calibration_rows"] > 100
    assert model["shrinkage_bars_per_outcome"] == 24  # h 12 x the default outcome spacing of 2
    assert signal["bias"] in {"long", "short", "neutral"}
    assert model["reasons"]


async def test_the_default_is_calibrated_and_the_heuristic_signal_has_no_model_block(
    signals_client: AsyncClient,
) -> None:
    rows = candle_rows(400)
    default = await post(signals_client, {"candles": rows, "params": {"signal": {"model": MODEL}}})
    assert default.status_code == 200, default.text
    flagged = await post(signals_client, {"candles": rows, "params": {"signal": {"calibrated": True, "model": MODEL}}})
    assert default.json()["signal"] == flagged.json()["signal"]
    assert default.json()["signal"]["model"]["calibration_rows"] > 100
    heuristic = await post(signals_client, {"candles": rows, "params": {"signal": {"calibrated": False}}})
    assert heuristic.status_code == 200, heuristic.text
    assert "model" not in heuristic.json()["signal"]
    expected = analyze(candles_of(rows), params=AnalysisParams(signal=SignalParams(calibrated=False))).signal
    assert heuristic.json()["signal"] == json_roundtrip(expected.to_dict())


async def test_too_few_bars_for_a_model_is_a_neutral_signal_that_says_why(signals_client: AsyncClient) -> None:
    response = await post(signals_client, {"candles": candle_rows(200)})
    assert response.status_code == 200, response.text
    signal = response.json()["signal"]
    assert (signal["bias"], signal["confidence"], signal["levels"]) == ("neutral", 0.0, None)
    assert signal["model"]["calibration_rows"] == 0
    assert "no model" in signal["model"]["reasons"][0]


MODEL_CASES: dict[str, tuple[dict[str, Any], str, str]] = {
    "horizon out of range": ({"horizon": 0}, "#/params/signal/model/horizon", "value_error"),
    "window too small": ({"window": 10}, "#/params/signal/model/window", "value_error"),
    "unknown model parameter": ({"depth": 3}, "#/params/signal/model/depth", "extra_forbidden"),
    "fees as text": ({"cost_per_side": "ten"}, "#/params/signal/model/cost_per_side", "float_parsing"),
}


@pytest.mark.parametrize(("model", "pointer", "code"), MODEL_CASES.values(), ids=MODEL_CASES.keys())
async def test_a_bad_model_parameter_is_a_422_pointing_at_it(
    signals_client: AsyncClient, model: dict[str, Any], pointer: str, code: str
) -> None:
    body = {"candles": candle_rows(3), "params": {"signal": {"calibrated": True, "model": model}}}
    errors = problem(await post(signals_client, body), 422, "validation-failed")["errors"]
    assert (errors[0]["pointer"], errors[0]["code"]) == (pointer, code)


async def test_the_calibrated_signals_track_record_is_the_engines(signals_client: AsyncClient) -> None:
    rows = candle_rows(400)
    body = {"candles": rows, "params": {"signal": {"calibrated": True, "model": MODEL}}, "evaluate": {"horizons": [12]}}
    response = await post(signals_client, body)
    assert response.status_code == 200, response.text
    params = AnalysisParams(
        signal=SignalParams(calibrated=True, model=ModelParams(horizon=12, window=300, min_rows=100))
    )
    expected = track_record(candles_of(rows), EvaluationParams(horizons=(12,)), params=params).evaluation.to_dict()
    expected["by_horizon"] = expected.pop("horizons")
    evaluation = response.json()["evaluation"]
    assert evaluation == json_roundtrip(expected)
    heuristic_body = {"candles": rows, "params": {"signal": {"calibrated": False}}, "evaluate": {"horizons": [12]}}
    heuristic = await post(signals_client, heuristic_body)
    assert heuristic.json()["evaluation"] != evaluation  # the replay is the calibrated signal's


async def test_evaluating_the_calibrated_signal_is_bounded_by_a_setting(settings: Settings) -> None:
    body = {"candles": candle_rows(150), "params": {"signal": {"calibrated": True}}, "evaluate": {}}
    async with signals_client_with(settings, analyze_evaluate_calibrated_max_candles=100) as client:
        errors = problem(await post(client, body), 422, "invalid-market-data")["errors"]
        assert (errors[0]["pointer"], errors[0]["code"]) == ("#/candles", "too_long")
        assert "at most 100 candles" in errors[0]["detail"]
        assert "150 given" in errors[0]["detail"]
        assert '"calibrated": false' in errors[0]["detail"]  # the way out is named
        assert (await post(client, {**body, "candles": candle_rows(100)})).status_code == 200
        assert (await post(client, {**body, "params": {}})).status_code == 422  # the default is calibrated
        heuristic = {**body, "params": {"signal": {"calibrated": False}}}
        assert (await post(client, heuristic)).status_code == 200  # the heuristic replay is not bounded
