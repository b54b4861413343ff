"""The Binance connector's REST side (split from :mod:`binance_client`): resyncs, silence probes, the snapshot cache.

**Resyncs.** A book that needs a snapshot gets one task per symbol (one snapshot in flight); it takes a usable
cached snapshot (:mod:`binance_snapshots`) or asks REST, no sooner than ``min_resync_interval_s`` after the symbol's
previous request and only when the venue's breaker allows (which also holds the venue's request budget).

**Per-stream silence.** A connection carries a symbol's aggTrade, depth and kline streams, and kline updates come
every ~2 s whatever happens, so the connection-level silence timeout never sees the depth stream alone stop. The
reader notes each diff and trade in a :class:`StreamSilence`; the connector calls :meth:`BookRecovery.check` once
the earliest deadline has passed (:attr:`next_check`: one float comparison per frame). A book stream silent for
``book_silence_s`` is *probed*: a snapshot is fetched through the resync path (interval, breaker, budget, the
symbol's single slot), then

* a diff arrived meanwhile → no verdict: the stream is alive and the book has moved past the snapshot;
* the book's best ``probe_levels`` per side equal the snapshot's → the stream is merely quiet (``quiet_probes``)
  and is timed again;
* they differ → the stream lost updates (``stale_streams``): the book is reset and resynced in place, the cache
  handing the probe's snapshot to the resync (no second request, no reconnect), and timed again;
* found stale a second time with no diff since the first → the stream is dead, not lossy: the connection is
  replaced (``silence_reconnects``).

A trade stream silent for ``trade_silence_s`` (off by default: a quiet market goes minutes without a trade) has no
REST check: :meth:`check` returns the reason and the connector reconnects.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Mapping

import httpx

from app.market.book import OrderBook
from app.market.events import BookSnapshot, MarketEvent
from app.market.recovery import CircuitBreaker, Clock, parse_retry_after
from app.market.silence import BOOK, TRADES, StreamSilence
from app.market.venues.binance import VENUE_OF, MalformedFrameError, Market, depth_url, parse_depth_snapshot
from app.market.venues.binance_limits import ConnectorLimits, ConnectorStats
from app.market.venues.binance_snapshots import SnapshotCache
from app.market.venues.binance_sync import BookSynchroniser

logger = logging.getLogger(__name__)

Sink = Callable[[MarketEvent], Awaitable[None]]
Reconnect = Callable[[str], Awaitable[None]]  # replace the connection, saying why


def book_matches(book: OrderBook, snapshot: BookSnapshot, levels: int) -> bool:
    """Whether the book's best ``levels`` per side (price and quantity) equal the snapshot's."""
    bids = sorted(snapshot.bids, key=lambda level: -level[0])[:levels]
    asks = sorted(snapshot.asks)[:levels]
    return book.bids(levels) == bids and book.asks(levels) == asks


class BookRecovery:
    """One connector's snapshot tasks, stream timers and cache; the connector owns the socket and the reader."""

    def __init__(
        self,
        market: Market,
        syncs: Mapping[str, BookSynchroniser],
        sink: Sink,
        emit_lock: asyncio.Lock,
        *,
        rest_url: str,
        limits: ConnectorLimits,
        stats: ConnectorStats,
        breaker: CircuitBreaker,
        clock: Clock,
        wall_clock: Clock,
        sleep: Callable[[float], Awaitable[None]],
        reconnect: Reconnect,
    ) -> None:
        self.market = market
        self.venue = VENUE_OF[market]
        self.syncs = syncs
        self._sink = sink
        self._emit_lock = emit_lock  # the connector's: "change a book + emit its events" is never interleaved
        self.rest_url = rest_url
        self.limits = limits
        self.stats = stats
        self.breaker = breaker
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._reconnect = reconnect
        self.silence = StreamSilence({BOOK: limits.book_silence_s, TRADES: limits.trade_silence_s}, clock)
        self.cache = SnapshotCache(limits.snapshot_cache_s, clock)
        self.next_check = math.inf  # clock time from which check() has something to look at
        self._fetching: dict[str, asyncio.Task[None]] = {}
        self._last_request: dict[str, float] = {}
        # Per symbol: its book stream's last_seen when a probe found it stale. Still equal at the next stale
        # verdict means no diff came in between: the stream is dead rather than lossy.
        self._stale_at: dict[str, float | None] = {}

    @property
    def in_flight(self) -> int:
        """Symbols with a snapshot task (a resync or a probe) running."""
        return len(self._fetching)

    def watch_streams(self) -> None:
        """Time every stream from now: a new connection, or a rotation's switch to one."""
        self.silence.clear()
        self._stale_at.clear()
        self.silence.watch(BOOK, self.syncs)
        self.silence.watch(TRADES, self.syncs)
        self.next_check = self._next_deadline()

    def resync(self, sync: BookSynchroniser, http: httpx.AsyncClient) -> None:
        """Start the symbol's snapshot task, unless one (a resync or a probe, which then resyncs too) is in flight."""
        if sync.symbol not in self._fetching:
            self._start(sync, http, probe=False)

    def check(self, http: httpx.AsyncClient) -> str | None:
        """Act on the streams past their silence threshold; returns why the connection must be replaced, if so."""
        reason = None
        for kind, symbol in self.silence.overdue():
            if kind == TRADES:
                reason = f"{symbol} trade stream silent for {self.silence.thresholds[kind]:g} s"
            elif symbol in self._fetching:
                self.silence.rearm(kind, symbol)  # a resync is under way: look again one threshold later
            else:
                self._start(self.syncs[symbol], http, probe=True)
        self.next_check = self._next_deadline()
        return reason

    async def cancel(self) -> None:
        """Cancel and await every snapshot task (the connection ended)."""
        tasks = list(self._fetching.values())
        self._fetching.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _next_deadline(self) -> float:
        deadline = self.silence.next_deadline()
        return math.inf if deadline is None else deadline

    def _rearm(self, symbol: str) -> None:
        self.silence.rearm(BOOK, symbol)
        # The reader picks the new deadline up at its next frame or wake-up; both read next_check.
        self.next_check = min(self.next_check, self._clock() + self.silence.thresholds[BOOK])

    def _start(self, sync: BookSynchroniser, http: httpx.AsyncClient, *, probe: bool) -> None:
        self._fetching[sync.symbol] = asyncio.create_task(
            self._run(sync, http, probe=probe), name=f"{self.venue}-snapshot-{sync.symbol}"
        )

    async def _run(self, sync: BookSynchroniser, http: httpx.AsyncClient, *, probe: bool) -> None:
        """The symbol's slot: an optional probe, then snapshots until its book is in sync."""
        try:
            if probe:
                await self._probe(sync, http)
            while sync.needs_snapshot:
                snapshot = self._cached(sync)
                if snapshot is None:
                    snapshot = await self._request(sync, http)
                if snapshot is not None:
                    await self._apply(sync, snapshot)
        finally:
            if self._fetching.get(sync.symbol) is asyncio.current_task():
                del self._fetching[sync.symbol]

    async def _probe(self, sync: BookSynchroniser, http: httpx.AsyncClient) -> None:
        """Compare a silent book stream's book with a REST snapshot (see the module docstring)."""
        symbol = sync.symbol
        since = self.silence.last_seen(BOOK, symbol)
        snapshot = await self._request(sync, http)
        if snapshot is None:
            self._rearm(symbol)  # no verdict without a snapshot: probe again one threshold later
            return
        async with self._emit_lock:  # no diff is half-applied while the book is compared and reset
            if self.silence.last_seen(BOOK, symbol) != since:
                return
            if book_matches(sync.book, snapshot, self.limits.probe_levels):
                self.stats.quiet_probes += 1
                self._rearm(symbol)
                return
            self.stats.stale_streams += 1
            dead = symbol in self._stale_at and self._stale_at[symbol] == since
            if not dead:
                self.stats.resyncs += 1
                self._stale_at[symbol] = since
                sync.reset()  # _run's loop resyncs it, from the cache: this very snapshot
                self._rearm(symbol)
        silent_s = None if since is None else round(self._clock() - since, 3)
        if dead:
            await self._reconnect(f"{symbol} depth stream dead: found stale twice with no diff in between")
            return
        logger.warning("binance.stale_stream", extra={"venue": self.venue, "symbol": symbol, "silent_s": silent_s})

    def _cached(self, sync: BookSynchroniser) -> BookSnapshot | None:
        if not self.cache.enabled:
            return None
        snapshot = self.cache.usable(sync)
        if snapshot is None:
            self.stats.snapshot_cache_misses += 1
        else:
            self.stats.snapshot_cache_hits += 1
        return snapshot

    async def _request(self, sync: BookSynchroniser, http: httpx.AsyncClient) -> BookSnapshot | None:
        """One REST snapshot, once the resync interval and the breaker allow; None if it failed (counted)."""
        symbol = sync.symbol
        while True:
            last = self._last_request.get(symbol)
            wait = 0.0 if last is None else last + self.limits.min_resync_interval_s - self._clock()
            if wait > 0:
                await self._sleep(wait)
                continue
            if not self.breaker.allow():
                self.stats.breaker_waits += 1
                await self._sleep(min(self.limits.breaker_poll_s, max(self.breaker.retry_in(), 0.001)))
                continue
            self._last_request[symbol] = self._clock()
            return await self._fetch(symbol, http)

    async def _fetch(self, symbol: str, http: httpx.AsyncClient) -> BookSnapshot | None:
        url = depth_url(self.rest_url, self.market, symbol, self.limits.snapshot_depth)
        self.stats.snapshot_requests += 1
        try:
            response = await http.get(url, timeout=self.limits.rest_timeout_s)
        except asyncio.CancelledError:
            # Cancelled with the connection: no verdict on the venue, so free the half-open probe slot.
            self.breaker.abandon_probe()
            raise
        except httpx.HTTPError as exc:
            self._failed(symbol, None, None, repr(exc))
            return None
        if response.status_code != 200:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            self._failed(symbol, response.status_code, retry_after, response.reason_phrase)
            return None
        try:
            snapshot = parse_depth_snapshot(response.content, self.venue, symbol, int(self._wall_clock() * 1000))
        except MalformedFrameError as exc:
            self._failed(symbol, response.status_code, None, str(exc))
            return None
        self.breaker.record_success()
        self.cache.put(snapshot)
        return snapshot

    async def _apply(self, sync: BookSynchroniser, snapshot: BookSnapshot) -> None:
        async with self._emit_lock:
            if not sync.needs_snapshot:
                return  # nothing awaits it (on_snapshot would ignore it): emit nothing either
            # Emitted only when the buffered diffs continue it. One they do not continue (older than the stream:
            # the updates between were never seen) would take the stored book back in time and count as a resync
            # downstream; the store keeps its book until a snapshot that bridges. (A snapshot that bridges and then
            # meets a gap further on in the buffer is emitted with the diffs up to the gap: that book is exact.)
            bridges = sync.can_bridge(snapshot.last_update_id)
            applied = sync.on_snapshot(snapshot)
            if bridges:
                await self._sink(snapshot)
                for update in applied:
                    await self._sink(update)
        if sync.needs_snapshot:  # the buffered diffs did not continue this snapshot: go round again
            self.stats.resyncs += 1
            logger.warning("binance.resync", extra={"symbol": sync.symbol, "reason": "snapshot_gap"})

    def _failed(self, symbol: str, status: int | None, retry_after: float | None, why: str) -> None:
        self.stats.snapshot_failures += 1
        self.breaker.record_failure(status, retry_after)
        logger.warning("binance.snapshot_failed", extra={"symbol": symbol, "status": status, "error": why})
