"""Asyncio connector for Binance spot and USDⓈ-M futures combined streams with REST depth snapshots.

One connection carries every subscribed stream. Per connection the connector owns: the socket, one snapshot
task per symbol that needs one, and fresh book synchronisers; when the connection ends, for whatever reason,
all of them are cancelled, awaited and released before the backoff sleep, so reconnects leak neither tasks nor
sockets. Events go to an async ``sink``; awaiting it is the backpressure (a full bounded queue stalls the
reader rather than dropping a diff). A :meth:`force_reconnect` request holds until the session ends, so one that
comes while a socket is still opening (nothing to close yet) is not lost, and a rotation in progress does not take
over from it: its socket was opened before the request and is closed with the session.

Server notices: a ``serverShutdown`` event, or the connection reaching ``max_connection_age_s`` (Binance closes
stream connections at 24 h), rotates the connection make-before-break (:mod:`binance_rotation`): no trade volume
is lost or counted twice across the switch, and books carry on without a REST snapshot. Any other end of a
connection is a break: ``on_gap`` is told (per symbol) before the backoff sleep, so the pipeline can treat bars
spanning the break as partially observed and have them repaired from REST klines.

Snapshots, per-stream silence (a symbol's depth stream stopping while its other streams flow) and the snapshot
cache live in :mod:`binance_recovery`; the reader notes every diff and trade there and runs its check once the
earliest stream deadline has passed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from app.market.events import BookUpdate, Liquidation, MarketEvent, Trade
from app.market.recovery import Backoff, CircuitBreaker, Clock
from app.market.silence import BOOK, TRADES
from app.market.tasks import BackgroundRunner, cancelling
from app.market.venues.binance import (
    DEFAULT_REST_URL,
    DEFAULT_STREAMS,
    DEFAULT_WS_URL,
    VENUE_OF,
    MalformedFrameError,
    Market,
    is_server_shutdown,
    parse_frame,
    stream_url,
)
from app.market.venues.binance_limits import ConnectorLimits, ConnectorStats
from app.market.venues.binance_recovery import BookRecovery
from app.market.venues.binance_rotation import Rotation
from app.market.venues.binance_sync import BookSynchroniser, DiffResult

__all__ = ["BinanceConnector", "ConnectorLimits", "ConnectorStats", "EventSink", "GapSink", "Sleep", "queue_sink"]

logger = logging.getLogger(__name__)

EventSink = Callable[[MarketEvent], Awaitable[None]]
GapSink = Callable[[str], Awaitable[None]]  # told the symbol whose stream broke (a reconnect, not a rotation)
Sleep = Callable[[float], Awaitable[None]]


def queue_sink(queue: asyncio.Queue[MarketEvent]) -> EventSink:
    """A sink that puts events on a bounded queue, waiting (backpressure) when it is full."""
    return queue.put


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
        on_gap: GapSink | None = None,
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
        self._on_gap = on_gap
        self.stats = ConnectorStats()
        self.syncs = {s: self._new_sync(s) for s in self.symbols}
        self._ws: ClientConnection | None = None
        self._rotation: Rotation | None = None
        self._opened_at = self._last_frame_at = 0.0  # monotonic: the current connection's start, its last frame
        self._shutdown_notice = False
        # The newest aggTrade id and liquidation time emitted per symbol on this session: what a rotation's
        # overlap delivers twice is dropped by these. Reset with every new session (a break shares no overlap).
        self._last_trade_id: dict[str, int] = {}
        self._last_liquidation_ts: dict[str, int] = {}
        # Serialises "change a book + emit its events" between the reader and snapshot tasks, so the sink sees
        # snapshot, then the buffered diffs, then live diffs, never interleaved.
        self._emit_lock = asyncio.Lock()
        self.recovery = BookRecovery(
            market,
            self.syncs,
            sink,
            self._emit_lock,
            rest_url=self.rest_url,
            limits=self.limits,
            stats=self.stats,
            breaker=self.breaker,
            clock=clock,
            wall_clock=wall_clock,
            sleep=sleep,
            reconnect=self._replace_connection,
        )
        self._silence = self.recovery.silence  # noted per frame: one attribute lookup less
        self._time_trades = TRADES in self._silence.thresholds  # off by default: skip the per-trade call then
        self._reconnect_requested = asyncio.Event()  # set by force_reconnect(), cleared per connect
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
        """End the current session; :meth:`run` reconnects (after its backoff delay) with a socket opened after this
        call. While a socket is still opening there is nothing to close: the flag makes the session drop it."""
        self._reconnect_requested.set()
        if self._ws is not None:
            await self._ws.close()

    async def _replace_connection(self, reason: str) -> None:
        """A silent stream this connection will not recover (a dead depth stream, a silent trade stream)."""
        self.stats.silence_reconnects += 1
        self.stats.last_error = reason
        logger.warning("binance.stream_silent", extra={"venue": self.venue, "reason": reason})
        await self.force_reconnect()

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
                if self._on_gap is not None:
                    for symbol in self.symbols:
                        await self._on_gap(symbol)
                delay = self.backoff.next_delay()
                if len(self.stats.backoff_delays) >= self._max_recorded_delays:
                    del self.stats.backoff_delays[0]
                self.stats.backoff_delays.append(delay)
                await self._sleep(delay)
        finally:
            if own_client:
                await http.aclose()

    async def _connect(self) -> ClientConnection:
        limits = self.limits
        ws = await connect(
            self.url,
            open_timeout=limits.open_timeout_s,
            close_timeout=limits.close_timeout_s,
            ping_interval=limits.ping_interval_s,
            ping_timeout=limits.ping_timeout_s,
            max_size=limits.max_frame_bytes,
            max_queue=limits.max_queued_frames,
        )
        self.stats.connects += 1
        return ws

    async def _session(self, http: httpx.AsyncClient) -> None:
        self._reconnect_requested.clear()  # a request made before this connect is served by it
        self._ws = await self._connect()
        self.stats.connected = True
        self.backoff.on_connected()
        # A new connection is a new diff stream: every book must be rebuilt from a new snapshot.
        for sync in self.syncs.values():
            sync.reset()
        self._last_trade_id.clear()
        self._last_liquidation_ts.clear()
        self._shutdown_notice = False
        self._opened_at = self._last_frame_at = self._clock()
        self.recovery.watch_streams()
        try:
            while not self._reconnect_requested.is_set():
                await self._step(http)
            logger.info("binance.reconnect_forced", extra={"venue": self.venue})
        finally:
            ws, self._ws = self._ws, None
            self.stats.connected = False
            self.stats.disconnects += 1
            self.backoff.on_disconnected()
            await self.recovery.cancel()
            rotation, self._rotation = self._rotation, None
            if rotation is not None:
                await rotation.abandon()
            if ws is not None:
                await ws.close()

    async def _step(self, http: httpx.AsyncClient) -> None:
        """Handle one frame (or a timer: silence, rotation deadline, connection age) of the current connection."""
        ws = self._ws
        if ws is None:  # only _session sets and clears it, around its calls of this method
            raise ConnectionError("no connection")
        rotation = await self._rotation_due()
        silence_at = self._last_frame_at + self.limits.silence_timeout_s
        max_age = self.limits.max_connection_age_s
        wake_at = min(silence_at, self.recovery.next_check)
        if rotation is not None:
            wake_at = min(wake_at, rotation.deadline)
        elif max_age is not None:
            wake_at = min(wake_at, self._opened_at + max_age)
        try:
            async with asyncio.timeout(max(0.0, wake_at - self._clock())):
                raw = await ws.recv()
        except TimeoutError:
            now = self._clock()
            if rotation is not None and now >= rotation.deadline:
                await self._switch(rotation, http, forced=True)
            elif now >= silence_at:
                raise  # a stale feed: reconnect
            elif now >= self.recovery.next_check:
                await self._check_streams(http)
            return
        except ConnectionClosed:
            if self._reconnect_requested.is_set():
                return  # closed by force_reconnect(): a switch in progress must not take over
            if rotation is None or rotation.closed:
                raise
            # The old connection went first: whatever it did not deliver was never going to arrive.
            await self._switch(rotation, http, forced=False)
            return
        self._last_frame_at = self._clock()
        await self._on_frame(raw, http)
        if self._last_frame_at >= self.recovery.next_check:  # per frame, only this comparison
            await self._check_streams(http)
        if rotation is not None and rotation.caught_up(self._last_trade_id, self.syncs):
            await self._switch(rotation, http, forced=rotation.full)

    async def _check_streams(self, http: httpx.AsyncClient) -> None:
        reason = self.recovery.check(http)
        if reason is not None:
            await self._replace_connection(reason)

    async def _rotation_due(self) -> Rotation | None:
        """The rotation in progress, or a new one if a notice or the connection's age calls for it."""
        if self._rotation is not None:
            return self._rotation
        now = self._clock()
        max_age = self.limits.max_connection_age_s
        if self._shutdown_notice or (max_age is not None and now - self._opened_at >= max_age):
            self._shutdown_notice = False
            if await self._start_rotation(now) is None and max_age is not None:
                # Could not open a second connection: keep this one and try again after the rotation timeout.
                self._opened_at = now + self.limits.rotation_timeout_s - max_age
        return self._rotation

    async def _start_rotation(self, now: float) -> Rotation | None:
        logger.info("binance.rotating", extra={"venue": self.venue, "notice": self._shutdown_notice})
        try:
            ws = await self._connect()
        except (OSError, TimeoutError, WebSocketException) as exc:
            if cancelling():
                raise asyncio.CancelledError from exc
            self.stats.rotation_failures += 1
            self.stats.last_error = f"rotation failed: {exc!r}"
            logger.warning("binance.rotation_failed", extra={"venue": self.venue, "error": repr(exc)})
            return None
        self._rotation = Rotation(
            ws,
            self._parse,
            max_events=self.limits.max_rotation_events,
            deadline=now + self.limits.rotation_timeout_s,
        )
        return self._rotation

    async def _switch(self, rotation: Rotation, http: httpx.AsyncClient, *, forced: bool) -> None:
        """Follow the rotation's connection from here on; the old one is closed."""
        if self._reconnect_requested.is_set():
            return  # the session is ending: the rotation is abandoned with it
        await rotation.stop_reading()
        old, self._ws, self._rotation = self._ws, rotation.ws, None
        self._shutdown_notice = False
        self._opened_at = self._last_frame_at = self._clock()
        self.stats.rotations += 1
        self.stats.rotations_forced += forced
        for sync in self.syncs.values():
            sync.rebridge()
        self.recovery.watch_streams()  # the new connection's streams are timed from the switch
        for event in rotation.events:
            await self._on_event(event, http)
        if old is not None:
            await old.close()
        logger.info("binance.rotated", extra={"venue": self.venue, "forced": forced, "buffered": len(rotation.events)})

    def _parse(self, raw: str | bytes) -> MarketEvent | None:
        """A frame's event for a subscribed symbol; None (counted) for anything else."""
        self.stats.frames += 1
        self.stats.last_frame_at = self._clock()
        try:
            event = parse_frame(raw, self.venue, int(self._wall_clock() * 1000))
        except MalformedFrameError:
            self.stats.malformed += 1
            return None
        if event is None or event.symbol not in self.syncs:
            if event is None and is_server_shutdown(raw):
                self.stats.server_shutdowns += 1
                self._shutdown_notice = True
                logger.info("binance.server_shutdown", extra={"venue": self.venue})
            else:
                self.stats.ignored += 1
            return None
        return event

    async def _on_frame(self, raw: str | bytes, http: httpx.AsyncClient) -> None:
        event = self._parse(raw)
        if event is not None:
            await self._on_event(event, http)

    def _is_duplicate(self, event: Trade | Liquidation) -> bool:
        """Trades by aggTrade id, liquidations by time (Binance sends at most one per symbol and second)."""
        seen = self._last_trade_id if isinstance(event, Trade) else self._last_liquidation_ts
        mark = event.trade_id if isinstance(event, Trade) else event.exchange_ts
        last = seen.get(event.symbol)
        if last is not None and mark <= last:
            self.stats.duplicates += 1
            return True
        seen[event.symbol] = mark
        return False

    async def _on_event(self, event: MarketEvent, http: httpx.AsyncClient) -> None:
        if not isinstance(event, BookUpdate):
            if isinstance(event, Trade):
                if self._time_trades:
                    self._silence.seen(TRADES, event.symbol)
                if self._is_duplicate(event):
                    return
            elif isinstance(event, Liquidation) and self._is_duplicate(event):
                return
            await self._sink(event)
            return
        sync = self.syncs[event.symbol]
        self._silence.seen(BOOK, event.symbol)  # before the lock: a probe's verdict sees even a diff still queued
        async with self._emit_lock:
            result = sync.on_diff(event)
            if result is DiffResult.APPLIED:
                await self._sink(event)
        if result is DiffResult.GAP or result is DiffResult.OVERFLOW:
            self.stats.resyncs += 1
            logger.warning("binance.resync", extra={"symbol": event.symbol, "reason": result.value})
        if sync.needs_snapshot:
            self.recovery.resync(sync, http)
