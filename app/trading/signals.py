"""GET /v1/signals/{venue}/{symbol}: the analytics signal on the latest closed bars the ingestors stored.

Flow: validate the feed and timeframe exactly as the market-data routes do (same 404/422 problems); read the
newest closed bar's open time (one ZRANGE) and look the encoded signal up in Redis under a key naming the feed,
timeframe, parameters and that bar's close time, so a newly closed bar invalidates it naturally (entries also
expire after ``DELTAFLOW_SIGNAL_CACHE_TTL_SECONDS``). On a miss, read up to ``DELTAFLOW_SIGNAL_BARS`` bars, cut
them at that closed bar (a bar closing meanwhile would not match the key), run :func:`app.analytics.analyze` in a
thread and cache the encoding.

The cached part is what the `ETag` hashes; feed freshness (``feed.last_message_age_s``) changes on every request,
so it is spliced in after the cache and the `ETag` is weak. ``include_forming=true`` adds the forming bar
(flagged ``forming: true``); such responses change with every trade and are never cached.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Header, Query, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from redis.asyncio import Redis

from app.analytics import AnalysisParams, Candles, SignalParams, analyze
from app.auth.policy import require
from app.auth.scopes import Scope
from app.core.deps import RedisDep, SettingsDep
from app.core.schemas import problem_responses
from app.market.aggregation import TIMEFRAMES
from app.market.keys import FeedKeys
from app.market.store import read_candles_json, read_feed_status
from app.trading.markets import (
    SymbolPath,
    TimeframeInvalid,
    VenuePath,
    check_market_feed,
    market_unavailable,
)

router = APIRouter(prefix="/v1", tags=["signals"])

CACHE_PREFIX = "signal:v1"
ESTIMATED_SOURCES = frozenset({"ohlcv_estimate"})


class SideSource(BaseModel):
    side_source: str = Field(description="exchange_flag, kline_taker_volume or ohlcv_estimate")
    exact: bool = Field(description="false when the taker side is estimated from OHLCV")


class FeedFreshness(BaseModel):
    state: str | None = None
    connected: bool | None = None
    last_message_age_s: float | None = Field(description="Seconds since the feed's last message; null if unknown")


class SignalResponse(BaseModel):
    venue: str
    symbol: str
    timeframe: str
    as_of: int = Field(description="Close time of the last bar used, epoch ms")
    as_of_iso: str = Field(description="`as_of` as ISO 8601 (UTC)")
    forming: bool = Field(description="true when the last bar used is the forming (not yet closed) bar")
    bar_count: int
    inputs: dict[str, SideSource] = Field(description="Per input (cvd, orderflow): where the taker side comes from")
    signal: dict[str, Any] = Field(
        description="bias, score, confidence, components with reasons, levels (entry, stop, targets, "
        "risk_reward, position_size), as POST /v1/analyze returns it"
    )
    feed: FeedFreshness


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def candles_from_rows(rows: list[dict[str, Any]], interval_ms: int) -> Candles:
    """Stored candle rows (the /v1/candles wire shape) → analytics candles, taker-buy volume and trade counts."""
    return Candles.from_arrays(
        open_time=np.array([r["t"] for r in rows], dtype=np.int64),
        open=[r["o"] for r in rows],
        high=[r["h"] for r in rows],
        low=[r["l"] for r in rows],
        close=[r["c"] for r in rows],
        volume=[r["v"] for r in rows],
        taker_buy_volume=[r["buy_v"] for r in rows],
        trade_count=[r["trades"] for r in rows],
        interval_ms=interval_ms,
    )


def compute_signal_body(
    rows: list[dict[str, Any]], venue: str, symbol: str, timeframe: str, params: AnalysisParams, forming: bool
) -> bytes:
    """The cacheable part of the response (a JSON object), computed off the event loop."""
    interval = TIMEFRAMES[timeframe]
    result = analyze(candles_from_rows(rows, interval), params=params)
    inputs = {
        name: {"side_source": source, "exact": source not in ESTIMATED_SOURCES}
        for name, module in (("cvd", result.cvd), ("orderflow", result.orderflow))
        if module is not None
        for source in (module.side_source,)
    }
    as_of = result.last_close_time
    body = {
        "venue": venue,
        "symbol": symbol,
        "timeframe": timeframe,
        "as_of": as_of,
        "as_of_iso": _iso(as_of),
        "forming": forming,
        "bar_count": result.bar_count,
        "inputs": inputs,
        "signal": result.signal.to_dict(),
    }
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def cache_key(venue: str, symbol: str, timeframe: str, last_closed_open: int, params: SignalParams) -> str:
    close = last_closed_open + TIMEFRAMES[timeframe]
    risk = f"{params.account_equity!r}:{params.risk_pct!r}"
    return f"{CACHE_PREFIX}:{venue}:{symbol}:{timeframe}:{close}:{risk}"


def etag(cached: bytes) -> str:
    return f'W/"{hashlib.sha256(cached).hexdigest()[:32]}"'


def _matches(if_none_match: str | None, tag: str) -> bool:
    if not if_none_match:
        return False
    opaque = tag.removeprefix("W/")
    candidates = [c.strip() for c in if_none_match.split(",")]
    return any(c == "*" or c.removeprefix("W/") == opaque for c in candidates)


def _signal_params(account_equity: float | None, risk_pct: float | None) -> SignalParams:
    if (account_equity is None) != (risk_pct is None):
        missing = "risk_pct" if risk_pct is None else "account_equity"
        raise RequestValidationError(
            [
                {
                    "type": "missing",
                    "loc": ("query", missing),
                    "msg": "account_equity and risk_pct must be given together",
                    "input": None,
                }
            ]
        )
    return SignalParams(account_equity=account_equity, risk_pct=risk_pct)


async def _last_closed_open(redis: Redis, venue: str, symbol: str, timeframe: str) -> int | None:
    newest = await redis.zrange(FeedKeys(venue, symbol).bars[timeframe], -1, -1)
    if not newest or not isinstance(newest[0], bytes | str):
        return None
    t: int = orjson.loads(newest[0])["t"]
    return t


async def _feed_freshness(redis: Redis, venue: str, symbol: str) -> dict[str, Any]:
    status = await read_feed_status(redis, [(venue, symbol)])
    feed = next((s for s in status if s.get("venue") == venue and s.get("symbol") == symbol), {})
    return {
        "state": feed.get("state"),
        "connected": feed.get("connected"),
        "last_message_age_s": feed.get("last_message_age_s"),
    }


async def _compute(
    redis: Redis,
    venue: str,
    symbol: str,
    timeframe: str,
    last_closed: int | None,
    params: SignalParams,
    include_forming: bool,
    bars: int,
) -> bytes | None:
    """The encoded signal on the closed bars up to ``last_closed`` (plus the forming bar if asked); None if none."""
    raw = await read_candles_json(redis, venue, symbol, timeframe, bars + 1, max_limit=bars + 1)
    rows: list[dict[str, Any]] = orjson.loads(raw)
    closed = [r for r in rows if r["closed"] and last_closed is not None and r["t"] <= last_closed]
    used = closed[-bars:]
    forming = False
    if include_forming:
        newer = [r for r in rows if not r["closed"] and (last_closed is None or r["t"] > last_closed)]
        if newer:
            used = (used + newer[-1:])[-bars:]
            forming = True
    if not used:
        return None
    analysis = AnalysisParams(signal=params)
    return await asyncio.to_thread(compute_signal_body, used, venue, symbol, timeframe, analysis, forming)


@router.get(
    "/signals/{venue}/{symbol}",
    summary="The signal on the latest closed bars of an ingested feed",
    dependencies=[require(Scope.SIGNALS_READ)],
    response_class=Response,
    responses={
        200: {
            "model": SignalResponse,
            "description": "The signal; `X-Cache: hit|miss`, weak `ETag` (send it back in `If-None-Match`).",
        },
        304: {"description": "Not modified: the `If-None-Match` ETag is current."},
        **problem_responses(401, 403, 404, 422, 503),
    },
)
async def signal(
    venue: VenuePath,
    symbol: SymbolPath,
    redis: RedisDep,
    settings: SettingsDep,
    timeframe: str = "1m",
    include_forming: Annotated[bool, Query(description="Also evaluate the forming bar (flagged)")] = False,
    account_equity: Annotated[float | None, Query(gt=0, allow_inf_nan=False)] = None,
    risk_pct: Annotated[float | None, Query(gt=0, le=100, description="Percent of equity risked")] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    await check_market_feed(redis, settings, venue, symbol)
    if timeframe not in TIMEFRAMES:
        raise TimeframeInvalid(f"Unknown timeframe {timeframe!r}.", extensions={"valid": list(TIMEFRAMES)})
    params = _signal_params(account_equity, risk_pct)
    last_closed = await _last_closed_open(redis, venue, symbol, timeframe)
    key = None if include_forming or last_closed is None else cache_key(venue, symbol, timeframe, last_closed, params)
    stored = await redis.get(key) if key is not None else None
    cached = bytes(stored) if isinstance(stored, bytes) else None
    hit = cached is not None
    if cached is None:
        cached = await _compute(
            redis, venue, symbol, timeframe, last_closed, params, include_forming, settings.signal_bars
        )
        if cached is None:
            raise await market_unavailable(redis, venue, symbol)
        if key is not None:
            await redis.set(key, cached, ex=int(settings.signal_cache_ttl_seconds))
    tag = etag(cached)
    headers = {"etag": tag, "x-cache": "hit" if hit else "miss", "cache-control": "private, no-cache"}
    if _matches(if_none_match, tag):
        return Response(status_code=304, headers=headers)
    feed = orjson.dumps(await _feed_freshness(redis, venue, symbol))
    return Response(cached[:-1] + b',"feed":' + feed + b"}", media_type="application/json", headers=headers)
