"""POST /v1/signals/batch: each item its own result or problem, request order kept, one bad item never fails the
batch; the batch as a whole is rejected only when its envelope is invalid."""

from __future__ import annotations

from typing import Any

from httpx import AsyncClient
from redis.asyncio import Redis

from tests.signals.test_signals import PATH, expected_signal, seed_walk
from tests.trading.conftest import signals_client_with

BATCH = "/v1/signals/batch"


def item(symbol: str = "BTCUSDT", **fields: Any) -> dict[str, Any]:
    return {"venue": "binance", "symbol": symbol, "timeframe": "1m", **fields}


async def test_each_item_gets_its_signal_or_its_own_problem(signals_client: AsyncClient, redis_client: Redis) -> None:
    rows = await seed_walk(redis_client)
    items = [
        item(),
        item("DOGEUSDT"),
        item(timeframe="7m"),
        {"venue": "binance"},
        item(colour="red"),
        item("ETHUSDT"),  # configured, no data yet
        item(include_forming=True),
    ]
    response = await signals_client.post(BATCH, json={"items": items})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["count"], body["errors"]) == (7, 5)
    results = body["results"]
    assert [r["status"] for r in results] == [200, 404, 422, 422, 422, 503, 200]
    assert results[0]["signal"]["signal"] == expected_signal(rows[:-1])
    assert results[0]["signal"]["feed"]["state"] == "no_ingestor"
    assert results[6]["signal"]["forming"] is True
    assert results[6]["signal"]["signal"] == expected_signal(rows)
    problems = [r["problem"] for r in results[1:6]]
    assert [p["type"] for p in problems] == [
        "/problems/symbol-not-found",
        "/problems/timeframe-invalid",
        "/problems/validation-failed",
        "/problems/validation-failed",
        "/problems/market-data-unavailable",
    ]
    assert "BTCUSDT" in problems[0]["valid"]
    assert [p["instance"] for p in problems] == [f"{BATCH}#/items/{i}" for i in range(1, 6)]
    assert {e["pointer"] for e in problems[2]["errors"]} == {"#/symbol"}
    assert {e["pointer"] for e in problems[3]["errors"]} == {"#/colour"}
    assert all(p["request_id"] == response.headers["x-request-id"] for p in problems)


async def test_a_batch_shares_the_cache_with_single_requests(signals_client: AsyncClient, redis_client: Redis) -> None:
    await seed_walk(redis_client)
    single = await signals_client.get(PATH)
    batch = (await signals_client.post(BATCH, json={"items": [item(), item()]})).json()
    assert [r["cache"] for r in batch["results"]] == ["hit", "hit"]
    assert batch["results"][0]["etag"] == single.headers["etag"]


async def test_sizing_applies_to_every_item(signals_client: AsyncClient, redis_client: Redis) -> None:
    await seed_walk(redis_client, closed=400, drift=1.0)  # a decided signal: it has levels to size
    body = {"items": [item()], "account_equity": 5000, "risk_pct": 2}
    (result,) = (await signals_client.post(BATCH, json=body)).json()["results"]
    levels = result["signal"]["signal"]["levels"]
    assert levels["position_size"] == 100 / abs(levels["entry"] - levels["stop"])
    lone = await signals_client.post(BATCH, json={"items": [item()], "risk_pct": 2})
    assert lone.status_code == 422
    assert lone.json()["errors"][0]["pointer"] == "#/account_equity"


async def test_an_invalid_envelope_fails_the_whole_batch(signals_client: AsyncClient, redis_client: Redis) -> None:
    await seed_walk(redis_client)
    bodies: list[dict[str, object]] = [{}, {"items": []}, {"items": "BTCUSDT"}, {"items": [item()], "extra": 1}]
    for body in bodies:
        response = await signals_client.post(BATCH, json=body)
        assert response.status_code == 422, body
        assert response.headers["content-type"] == "application/problem+json"
    malformed = await signals_client.post(BATCH, content=b"{", headers={"content-type": "application/json"})
    assert malformed.status_code == 400


async def test_more_items_than_the_limit_is_422(settings: Any, redis_client: Redis) -> None:
    await seed_walk(redis_client)
    async with signals_client_with(settings, signal_batch_max_items=3) as client:
        assert (await client.post(BATCH, json={"items": [item()] * 3})).status_code == 200
        response = await client.post(BATCH, json={"items": [item()] * 4})
        assert response.status_code == 422
        assert response.json()["errors"][0]["detail"] == "at most 3 items"
