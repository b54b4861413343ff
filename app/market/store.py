"""Market data in Redis: how bars, footprints, books, liquidations and feed status are written and read.

The layout is documented in :mod:`app.market.keys`. Writers add commands to a caller's pipeline (the
pipeline's batching writer flushes many in one round trip); readers are the functions the HTTP routes call.

Closed bars are immutable: they are written by a Lua script that adds a bar only if no bar with the same open
time exists, so a replayed, backfilled or second ingestor's write never changes a stored closed bar (first write
wins). Candle members are stored byte-for-byte as the API returns them, so :func:`read_candles_json` splices
them into a response without decoding.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict

import orjson

from app.core.redis import RedisClient, RedisPipeline
from app.market.aggregation import Bar
from app.market.book import TopOfBook
from app.market.events import Liquidation
from app.market.keys import FEEDS_KEY, FeedKeys, check_feed, check_timeframe

# KEYS: bars, footprints, liquidations (one slot: same hash tag). ARGV: open time, candle JSON, bar retention,
# footprint JSON or '', footprint retention, liquidations JSON or '', bar-close channel, timeframe. Returns 1 if
# the bar was new. A new bar that is the newest of its timeframe is announced on the feed's bar-close channel as
# ``<timeframe>:<open time>`` (backfilled older bars are not: listeners only care about the latest close).
_CLOSE_BAR = """
local t = ARGV[1]
if redis.call('ZCOUNT', KEYS[1], t, t) > 0 then return 0 end
redis.call('ZADD', KEYS[1], t, ARGV[2])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[3]) - 1)
if ARGV[4] ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], t, t)
  redis.call('ZADD', KEYS[2], t, ARGV[4])
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -tonumber(ARGV[5]) - 1)
end
if ARGV[6] ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], t, t)
  redis.call('ZADD', KEYS[3], t, ARGV[6])
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -tonumber(ARGV[3]) - 1)
end
local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if newest[2] and tonumber(newest[2]) == tonumber(t) then
  redis.call('PUBLISH', ARGV[7], ARGV[8] .. ':' .. t)
end
return 1
"""


class Candle(TypedDict):
    t: int
    o: float
    h: float
    l: float  # noqa: E741 - the API's field name
    c: float
    v: float
    buy_v: float
    sell_v: float
    delta: float
    trades: int
    vwap: float
    closed: bool
    partial: NotRequired[bool]


@dataclass(frozen=True, slots=True)
class StoreLimits:
    """Bounds of every key (see the layout table in app.market.keys); filled from settings."""

    bar_retention: int = 5000
    bar_retention_by_timeframe: Mapping[str, int] = field(default_factory=dict)
    footprint_retention: int = 1000
    forming_ttl_ms: int = 120_000
    book_ttl_ms: int = 60_000
    book_depth: int = 50
    liquidation_stream_len: int = 1000
    status_ttl_ms: int = 30_000

    def retention(self, timeframe: str) -> int:
        return self.bar_retention_by_timeframe.get(timeframe, self.bar_retention)


def candle(bar: Bar, *, partial: bool = False) -> Candle:
    """The stored (and served) record; ``partial: true`` only on a bar observed in part that the venue's own could
    not replace (absent otherwise, so a complete bar's record is unchanged)."""
    out: Candle = {
        "t": bar.open_time,
        "o": bar.open,
        "h": bar.high,
        "l": bar.low,
        "c": bar.close,
        "v": bar.volume,
        "buy_v": bar.buy_volume,
        "sell_v": bar.sell_volume,
        "delta": bar.delta,
        "trades": bar.trade_count,
        "vwap": bar.vwap,
        "closed": bar.closed,
    }
    if partial:
        out["partial"] = True
    return out


def _footprint_json(bar: Bar) -> bytes:
    levels = [[level.price, level.bid_volume, level.ask_volume] for level in bar.footprint]
    return orjson.dumps({"t": bar.open_time, "tick": bar.footprint_tick, "levels": levels})


def _liquidations_json(bar: Bar) -> bytes:
    return orjson.dumps({"t": bar.open_time, "long": bar.long_liquidations, "short": bar.short_liquidations})


class FeedWriter:
    """Adds the writes of one (venue, symbol) to a pipeline; holds the feed's keys and bounds."""

    def __init__(self, venue: str, symbol: str, limits: StoreLimits) -> None:
        self.venue = venue
        self.symbol = symbol
        self.keys = FeedKeys(venue, symbol)
        self.limits = limits

    def close_bar(self, pipe: RedisPipeline, bar: Bar, *, with_detail: bool = True, partial: bool = False) -> None:
        """Store a closed bar unless one with its open time exists (immutability); ``partial`` flags it."""
        tf = bar.timeframe
        keys = self.keys
        has_liq = with_detail and (bar.long_liquidations > 0 or bar.short_liquidations > 0)
        pipe.eval(
            _CLOSE_BAR,
            3,
            keys.bars[tf],
            keys.footprints[tf],
            keys.liquidations_per_bar[tf],
            bar.open_time,
            orjson.dumps(candle(bar, partial=partial)),
            self.limits.retention(tf),
            _footprint_json(bar) if with_detail and bar.footprint else b"",
            self.limits.footprint_retention,
            _liquidations_json(bar) if has_liq else b"",
            keys.bar_closed,
            tf,
        )

    def set_forming(self, pipe: RedisPipeline, timeframe: str, bar: Bar | None) -> None:
        keys = self.keys
        if bar is None:
            pipe.delete(keys.forming[timeframe], keys.forming_detail[timeframe])
            return
        ttl = self.limits.forming_ttl_ms
        pipe.set(keys.forming[timeframe], orjson.dumps(candle(bar)), px=ttl)
        detail = {
            "t": bar.open_time,
            "tick": bar.footprint_tick,
            "levels": [[level.price, level.bid_volume, level.ask_volume] for level in bar.footprint],
            "long": bar.long_liquidations,
            "short": bar.short_liquidations,
        }
        pipe.set(keys.forming_detail[timeframe], orjson.dumps(detail), px=ttl)

    def set_book(self, pipe: RedisPipeline, top: TopOfBook, last_update_id: int, ts: int) -> None:
        body = {
            "bids": top.bids,
            "asks": top.asks,
            "last_update_id": last_update_id,
            "ts": ts,
        }
        pipe.set(self.keys.book, orjson.dumps(body), px=self.limits.book_ttl_ms)

    def add_liquidation(self, pipe: RedisPipeline, liq: Liquidation) -> None:
        fields: dict[
            bytes | bytearray | memoryview | str | int | float, bytes | bytearray | memoryview | str | int | float
        ] = {
            "ts": liq.exchange_ts,
            "price": liq.price,
            "qty": liq.quantity,
            "side": "sell" if liq.side < 0 else "buy",
            "position": "long" if liq.is_long_liquidation else "short",
        }
        pipe.xadd(self.keys.liquidations, fields, maxlen=self.limits.liquidation_stream_len, approximate=True)

    def set_status(self, pipe: RedisPipeline, status: dict[str, Any], now_ms: int) -> None:
        ttl = self.limits.status_ttl_ms
        pipe.set(self.keys.status, orjson.dumps(status), px=ttl)
        # The registry lists live feeds: entries older than the status TTL are pruned on every write, and the
        # key expires when no ingestor writes at all.
        pipe.zadd(FEEDS_KEY, {f"{self.venue}:{self.symbol}": now_ms})
        pipe.zremrangebyscore(FEEDS_KEY, "-inf", now_ms - ttl)
        pipe.pexpire(FEEDS_KEY, ttl)


# ---- reads: what the HTTP routes call -------------------------------------------------------------------------


def _check(venue: str, symbol: str, timeframe: str | None, limit: int, max_limit: int) -> None:
    check_feed(venue, symbol)
    if timeframe is not None:
        check_timeframe(timeframe)
    if not 1 <= limit <= max_limit:
        raise ValueError(f"limit must be between 1 and {max_limit}")


async def _closed_and_forming(
    redis: RedisClient, closed_key: str, forming_key: str, limit: int
) -> tuple[list[bytes], bytes | None]:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zrange(closed_key, -limit, -1)
        pipe.get(forming_key)
        closed, forming = await pipe.execute()
    return list(closed), forming


def _latest_t(member: bytes) -> int:
    t: int = orjson.loads(member)["t"]
    return t


async def read_candles_json(
    redis: RedisClient, venue: str, symbol: str, timeframe: str, limit: int, *, max_limit: int = 5000
) -> bytes:
    """The newest ``limit`` bars as a pre-encoded JSON array, oldest first, the forming bar (if any) last.

    Closed members are spliced unparsed; only the newest closed one is decoded, to drop a forming bar that is
    not newer (a bar that closed between the forming write and this read).
    """
    _check(venue, symbol, timeframe, limit, max_limit)
    keys = FeedKeys(venue, symbol)
    closed, forming = await _closed_and_forming(redis, keys.bars[timeframe], keys.forming[timeframe], limit)
    if forming is not None and (not closed or _latest_t(forming) > _latest_t(closed[-1])):
        closed.append(forming)
        closed = closed[-limit:]
    return b"[" + b",".join(closed) + b"]"


async def read_candles(
    redis: RedisClient, venue: str, symbol: str, timeframe: str, limit: int, *, max_limit: int = 5000
) -> list[Candle]:
    """The newest ``limit`` candles, oldest first: closed bars, then the forming one (``closed: false``)."""
    candles: list[Candle] = orjson.loads(
        await read_candles_json(redis, venue, symbol, timeframe, limit, max_limit=max_limit)
    )
    return candles


async def read_footprints(
    redis: RedisClient, venue: str, symbol: str, timeframe: str, limit: int, *, max_limit: int = 5000
) -> list[dict[str, Any]]:
    """Footprints ``{t, tick, levels: [[price, bid_volume, ask_volume], …]}`` oldest first, forming last."""
    _check(venue, symbol, timeframe, limit, max_limit)
    keys = FeedKeys(venue, symbol)
    closed, forming = await _closed_and_forming(
        redis, keys.footprints[timeframe], keys.forming_detail[timeframe], limit
    )
    out: list[dict[str, Any]] = [orjson.loads(member) for member in closed]
    if forming is not None:
        detail = orjson.loads(forming)
        if not out or detail["t"] > out[-1]["t"]:
            out.append({"t": detail["t"], "tick": detail["tick"], "levels": detail["levels"]})
    return out[-limit:]


async def read_liquidations(
    redis: RedisClient, venue: str, symbol: str, timeframe: str, limit: int, *, max_limit: int = 5000
) -> list[dict[str, Any]]:
    """Per-bar liquidated quantities ``{t, long, short}`` (bars with any), oldest first, forming last."""
    _check(venue, symbol, timeframe, limit, max_limit)
    keys = FeedKeys(venue, symbol)
    closed, forming = await _closed_and_forming(
        redis, keys.liquidations_per_bar[timeframe], keys.forming_detail[timeframe], limit
    )
    out: list[dict[str, Any]] = [orjson.loads(member) for member in closed]
    if forming is not None:
        detail = orjson.loads(forming)
        if (detail["long"] or detail["short"]) and (not out or detail["t"] > out[-1]["t"]):
            out.append({"t": detail["t"], "long": detail["long"], "short": detail["short"]})
    return out[-limit:]


async def read_orderbook(
    redis: RedisClient, venue: str, symbol: str, depth: int, *, max_depth: int = 50
) -> dict[str, Any] | None:
    """``{bids, asks, last_update_id, ts}`` with ``depth`` levels per side, best first; None if no fresh book."""
    _check(venue, symbol, None, depth, max_depth)
    raw = await redis.get(FeedKeys(venue, symbol).book)
    if raw is None:
        return None
    book: dict[str, Any] = orjson.loads(raw)
    book["bids"] = book["bids"][:depth]
    book["asks"] = book["asks"][:depth]
    return book


async def list_feeds(redis: RedisClient, *, status_ttl_ms: int = 30_000, now_ms: int | None = None) -> list[str]:
    """``venue:symbol`` of every feed whose ingestor wrote a status within the status TTL, sorted."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    members = await redis.zrangebyscore(FEEDS_KEY, now - status_ttl_ms, "+inf")
    return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)


async def read_feed_status(
    redis: RedisClient,
    expected: Sequence[tuple[str, str]] = (),
    *,
    status_ttl_ms: int = 30_000,
    now_ms: int | None = None,
) -> list[dict[str, Any]]:
    """Status of every live feed plus every ``expected`` (venue, symbol), sorted by venue then symbol.

    ``last_message_age_s`` is computed at read time from the stored last message time. An expected feed
    without a status (no ingestor holds it, or it died more than the status TTL ago) reads
    ``{"state": "no_ingestor", "connected": false}``.
    """
    now = int(time.time() * 1000) if now_ms is None else now_ms
    feeds = {tuple(f.split(":", 1)) for f in await list_feeds(redis, status_ttl_ms=status_ttl_ms, now_ms=now)}
    feeds.update(expected)
    ordered = sorted(feeds)
    async with redis.pipeline(transaction=False) as pipe:
        for venue, symbol in ordered:
            pipe.get(FeedKeys(venue, symbol).status)
        raws = await pipe.execute()
    out: list[dict[str, Any]] = []
    for (venue, symbol), raw in zip(ordered, raws, strict=True):
        if raw is None:
            out.append({"venue": venue, "symbol": symbol, "state": "no_ingestor", "connected": False})
            continue
        status: dict[str, Any] = orjson.loads(raw)
        last = status.get("last_message_ms")
        status["last_message_age_s"] = None if last is None else max(0.0, (now - last) / 1000)
        out.append(status)
    return out
