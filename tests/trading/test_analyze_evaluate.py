"""POST /v1/analyze with `evaluate`: the signal replayed at every bar of the request's candles and scored."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from httpx import AsyncClient

from app.analytics.evaluation import EvaluationParams
from app.analytics.track_record import track_record
from tests.trading.conftest import candle_rows, trade_rows
from tests.trading.test_analyze import candles_of, post, problem
from tests.trading.test_formats import analyse, bodies

ROWS = candle_rows(400, seed=11)


async def test_by_horizon_carries_every_group_and_both_baselines(signals_client: AsyncClient) -> None:
    response = await post(signals_client, {"candles": ROWS, "evaluate": {"horizons": [12, 1, 4, 4]}})
    assert response.status_code == 200, response.text
    evaluation = response.json()["evaluation"]
    assert list(evaluation["by_horizon"]) == ["1", "4", "12"]  # sorted, duplicates merged
    for figures in evaluation["by_horizon"].values():
        for group in ("all", "long", "short"):
            assert {"n", "mean_return", "hit_rate", "expectancy_r"} <= set(figures[group])
        for baseline in ("always_long", "random"):
            assert {"n", "mean_return"} <= set(figures["baselines"][baseline])
    assert (evaluation["fee_bps"], evaluation["slippage_bps"]) == (5.0, 5.0)
    # The engine on the same candles, byte for byte.
    expected = track_record(candles_of(ROWS), EvaluationParams(horizons=(1, 4, 12))).evaluation.to_dict()
    expected["by_horizon"] = expected.pop("horizons")
    assert evaluation == orjson.loads(orjson.dumps(expected))


async def test_fees_lower_every_return_by_the_round_trip(signals_client: AsyncClient) -> None:
    free = await post(signals_client, {"candles": ROWS, "evaluate": {"fees_bps": 0, "slippage_bps": 0}})
    costly = await post(signals_client, {"candles": ROWS, "evaluate": {"fees_bps": 20, "slippage_bps": 5}})
    for h in ("1", "24"):
        a, b = free.json()["evaluation"]["by_horizon"][h], costly.json()["evaluation"]["by_horizon"][h]
        assert a["all"]["n"] == b["all"]["n"]
        if a["all"]["mean_return"] is not None:
            assert b["all"]["mean_return"] == pytest.approx(a["all"]["mean_return"] - 2 * 25 / 1e4, abs=1e-12)
        long_free, long_costly = a["baselines"]["always_long"], b["baselines"]["always_long"]
        assert long_costly["mean_return"] == pytest.approx(long_free["mean_return"] - 2 * 25 / 1e4, abs=1e-12)


async def test_include_series_gives_the_per_bar_bias_score_and_forward_returns(signals_client: AsyncClient) -> None:
    body = {"candles": ROWS, "evaluate": {"horizons": [1, 5]}, "include_series": True}
    series = (await post(signals_client, body)).json()["evaluation"]["series"]
    assert series["open_time"] == [row["t"] for row in ROWS]
    assert set(series["bias"]) <= {-1, 0, 1}
    assert all(-1 <= score <= 1 for score in series["score"])
    opens, closes = [row["o"] for row in ROWS], [row["c"] for row in ROWS]
    for h in (1, 5):
        column = series[f"forward_return_{h}"]
        for t in (0, 17, 200, len(ROWS) - h - 1):  # independently: close[t + h] / open[t + 1] - 1
            assert column[t] == pytest.approx(closes[t + h] / opens[t + 1] - 1, rel=1e-12)
        assert column[len(ROWS) - h :] == [None] * h  # not yet known at the end


@pytest.mark.parametrize("response_format", ["rows", "columnar", "arrow"])
async def test_columnar_and_arrow_bodies_give_the_same_evaluation(
    signals_client: AsyncClient, response_format: str
) -> None:
    options: dict[str, Any] = {"evaluate": {"horizons": [1, 4]}, "include_series": True}
    answers = {
        layout: (await analyse(signals_client, body, content_type, response_format)).content
        for layout, (body, content_type) in bodies(ROWS, None, options).items()
    }
    assert answers["rows"] == answers["columns"] == answers["arrow"]
    if response_format == "arrow":
        import pyarrow as pa

        table = pa.ipc.open_stream(answers["arrow"]).read_all()
        assert "evaluation.series" in table.column_names


@pytest.mark.parametrize(
    ("evaluate", "pointer"),
    [
        ({"horizons": [0]}, "#/evaluate/horizons/0"),
        ({"horizons": [1001]}, "#/evaluate/horizons/0"),
        ({"horizons": list(range(1, 18))}, "#/evaluate/horizons"),
        ({"horizons": []}, "#/evaluate/horizons"),
        ({"fees_bps": -1}, "#/evaluate/fees_bps"),
        ({"slippage": 5}, "#/evaluate/slippage"),
        ("yes", "#/evaluate"),
    ],
)
async def test_a_bad_evaluate_member_is_a_422_at_its_pointer(
    signals_client: AsyncClient, evaluate: Any, pointer: str
) -> None:
    body = problem(await post(signals_client, {"candles": ROWS[:50], "evaluate": evaluate}), 422, "validation-failed")
    assert pointer in [error["pointer"] for error in body["errors"]], body


async def test_evaluate_with_trades_is_refused_rather_than_scoring_another_signal(signals_client: AsyncClient) -> None:
    body = {"candles": ROWS[:60], "trades": trade_rows(200, 60), "evaluate": {}}
    refused = problem(await post(signals_client, body), 422, "validation-failed")
    assert refused["errors"][0]["pointer"] == "#/evaluate"


async def test_flat_prices_and_horizons_past_the_end_report_nothing_rather_than_fail(
    signals_client: AsyncClient,
) -> None:
    flat = [{**row, "o": 100.0, "h": 100.0, "l": 100.0, "c": 100.0} for row in ROWS[:80]]
    response = await post(signals_client, {"candles": flat, "evaluate": {"horizons": [1, 500]}})
    assert response.status_code == 200, response.text
    by_horizon = response.json()["evaluation"]["by_horizon"]
    assert by_horizon["500"]["all"]["n"] == 0
    assert by_horizon["500"]["all"]["insufficient"] is True
    assert by_horizon["1"]["baselines"]["always_long"]["n"] == 79
    assert by_horizon["1"]["baselines"]["always_long"]["mean_return"] == pytest.approx(-2 * 10 / 1e4)
    assert np.isfinite(by_horizon["1"]["baselines"]["always_long"]["mean_return"])
