"""Asyncio connector for Binance spot and USDⓈ-M futures combined streams with REST depth snapshots.

One connection carries every subscribed stream. Per connection the connector owns: the socket, one snapshot
task per symbol that needs one, and fresh book synchronisers; when the connection ends, for whatever reason,
all of them are cancelled, awaited and released before the backoff sleep, so reconnects leak neither tasks nor
sockets. Events go to an async ``sink``; awaiting it is the backpressure (a full bounded queue stalls the
reader rather than dropping a diff).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from app.market.events import BookUpdate, MarketEvent
from app.market.recovery import Backoff, CircuitBreaker, Clock, parse_retry_after
from app.market.tasks import BackgroundRunner, cancelling
from app.market.venues.binance import (
    DEFAULT_REST_URL,
    DEFAULT_STREAMS,
    DEFAULT_WS_URL,
    VENUE_OF,
    MalformedFrameError,
    Market,
    depth_url,
    parse_depth_snapshot,
    parse_frame,
    stream_url,
)
from app.market.venues.binance_sync import BookSynchroniser, DiffResult

logger = logging.getLogger(__name__)

EventSink = Callable[[MarketEvent], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]


def queue_sink(queue: asyncio.Queue[MarketEvent]) -> EventSink:
    """A sink that puts events on a bounded queue, waiting (backpressure) when it is full."""
    return queue.put


@dataclass(frozen=True, slots=True)
class ConnectorLimits:
    """Every bound the connector applies; the config layer fills these from settings."""

    max_buffered_diffs: int = 1000  # per symbol, while a snapshot is awaited
    max_book_levels: int = 5000  # per side
    snapshot_depth: int = 1000  # the REST ``limit``; Binance's largest spot/futures depth
    min_resync_interval_s: float = 1.0  # between two snapshot requests for one symbol
    breaker_poll_s: float = 1.0  # how often a symbol rechecks an open breaker
    rest_timeout_s: float = 10.0
    open_timeout_s: float = 10.0
    close_timeout_s: float = 2.0
    ping_interval_s: float | None = 20.0
    ping_timeout_s: float | None = 20.0
    silence_timeout_s: float = 30.0  # no frame at all for this long means a stale feed: reconnect
    max_frame_bytes: int = 1 << 20
    max_queued_frames: int = 64  # frames websockets buffers ahead of the reader


@dataclass(slots=True)
class ConnectorStats:
    connected: bool = False
    connects: int = 0
    disconnects: int = 0
    frames: int = 0
    malformed: int = 0
    ignored: int = 0
    resyncs: int = 0
    snapshot_requests: int = 0
    snapshot_failures: int = 0
    breaker_waits: int = 0
    last_frame_at: float | None = None
    last_error: str | None = None  # why the last connection ended or failed (for the feed status)
    backoff_delays: list[float] = field(default_factory=list)


class BinanceConnector(BackgroundRunner):
    def __init__(
        self,
        market: Market,
        symbols: Iterable[str],
        sink: EventSink,
        *,
        ws_url: str | None = None,
        rest_url: str | None = None,
        streams: Iterable[str] | None = None,
        limits: ConnectorLimits | None = None,
        backoff: Backoff | None = None,
        breaker: CircuitBreaker | None = None,
        http_client: httpx.AsyncClient | None = None,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        max_recorded_delays: int = 100,
    ) -> None:
        self.market = market
        self.venue = VENUE_OF[market]
        self.task_name = f"{self.venue}-connector"
        self.symbols = [s.upper() for s in symbols]
        if not self.symbols:
            raise ValueError("at least one symbol is required")
        self._sink = sink
        self.ws_url = ws_url or DEFAULT_WS_URL[market]
        self.rest_url = rest_url or DEFAULT_REST_URL[market]
        self.streams = tuple(streams) if streams is not None else DEFAULT_STREAMS[market]
        self.limits = limits or ConnectorLimits()
        self.backoff = backoff or Backoff(clock=clock)
        self.breaker = breaker or CircuitBreaker(clock=clock)
        self._http = http_client
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._max_recorded_delays = max_recorded_delays
        self.stats = ConnectorStats()
        self.syncs = {s: self._new_sync(s) for s in self.symbols}
        self._ws: ClientConnection | None = None
        self._fetching: dict[str, asyncio.Task[None]] = {}
        self._last_request: dict[str, float] = {}
        # Serialises "change a book + emit its events" between the reader and snapshot tasks, so the sink sees
        # snapshot, then the buffered diffs, then live diffs, never interleaved.
        self._emit_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def _new_sync(self, symbol: str) -> BookSynchroniser:
        return BookSynchroniser(
            self.market,
            symbol,
            max_buffered_diffs=self.limits.max_buffered_diffs,
            max_levels=self.limits.max_book_levels,
        )

    @property
    def url(self) -> str:
        return stream_url(self.ws_url, self.symbols, self.streams)

    async def force_reconnect(self) -> None:
        """Close the current connection; :meth:`run` reconnects (after its backoff delay)."""
        if self._ws is not None:
            await self._ws.close()

    async def run(self) -> None:
        """Connect, stream and reconnect until cancelled."""
        own_client = self._http is None
        http = self._http or httpx.AsyncClient(timeout=self.limits.rest_timeout_s)
        try:
            while True:
                try:
                    await self._session(http)
                except (OSError, TimeoutError, WebSocketException) as exc:
                    if cancelling():  # a stop() that arrived as a connect timeout
                        raise asyncio.CancelledError from exc
                    self.stats.last_error = repr(exc)
                    logger.info("binance.disconnected", extra={"venue": self.venue, "error": repr(exc)})
                delay = self.backoff.next_delay()
                if len(self.stats.backoff_delays) >= self._max_recorded_delays:
                    del self.stats.backoff_delays[0]
                self.stats.backoff_delays.append(delay)
                await self._sleep(delay)
        finally:
            if own_client:
                await http.aclose()

    async def _session(self, http: httpx.AsyncClient) -> None:
        limits = self.limits
        async with connect(
            self.url,
            open_timeout=limits.open_timeout_s,
            close_timeout=limits.close_timeout_s,
            ping_interval=limits.ping_interval_s,
            ping_timeout=limits.ping_timeout_s,
            max_size=limits.max_frame_bytes,
            max_queue=limits.max_queued_frames,
        ) as ws:
            self._ws = ws
            self.stats.connects += 1
            self.stats.connected = True
            self.backoff.on_connected()
            # A new connection is a new diff stream: every book must be rebuilt from a new snapshot.
            for sync in self.syncs.values():
                sync.reset()
            try:
                while True:
                    async with asyncio.timeout(limits.silence_timeout_s):
                        raw = await ws.recv()
                    await self._on_frame(raw, http)
            finally:
                self._ws = None
                self.stats.connected = False
                self.stats.disconnects += 1
                self.backoff.on_disconnected()
                await self._cancel_fetches()

    async def _cancel_fetches(self) -> None:
        tasks = list(self._fetching.values())
        self._fetching.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _on_frame(self, raw: str | bytes, http: httpx.AsyncClient) -> None:
        self.stats.frames += 1
        self.stats.last_frame_at = self._clock()
        try:
            event = parse_frame(raw, self.venue, int(self._wall_clock() * 1000))
        except MalformedFrameError:
            self.stats.malformed += 1
            return
        if event is None or event.symbol not in self.syncs:
            self.stats.ignored += 1
            return
        if not isinstance(event, BookUpdate):
            await self._sink(event)
            return
        sync = self.syncs[event.symbol]
        async with self._emit_lock:
            result = sync.on_diff(event)
            if result is DiffResult.APPLIED:
                await self._sink(event)
        if result is DiffResult.GAP or result is DiffResult.OVERFLOW:
            self.stats.resyncs += 1
            logger.warning("binance.resync", extra={"symbol": event.symbol, "reason": result.value})
        if sync.needs_snapshot and event.symbol not in self._fetching:
            self._fetching[event.symbol] = asyncio.create_task(
                self._sync_book(sync, http), name=f"{self.venue}-snapshot-{event.symbol}"
            )

    async def _sync_book(self, sync: BookSynchroniser, http: httpx.AsyncClient) -> None:
        """Fetch snapshots for one symbol until its book is in sync, within the breaker and resync interval."""
        symbol = sync.symbol
        try:
            while sync.needs_snapshot:
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
                await self._fetch_snapshot(sync, http)
        finally:
            if self._fetching.get(symbol) is asyncio.current_task():
                del self._fetching[symbol]

    async def _fetch_snapshot(self, sync: BookSynchroniser, http: httpx.AsyncClient) -> None:
        url = depth_url(self.rest_url, self.market, sync.symbol, self.limits.snapshot_depth)
        self.stats.snapshot_requests += 1
        try:
            response = await http.get(url, timeout=self.limits.rest_timeout_s)
        except asyncio.CancelledError:
            # Cancelled with the connection: no verdict on the venue, so free the half-open probe slot.
            self.breaker.abandon_probe()
            raise
        except httpx.HTTPError as exc:
            self._snapshot_failed(sync.symbol, None, None, repr(exc))
            return
        if response.status_code != 200:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            self._snapshot_failed(sync.symbol, response.status_code, retry_after, response.reason_phrase)
            return
        try:
            snapshot = parse_depth_snapshot(response.content, self.venue, sync.symbol, int(self._wall_clock() * 1000))
        except MalformedFrameError as exc:
            self._snapshot_failed(sync.symbol, response.status_code, None, str(exc))
            return
        self.breaker.record_success()
        async with self._emit_lock:
            applied = sync.on_snapshot(snapshot)
            await self._sink(snapshot)
            for update in applied:
                await self._sink(update)
        if sync.needs_snapshot:  # the buffered diffs did not continue this snapshot: go round again
            self.stats.resyncs += 1
            logger.warning("binance.resync", extra={"symbol": sync.symbol, "reason": "snapshot_gap"})

    def _snapshot_failed(self, symbol: str, status: int | None, retry_after: float | None, why: str) -> None:
        self.stats.snapshot_failures += 1
        self.breaker.record_failure(status, retry_after)
        logger.warning("binance.snapshot_failed", extra={"symbol": symbol, "status": status, "error": why})
