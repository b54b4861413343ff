"""Market data routes: feed status, candles and order books as the ingestors stored them in Redis.

Reads are pre-encoded: candles are stored in exactly the wire shape, so the route splices them into the body
without decoding (STYLE.md: dict → JSON through FastAPI costs ~1 ms per 5 KB).
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from app.auth.policy import require
from app.auth.scopes import Scope
from app.config import Settings
from app.core.deps import RedisDep, SettingsDep
from app.core.errors import AppError
from app.core.redis import RedisClient
from app.core.schemas import problem_responses
from app.market.aggregation import TIMEFRAMES
from app.market.events import VENUES
from app.market.feeds import parse_feeds
from app.market.store import list_feeds, read_candles_json, read_feed_status, read_orderbook

router = APIRouter(prefix="/v1", tags=["market data"])

MAX_CANDLES = 5000
MAX_DEPTH = 50
ERRORS = problem_responses(401, 403, 404, 422, 503)


class VenueNotFound(AppError):
    slug = "venue-not-found"
    title = "Unknown venue"
    status = 404
    description = "The venue id is not one Deltaflow ingests; `valid` lists them."


class SymbolNotFound(AppError):
    slug = "symbol-not-found"
    title = "Unknown symbol"
    status = 404
    description = "No feed for this symbol on this venue; `valid` lists the symbols that have one."


class TimeframeInvalid(AppError):
    slug = "timeframe-invalid"
    title = "Unknown timeframe"
    status = 422
    description = "The timeframe is not one the aggregation keeps; `valid` lists them."


class MarketDataUnavailable(AppError):
    slug = "market-data-unavailable"
    title = "No market data yet"
    status = 503
    description = "The feed is configured but has no data yet (warming up or unreachable); see `feed`."


class Candle(BaseModel):
    t: int = Field(description="Bar open time, epoch ms")
    o: float
    h: float
    l: float  # noqa: E741 - the wire name
    c: float
    v: float
    buy_v: float = Field(description="Taker-buy volume")
    sell_v: float = Field(description="Taker-sell volume")
    delta: float
    trades: int
    vwap: float
    closed: bool = Field(description="false for the forming bar (always last)")
    partial: bool | None = Field(
        default=None,
        description="Present (true) only on a bar observed in part whose repair from the venue's klines failed: "
        "its volumes cover only what the stream delivered. Absent on every complete bar.",
    )


class CandlesResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "candles": [
                        {
                            "t": 1732521600000,
                            "o": 98010.5,
                            "h": 98150.0,
                            "l": 97990.1,
                            "c": 98120.5,
                            "v": 41.73,
                            "buy_v": 23.9,
                            "sell_v": 17.83,
                            "delta": 6.07,
                            "trades": 1893,
                            "vwap": 98071.2,
                            "closed": True,
                        },
                        {
                            "t": 1732521660000,
                            "o": 98120.5,
                            "h": 98133.0,
                            "l": 98101.2,
                            "c": 98110.0,
                            "v": 3.2,
                            "buy_v": 1.1,
                            "sell_v": 2.1,
                            "delta": -1.0,
                            "trades": 144,
                            "vwap": 98117.4,
                            "closed": False,
                        },
                    ]
                }
            ]
        }
    )

    candles: list[Candle]


# [price, quantity]: a fixed-length array rather than a tuple, whose JSON Schema form (prefixItems / array-valued
# items) OpenAPI tooling reads inconsistently.
PriceLevel = Annotated[list[float], Field(min_length=2, max_length=2)]


class OrderBook(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "bids": [[98110.0, 1.52], [98109.9, 0.4]],
                    "asks": [[98110.1, 0.87], [98110.5, 2.1]],
                    "last_update_id": 51234567890,
                    "ts": 1732521661234,
                }
            ]
        }
    )

    bids: list[PriceLevel] = Field(description="[price, quantity], best first")
    asks: list[PriceLevel] = Field(description="[price, quantity], best first")
    last_update_id: int | None
    ts: int | None = Field(description="Exchange time of the last applied update, epoch ms")


class MarketsResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "venues": ["binance", "binance-futures", "bybit", "coinapi", "sim"],
                    "timeframes": ["1m", "5m", "15m", "1h", "4h", "1d"],
                    "feeds": [
                        {
                            "venue": "binance",
                            "symbol": "BTCUSDT",
                            "state": "live",
                            "connected": True,
                            "last_message_age_s": 0.1,
                            "reconnects": 0,
                            "queue_depth": 0,
                            "coalesced": 12,
                            "resynced": 0,
                            "breaker": "closed",
                        }
                    ],
                }
            ]
        }
    )

    venues: list[str]
    timeframes: list[str]
    feeds: list[dict[str, Any]] = Field(description="Status of every configured or live feed")


def _configured(settings: Settings) -> list[tuple[str, str]]:
    return [(venue, symbol) for venue, symbol in parse_feeds(settings.feeds)]


async def _known_symbols(redis: RedisClient, settings: Settings, venue: str) -> list[str]:
    live = [feed.split(":", 1) for feed in await list_feeds(redis)]
    symbols = {symbol for v, symbol in live if v == venue} | {s for v, s in _configured(settings) if v == venue}
    return sorted(symbols)


async def check_market_feed(redis: RedisClient, settings: Settings, venue: str, symbol: str) -> None:
    if venue not in VENUES:
        raise VenueNotFound(f"Unknown venue {venue!r}.", extensions={"valid": list(VENUES)})
    symbols = await _known_symbols(redis, settings, venue)
    if symbol not in symbols:
        raise SymbolNotFound(f"No {venue} feed for {symbol!r}.", extensions={"valid": symbols})


async def market_unavailable(redis: RedisClient, venue: str, symbol: str) -> MarketDataUnavailable:
    status = await read_feed_status(redis, [(venue, symbol)])
    feed = next((s for s in status if s.get("venue") == venue and s.get("symbol") == symbol), None)
    return MarketDataUnavailable(
        f"No data for {venue}:{symbol} yet.", extensions={"feed": feed}, headers={"retry-after": "5"}
    )


# Validated by the routes (an unknown timeframe is a `timeframe-invalid` problem listing the valid ones); the enum
# documents them, so the OpenAPI document accepts exactly what the server does.
TimeframeQuery = Annotated[
    str,
    Query(description="1m, 5m, 15m, 1h, 4h or 1d", examples=["5m"], json_schema_extra={"enum": list(TIMEFRAMES)}),
]
VenuePath = Annotated[str, Path(description="Venue id", examples=["binance"])]
SymbolPath = Annotated[str, Path(description="Symbol as the exchange spells it", examples=["BTCUSDT"])]


@router.get(
    "/markets",
    response_model=MarketsResponse,
    summary="Venues, timeframes and the status of every feed",
    dependencies=[require(Scope.MARKET_READ)],
    responses=problem_responses(401, 403, 503),
)
async def markets(redis: RedisDep, settings: SettingsDep) -> Response:
    feeds = await read_feed_status(redis, _configured(settings))
    body = {"venues": list(VENUES), "timeframes": list(TIMEFRAMES), "feeds": feeds}
    return Response(orjson.dumps(body), media_type="application/json")


@router.get(
    "/candles/{venue}/{symbol}",
    response_model=CandlesResponse,
    summary="Candles oldest first, the forming bar (closed: false) last",
    dependencies=[require(Scope.MARKET_READ)],
    responses=ERRORS,
)
async def candles(
    venue: VenuePath,
    symbol: SymbolPath,
    redis: RedisDep,
    settings: SettingsDep,
    timeframe: TimeframeQuery = "1m",
    limit: Annotated[int, Query(ge=1, le=MAX_CANDLES, description="Newest bars to return")] = 500,
) -> Response:
    await check_market_feed(redis, settings, venue, symbol)
    if timeframe not in TIMEFRAMES:
        raise TimeframeInvalid(f"Unknown timeframe {timeframe!r}.", extensions={"valid": list(TIMEFRAMES)})
    rows = await read_candles_json(redis, venue, symbol, timeframe, limit, max_limit=MAX_CANDLES)
    if rows == b"[]":
        raise await market_unavailable(redis, venue, symbol)
    return Response(b'{"candles":' + rows + b"}", media_type="application/json")


@router.get(
    "/orderbook/{venue}/{symbol}",
    response_model=OrderBook,
    summary="Top of the order book, best levels first",
    dependencies=[require(Scope.MARKET_READ)],
    responses=ERRORS,
)
async def orderbook(
    venue: VenuePath,
    symbol: SymbolPath,
    redis: RedisDep,
    settings: SettingsDep,
    depth: Annotated[int, Query(ge=1, le=MAX_DEPTH, description="Levels per side")] = 20,
) -> Response:
    await check_market_feed(redis, settings, venue, symbol)
    book = await read_orderbook(redis, venue, symbol, depth, max_depth=MAX_DEPTH)
    if book is None:
        raise await market_unavailable(redis, venue, symbol)
    return Response(orjson.dumps(book), media_type="application/json")
