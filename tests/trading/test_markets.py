"""/v1/markets, /v1/candles and /v1/orderbook over what the ingestors store in Redis."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from httpx import AsyncClient
from redis.asyncio import Redis

from app.market.keys import FeedKeys

MINUTE = 60_000
T0 = 1_700_000_000_000


def bar(t: int, *, closed: bool = True) -> dict[str, Any]:
    return {
        "t": t,
        "o": 100.0,
        "h": 101.0,
        "l": 99.0,
        "c": 100.5,
        "v": 10.0,
        "buy_v": 6.0,
        "sell_v": 4.0,
        "delta": 2.0,
        "trades": 7,
        "vwap": 100.2,
        "closed": closed,
    }


async def seed_feed(redis: Redis, venue: str = "binance", symbol: str = "BTCUSDT", bars: int = 3) -> None:
    """Write bars and a book in the stored layout (as the ingestion pipeline does)."""
    keys = FeedKeys(venue, symbol)
    await redis.zadd(keys.bars["1m"], {orjson.dumps(bar(T0 + i * MINUTE)): T0 + i * MINUTE for i in range(bars)})
    await redis.set(keys.forming["1m"], orjson.dumps(bar(T0 + bars * MINUTE, closed=False)), ex=60)
    book = {"bids": [[100.0, 1.0], [99.5, 2.0]], "asks": [[100.5, 1.5], [101.0, 3.0]], "last_update_id": 42, "ts": T0}
    await redis.set(keys.book, orjson.dumps(book), ex=60)


@pytest.fixture
async def market_client(signals_client: AsyncClient, app: Any, redis_client: Redis) -> AsyncClient:
    from app.auth.scopes import Role
    from app.keys.admin import ensure_tenant, issue_key

    async with app.state.session_factory() as session:
        tenant = await ensure_tenant(session, "market-tests")
        _key, secret = await issue_key(session, app.state.settings, tenant_id=tenant.id, name="m", role=Role.READER)
        await session.commit()
    signals_client.headers["authorization"] = f"Bearer {secret}"
    return signals_client


async def test_candles_are_returned_oldest_first_with_the_forming_bar_last(
    market_client: AsyncClient, redis_client: Redis
) -> None:
    await seed_feed(redis_client)
    response = await market_client.get("/v1/candles/binance/BTCUSDT", params={"timeframe": "1m", "limit": 3})
    assert response.status_code == 200
    candles = response.json()["candles"]
    assert [c["t"] for c in candles] == [T0 + MINUTE, T0 + 2 * MINUTE, T0 + 3 * MINUTE]
    assert [c["closed"] for c in candles] == [True, True, False]
    assert set(candles[0]) == {"t", "o", "h", "l", "c", "v", "buy_v", "sell_v", "delta", "trades", "vwap", "closed"}


async def test_candles_can_be_posted_back_to_analyze(market_client: AsyncClient, redis_client: Redis) -> None:
    await seed_feed(redis_client, bars=40)
    candles = (await market_client.get("/v1/candles/binance/BTCUSDT", params={"limit": 40})).json()["candles"]
    analyzed = await market_client.post("/v1/analyze", json={"candles": candles, "modules": ["cvd"]})
    assert analyzed.status_code == 200, analyzed.text


async def test_orderbook_is_cut_to_the_requested_depth(market_client: AsyncClient, redis_client: Redis) -> None:
    await seed_feed(redis_client)
    book = (await market_client.get("/v1/orderbook/binance/BTCUSDT", params={"depth": 1})).json()
    assert book == {"bids": [[100.0, 1.0]], "asks": [[100.5, 1.5]], "last_update_id": 42, "ts": T0}


@pytest.mark.parametrize(
    ("path", "params", "status", "slug", "valid"),
    [
        ("/v1/candles/kraken/BTCUSDT", {}, 404, "venue-not-found", "binance"),
        ("/v1/candles/binance/DOGEUSDT", {}, 404, "symbol-not-found", "BTCUSDT"),
        ("/v1/candles/binance/BTCUSDT", {"timeframe": "7m"}, 422, "timeframe-invalid", "1h"),
        ("/v1/orderbook/kraken/BTCUSDT", {}, 404, "venue-not-found", "bybit"),
    ],
)
async def test_unknown_venue_symbol_or_timeframe_lists_the_valid_values(
    market_client: AsyncClient,
    redis_client: Redis,
    path: str,
    params: dict[str, str],
    status: int,
    slug: str,
    valid: str,
) -> None:
    await seed_feed(redis_client)
    response = await market_client.get(path, params=params)
    assert response.status_code == status
    body = response.json()
    assert body["type"] == f"/problems/{slug}"
    assert valid in body["valid"]


async def test_a_configured_feed_without_data_is_503_with_its_status(market_client: AsyncClient) -> None:
    response = await market_client.get("/v1/candles/binance/ETHUSDT")  # in the default DELTAFLOW_FEEDS
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    body = response.json()
    assert body["type"] == "/problems/market-data-unavailable"
    assert body["feed"]["state"] == "no_ingestor"


async def test_markets_lists_venues_timeframes_and_feeds(market_client: AsyncClient) -> None:
    body = (await market_client.get("/v1/markets")).json()
    assert "sim" in body["venues"]
    assert "1d" in body["timeframes"]
    assert {(f["venue"], f["symbol"]) for f in body["feeds"]} >= {("binance", "BTCUSDT"), ("binance", "ETHUSDT")}
