"""A tick too fine for the prices (a profile or footprint of more levels than the engine builds, or a tick so small
that price / tick overflows) is a 422 naming the parameter, on both analysis routes, never a 500."""

from __future__ import annotations

import pytest
from httpx import AsyncClient
from redis.asyncio import Redis

from app.analytics.orderflow import OrderflowParams, tick_problems
from tests.signals.test_signals import seed_walk
from tests.trading.conftest import candle_rows
from tests.trading.test_analyze import candles_of, post, problem

TICKS = {"denormal": 5e-324, "float32 tiny": 1.175494351e-38, "too many levels": 1e-6}


# A footprint builds only the levels its trades touch, so only an overflowing tick is too fine for it.
CASES = [("profile_tick", tick) for tick in TICKS.values()] + [
    ("tick", TICKS["denormal"]),
    ("tick", TICKS["float32 tiny"]),
]
CASE_IDS = [f"profile_tick {name}" for name in TICKS] + ["tick denormal", "tick float32 tiny"]


@pytest.mark.parametrize(("name", "tick"), CASES, ids=CASE_IDS)
async def test_post_analyze_refuses_a_tick_too_fine(signals_client: AsyncClient, name: str, tick: float) -> None:
    rows = candle_rows(400)
    trades = [{"t": rows[0]["t"] + 1, "p": rows[0]["c"], "q": 1.0, "side": "buy"}] if name == "tick" else None
    body: dict[str, object] = {"candles": rows, "params": {"orderflow": {name: tick}}}
    if trades is not None:
        body["trades"] = trades
    response = await post(signals_client, body)
    errors = problem(response, 422, "validation-failed")["errors"]
    assert errors[0]["pointer"] == f"#/params/orderflow/{name}"
    assert "larger tick" in errors[0]["detail"]


@pytest.mark.parametrize("tick", TICKS.values(), ids=TICKS.keys())
async def test_the_stored_data_orderflow_route_refuses_a_profile_tick_too_fine(
    signals_client: AsyncClient, redis_client: Redis, tick: float
) -> None:
    await seed_walk(redis_client, closed=120)
    response = await signals_client.get(
        "/v1/analysis/binance/BTCUSDT/orderflow", params={"timeframe": "1m", "profile_tick": tick}
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "profile_tick" in response.text


def test_ticks_the_engine_can_use_raise_no_problem() -> None:
    candles = candles_of(candle_rows(400))
    assert tick_problems(candles, None, OrderflowParams()) == []
    assert tick_problems(candles, None, OrderflowParams(profile_tick=0.01, tick=1e-9)) == []  # no trades: no footprint
    ((name, message),) = tick_problems(candles, None, OrderflowParams(profile_tick=1e-4))
    assert name == "profile_tick"
    assert "more than 1000000 profile levels" in message
