"""Signals on stored bars: validation, the per-bar cache, single flight, and position sizing per caller.

A signal is computed once per (venue, symbol, timeframe, closed bar): the cache key names the close time of the
newest closed bar, so a newly closed bar invalidates it naturally (entries also expire after
``signal_cache_ttl_seconds``, which only bounds Redis memory). The cached document carries no position size and no
feed freshness: sizing depends on the caller (applied per request, :func:`apply_position_size`) and freshness on
the moment (spliced in by the route), so every caller of a feed and timeframe shares one entry and parameters
cannot be used to force recomputation.

Single flight, two levels: in one process, concurrent requests for a missing entry share one task; across
instances, that task takes a Redis lock (``SET NX PX``) and computes, while tasks of other instances poll the
cache until the entry appears or the lock is gone (holder finished with no data, or died: then they take the
lock themselves). The shared task is not the request's: a client that disconnects does not abort a computation
others wait for, and the result is cached for the next request.

Computation runs in the analysis worker pool (:class:`app.trading.service.AnalysisRunner`); only the stored candle
JSON goes to the worker and only the encoded document comes back.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import orjson
from redis.exceptions import RedisError

from app.config import Settings
from app.core.metrics import SIGNAL_COMPUTE, cache_counters
from app.core.redis import RedisClient
from app.market.aggregation import TIMEFRAMES
from app.market.feeds import parse_feeds
from app.market.keys import tag
from app.market.store import read_candles_json, read_feed_status
from app.signals.compute import BarNotStored, SignalInput, apply_position_size, compute_signal
from app.signals.memo import SignalMemo
from app.trading.markets import TimeframeInvalid, check_market_feed, market_unavailable
from app.trading.service import AnalysisRunner

# Bump when the document's shape or the analysis defaults change: old entries are then simply never read.
CACHE_VERSION = "signal:v2"
# ETags remembered per document. The entries are mostly the very bytes objects the memo holds (no extra memory);
# a fixed size suffices, since a miss only recomputes one hash.
ETAG_MEMO_ENTRIES = 256
# (memo hit, memo miss, Redis hit, Redis miss) per document kind, bound once (see app.core.metrics).
_CACHE_COUNTERS = {
    kind: (*cache_counters(f"{kind}_memo"), *cache_counters(f"{kind}_redis"))
    for kind in ("signal", "analysis", "track_record")
}

# Deletes the lock only if this flight still owns it (it may have expired and been taken by another instance).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class SignalQuery:
    venue: str
    symbol: str
    timeframe: str = "1m"
    include_forming: bool = False
    account_equity: float | None = None
    risk_pct: float | None = None


@dataclass(frozen=True, slots=True)
class SignalOutcome:
    document: bytes  # the JSON object without `feed`
    hit: bool  # served from the cache (this instance did not compute it)
    etag: str  # weak: the document is spliced with the feed's freshness, which changes every request


@functools.lru_cache(maxsize=ETAG_MEMO_ENTRIES)
def etag_of(document: bytes) -> str:
    """Memoised: a cached document is served many times, and its SHA-256 cost ~4 µs per request (bytes keep
    their hash, so a hit on the same document object costs a dict lookup)."""
    return f'W/"{hashlib.sha256(document).hexdigest()[:32]}"'


def cache_key(venue: str, symbol: str, timeframe: str, last_closed_open: int) -> str:
    close = last_closed_open + TIMEFRAMES[timeframe]
    return f"{CACHE_VERSION}:{tag(venue, symbol)}:{timeframe}:{close}"


async def feed_freshness(redis: RedisClient, venue: str, symbol: str) -> dict[str, Any]:
    status = await read_feed_status(redis, [(venue, symbol)])
    feed = next((s for s in status if s.get("venue") == venue and s.get("symbol") == symbol), {})
    return {
        "state": feed.get("state"),
        "connected": feed.get("connected"),
        "last_message_age_s": feed.get("last_message_age_s"),
    }


def with_feed(document: bytes, feed: dict[str, Any]) -> bytes:
    """The response body: the cached document with the feed's freshness as its last member."""
    return document[:-1] + b',"feed":' + orjson.dumps(feed) + b"}"


class SignalService:
    def __init__(self, redis: RedisClient, settings: Settings, runner: AnalysisRunner) -> None:
        self.redis = redis
        self.settings = settings
        self.runner = runner
        self._flights: dict[str, asyncio.Task[tuple[bytes | None, bool]]] = {}
        self.memo = SignalMemo(
            redis, ttl_seconds=settings.signal_memo_ttl_seconds, max_documents=settings.signal_memo_entries
        )
        self._configured = frozenset(parse_feeds(settings.feeds))
        # The feed's track-record summary for a signal (set by app.signals.track_record); None: not embedded.
        self.track_record_summary: Callable[[SignalInput], Awaitable[bytes]] | None = None
        self.computed = 0  # signals this instance computed (tests and metrics read it)
        # Every timeframe's histogram exists from the start (at 0), so dashboards and alert rules that name it
        # find the series before the first signal is computed.
        self._compute_seconds = {timeframe: SIGNAL_COMPUTE.labels(timeframe) for timeframe in TIMEFRAMES}

    async def resolve(self, query: SignalQuery, *, fresh: bool = False) -> SignalOutcome:
        """The signal document for a query, or a problem: unknown feed (404), timeframe (422), no data (503).

        ``fresh`` reads the newest closed bar from Redis instead of this process's memo (streams do: they are woken
        when bar-close announcements may have been lost)."""
        venue, symbol, timeframe = query.venue, query.symbol, query.timeframe
        await self.check_feed(venue, symbol)
        if timeframe not in TIMEFRAMES:
            raise TimeframeInvalid(f"Unknown timeframe {timeframe!r}.", extensions={"valid": list(TIMEFRAMES)})
        try:
            document, hit = await self._document(query, fresh=fresh)
        except BarNotStored:
            # This process heard of the bar before it can read it: use the newest bar Redis shows now.
            document, hit = await self._document(query, fresh=True)
        if document is None:
            raise await market_unavailable(self.redis, venue, symbol)
        if query.account_equity is not None and query.risk_pct is not None:
            document = apply_position_size(document, query.account_equity, query.risk_pct)
        return SignalOutcome(document, hit, etag_of(document))

    async def _document(self, query: SignalQuery, *, fresh: bool) -> tuple[bytes | None, bool]:
        venue, symbol, timeframe = query.venue, query.symbol, query.timeframe
        last_closed = await self.memo.last_closed_open(venue, symbol, timeframe, fresh=fresh)
        spec = SignalInput(
            venue, symbol, timeframe, TIMEFRAMES[timeframe], last_closed, self.settings.signal_bars,
            include_forming=query.include_forming,
        )  # fmt: skip
        if query.include_forming or last_closed is None:
            # The forming bar changes with every trade: such documents are never cached.
            return await self._compute(spec), False
        return await self._shared_flight(cache_key(venue, symbol, timeframe, last_closed), spec)

    async def check_feed(self, venue: str, symbol: str) -> None:
        """A configured or live feed passes without Redis (live list remembered); else the 404 listing the valid."""
        if (venue, symbol) in self._configured or f"{venue}:{symbol}" in await self.memo.live_feeds():
            return
        await check_market_feed(self.redis, self.settings, venue, symbol)

    async def freshness(self, venue: str, symbol: str) -> dict[str, Any]:
        return await self.memo.freshness(venue, symbol)

    async def _shared_flight(self, key: str, spec: SignalInput) -> tuple[bytes | None, bool]:
        return await self.cached(key, lambda: self._compute(spec))

    async def cached(
        self, key: str, compute: Callable[[], Awaitable[bytes | None]], *, kind: str = "signal"
    ) -> tuple[bytes | None, bool]:
        """The document cached under ``key``, computed once across tasks and instances when missing (the same
        single flight as signals; other stored-data documents use it too). Returns (document, hit).

        Looked up in this process's memo first, then Redis; what either returns is kept in the memo. ``kind``
        names the document for the cache metrics."""
        memo_hit, memo_miss, redis_hit, redis_miss = _CACHE_COUNTERS[kind]
        remembered = self.memo.document(key)
        if remembered is not None:
            memo_hit.inc()
            return remembered, True
        memo_miss.inc()
        stored = await self.redis.get(key)
        if isinstance(stored, bytes):
            redis_hit.inc()
            self.memo.keep_document(key, stored)
            return stored, True
        redis_miss.inc()
        flight = self._flights.get(key)
        joined = flight is not None
        if flight is None:
            flight = asyncio.create_task(self._fill(key, compute), name=f"signal-flight:{key}")
            self._flights[key] = flight
            flight.add_done_callback(self._landed(key))
        document, hit = await asyncio.shield(flight)
        if document is not None:
            self.memo.keep_document(key, document)
        return document, hit or joined

    def _landed(self, key: str) -> Callable[[asyncio.Task[tuple[bytes | None, bool]]], None]:
        def done(task: asyncio.Task[tuple[bytes | None, bool]]) -> None:
            self._flights.pop(key, None)
            if not task.cancelled():
                task.exception()  # retrieved: every waiter may have gone away

        return done

    async def _fill(self, key: str, compute: Callable[[], Awaitable[bytes | None]]) -> tuple[bytes | None, bool]:
        """Compute under the cross-instance lock, or wait for the instance that holds it."""
        timeout = self.settings.signal_singleflight_timeout_seconds
        poll = self.settings.signal_singleflight_poll_seconds
        lock, token = f"{key}:lock", secrets.token_hex(8)
        while True:
            if await self.redis.set(lock, token, nx=True, px=int(timeout * 1000)):
                try:
                    document = await compute()
                    if document is not None:
                        await self.redis.set(key, document, ex=int(self.settings.signal_cache_ttl_seconds))
                    return document, False
                finally:
                    with suppress(RedisError):
                        await self.redis.eval(_RELEASE, 1, lock, token)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                await asyncio.sleep(poll)
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.get(key)
                    pipe.exists(lock)
                    stored, locked = await pipe.execute()
                if isinstance(stored, bytes):
                    return stored, True
                if not locked:
                    break  # the holder finished without data or died: take the lock ourselves

    async def _compute(self, spec: SignalInput) -> bytes | None:
        raw = await read_candles_json(
            self.redis, spec.venue, spec.symbol, spec.timeframe, spec.bars + 1, max_limit=spec.bars + 1
        )
        self.computed += 1
        with (self._compute_seconds.get(spec.timeframe) or SIGNAL_COMPUTE.labels(spec.timeframe)).time():
            document = await self.runner.call(compute_signal, raw, spec)
        if document is None or self.track_record_summary is None:
            return document
        summary = await self.track_record_summary(spec)
        return document[:-1] + b',"track_record":' + summary + b"}"

    async def aclose(self) -> None:
        await self.memo.aclose()
        flights = list(self._flights.values())
        for flight in flights:
            flight.cancel()
        await asyncio.gather(*flights, return_exceptions=True)
