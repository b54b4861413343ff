"""CoinAPI through the runtime: `coinapi:<our symbol>` feeds against the local CoinAPI mock, symbol-id mapping, and
what the feed status says when the API key is missing or refused (the process keeps serving either way)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from functools import partial
from typing import Any

from redis.asyncio import Redis

from app.config import Settings
from app.market.runtime import start_ingestion
from app.market.sources import MISSING_COINAPI_KEY
from app.market.store import read_candles, read_feed_status, read_orderbook
from tests.conftest import TEST_REDIS_URL, make_settings
from tests.market.mock_coinapi import CoinApiSession, MockCoinApi, book20_msg, trade_msg
from tests.market.test_runtime import _until

KEY = "test-key"


def _settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "redis_url": TEST_REDIS_URL,
        "market_status_interval_seconds": 0.05,
        "market_lease_ttl_seconds": 1.0,
        "market_backoff_base_seconds": 0.01,
        "market_backoff_cap_seconds": 0.05,
    }
    return make_settings(**(base | overrides))


def _now_iso() -> str:
    # Live trades carry the current time: the pipeline closes bars by the wall clock.
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def _trade(symbol_id: str, n: int, size: float, side: str) -> dict[str, Any]:
    return trade_msg(symbol_id, n, size=size, side=side) | {"time_exchange": _now_iso()}


async def _status(redis: Redis, venue: str, symbol: str, **want: Any) -> dict[str, Any] | None:
    for status in await read_feed_status(redis):
        if (status["venue"], status["symbol"]) == (venue, symbol) and all(status.get(k) == v for k, v in want.items()):
            return status
    return None


async def test_coinapi_feeds_name_our_symbols_and_stream_into_redis(redis_client: Redis) -> None:
    async def script(session: CoinApiSession) -> None:
        (symbol_id,) = session.filters
        for n, (size, side) in enumerate([(0.5, "BUY"), (0.25, "SELL"), (1.0, "BUY_ESTIMATED")]):
            await session.send(_trade(symbol_id, n, size, side))
        await session.send(book20_msg(symbol_id, 3) | {"time_exchange": _now_iso()})

    feeds = "coinapi:BTCUSDT,BTCUSD"
    settings = _settings(
        feeds=feeds,
        coinapi_ws_url="ws://127.0.0.1:1/v1/",  # replaced below, once the mock has its port
        coinapi_api_key=KEY,
        coinapi_symbol_map={"BTCUSD": "COINBASE_SPOT_BTC_USD"},
    )
    async with MockCoinApi(script) as mock:
        handle = start_ingestion(settings.model_copy(update={"coinapi_ws_url": mock.ws_url}), redis_client)
        try:
            for symbol in ("BTCUSDT", "BTCUSD"):
                candles = await _until(partial(read_candles, redis_client, "coinapi", symbol, "1m", 5))
                assert (candles[-1]["v"], candles[-1]["delta"], candles[-1]["trades"]) == (1.75, 1.25, 3)
                book = await _until(partial(read_orderbook, redis_client, "coinapi", symbol, 5))
                assert book["bids"][0] == [99.5, 2.0]
                assert book["asks"][0] == [100.5, 1.0]
            filters = sorted(hello["subscribe_filter_symbol_id"] for hello in mock.hellos)
            # Derived from the default prefix, and taken from the explicit map.
            assert filters == [["BINANCE_SPOT_BTC_USDT$"], ["COINBASE_SPOT_BTC_USD$"]]
            status = await _until(lambda: _status(redis_client, "coinapi", "BTCUSDT", connected=True))
            assert status["state"] == "streaming"
            assert status["symbol_id"] == "BINANCE_SPOT_BTC_USDT"
            assert status["breaker"] == "n/a"
            assert status["backfill"]["state"] == "n/a"
            assert KEY not in str(await read_feed_status(redis_client))
        finally:
            await handle.aclose()


async def test_a_missing_api_key_is_reported_by_the_feed_status_while_other_feeds_run(redis_client: Redis) -> None:
    async with MockCoinApi() as mock:
        settings = _settings(feeds="coinapi:BTCUSDT;sim:BTCUSDT", coinapi_ws_url=mock.ws_url, sim_rate=300)
        handle = start_ingestion(settings, redis_client)  # no key: not an error at start
        try:
            status = await _until(lambda: _status(redis_client, "coinapi", "BTCUSDT", state="misconfigured"))
            assert status["connected"] is False
            assert status["last_error"] == MISSING_COINAPI_KEY
            assert "DELTAFLOW_COINAPI_API_KEY" in status["last_error"]
            # The other feed ingests meanwhile, and the CoinAPI feed never tried to connect.
            assert await _until(lambda: read_candles(redis_client, "sim", "BTCUSDT", "1m", 1))
            assert mock.connections == 0
            assert sorted(handle.held()) == [("coinapi", "BTCUSDT"), ("sim", "BTCUSDT")]
        finally:
            await handle.aclose()


async def test_a_refused_key_stops_the_feed_without_reconnecting_and_says_why(redis_client: Redis) -> None:
    async with MockCoinApi(error_for_key="Invalid API key") as mock:
        settings = _settings(feeds="coinapi:BTCUSDT", coinapi_ws_url=mock.ws_url, coinapi_api_key="wrong-key")
        handle = start_ingestion(settings, redis_client)
        try:
            status = await _until(lambda: _status(redis_client, "coinapi", "BTCUSDT", state="refused"))
            assert status["last_error"] == "Invalid API key"
            assert status["connected"] is False
            # Several lease renewals later (ttl/3 each) it still holds the feed and has not asked CoinAPI again.
            (ingestor,) = handle.ingestors
            renewals = ingestor.keeper.lease.ttl_ms / 3000 * 4
            await asyncio.sleep(renewals)
            assert mock.connections == 1
            assert handle.held() == [("coinapi", "BTCUSDT")]
            assert ingestor.keeper.acquisitions == 1, "the ingestion was never restarted"
        finally:
            await handle.aclose()
