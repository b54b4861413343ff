"""Asyncio connector for Bybit v5 public (linear): trades, ``orderbook.50`` books and liquidations on one socket.

Per connection the connector owns the socket, one keepalive task and (unless every per-stream threshold is off) one
stream-watch task; when the connection ends, for whatever reason, the tasks are cancelled and awaited and the socket
closed before the backoff sleep, so reconnects leak nothing. A :meth:`force_reconnect` request holds until the
session ends, so one that comes while the socket is still opening (nothing to close yet) is not lost. Events go to
an async ``sink``; awaiting it is the backpressure.

Liveness: Bybit drops clients that stay silent, and documents an application-level ``{"op":"ping"}`` every 20 s.
A ping whose pong does not arrive within ``pong_timeout_s``, or no frame at all for ``silence_timeout_s``, means a
stale feed: the connection is closed and re-opened. A book gap is repaired in band by unsubscribing and
resubscribing its topic (Bybit answers every subscribe with a fresh snapshot); a book that does not recover within
``snapshot_timeout_s`` or ``max_resubscribes`` attempts escalates to a reconnect.

Per-stream silence: pongs (and other topics' frames) prove the socket, not that one symbol's ``orderbook`` topic
still delivers. Each symbol's book (and, if ``trade_silence_s`` is set, its trades) is timed from the subscribe
(:class:`~app.market.venues.stream_watch.StreamWatch`, restarted by every resubscribe). A book silent for
``book_silence_s`` is stale: it goes through the gap repair above, so a fresh snapshot replaces it in band, and the
same snapshot timeout and resubscribe budget escalate to a reconnect if that does not help. A trade resubscribe
brings no snapshot, so nothing would show whether it worked; silent trades (when that threshold is enabled — it is
off by default, as a quiet symbol legitimately goes minutes without a trade) therefore reconnect.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, WebSocketException

from app.market.events import BookSnapshot, BookUpdate, Trade
from app.market.recovery import Backoff, Clock
from app.market.silence import BOOK, TRADES
from app.market.tasks import BackgroundRunner
from app.market.venues.bybit import (
    DEFAULT_BOOK_DEPTH,
    DEFAULT_WS_URL,
    VENUE,
    BookResult,
    BybitBook,
    Control,
    MalformedFrameError,
    book_topic,
    parse_frame,
    request,
    topics,
)
from app.market.venues.stream_watch import StaleStream, StreamWatch
from app.market.venues.ws_common import EventSink, FeedStats, Sleep

logger = logging.getLogger(__name__)


class BybitFeedError(Exception):
    """The venue refused a request, or a book could not be recovered on this connection: reconnect."""


@dataclass(frozen=True, slots=True)
class BybitLimits:
    """Every bound the connector applies; the config layer fills these from settings."""

    book_depth: int = DEFAULT_BOOK_DEPTH
    max_book_levels: int = 200  # per side; orderbook.50 keeps ~50, this only guards against a misbehaving feed
    ping_interval_s: float = 20.0  # Bybit's documented keepalive interval
    pong_timeout_s: float = 10.0
    silence_timeout_s: float = 30.0  # no frame at all (not even a pong) for this long: stale
    book_silence_s: float | None = 30.0  # one symbol's book topic silent this long: resubscribe it (None: off)
    trade_silence_s: float | None = None  # one symbol's trades silent this long: reconnect (None: off, quiet markets)
    snapshot_timeout_s: float = 10.0  # a resubscribed book must be back within this
    max_resubscribes: int = 5  # per connection; past it a reconnect resets everything
    max_topics_per_request: int = 10  # Bybit caps args per subscribe request
    open_timeout_s: float = 10.0
    close_timeout_s: float = 2.0
    max_frame_bytes: int = 1 << 20
    max_queued_frames: int = 64  # frames websockets buffers ahead of the reader


@dataclass(slots=True)
class BybitStats(FeedStats):
    acks: int = 0
    pings: int = 0
    pongs: int = 0
    stale_timeouts: int = 0
    resyncs: int = 0
    stale_streams: int = 0  # silent book/trade streams acted on (resubscribed or reconnected)


class BybitConnector(BackgroundRunner):
    task_name = "bybit-connector"

    def __init__(
        self,
        symbols: Iterable[str],
        sink: EventSink,
        *,
        ws_url: str | None = None,
        limits: BybitLimits | None = None,
        backoff: Backoff | None = None,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.venue = VENUE
        self.symbols = list(dict.fromkeys(s.upper() for s in symbols))
        if not self.symbols:
            raise ValueError("at least one symbol is required")
        self._sink = sink
        self.ws_url = ws_url or DEFAULT_WS_URL
        self.limits = limits or BybitLimits()
        self.backoff = backoff or Backoff(clock=clock)
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self.stats = BybitStats()
        self.books = {s: BybitBook(s, self.limits.max_book_levels) for s in self.symbols}
        self._ws: ClientConnection | None = None
        self._pong = asyncio.Event()
        self._req_ids = itertools.count(1)
        self._resubscribes = 0
        self._awaiting_snapshot: dict[str, float] = {}  # symbol → when its book went invalid
        self._reconnect_requested = asyncio.Event()  # set by force_reconnect(), cleared per connect
        self._streams = StreamWatch({BOOK: self.limits.book_silence_s, TRADES: self.limits.trade_silence_s}, clock)
        self._task: asyncio.Task[None] | None = None

    @property
    def topics(self) -> list[str]:
        return [t for s in self.symbols for t in topics(s, self.limits.book_depth)]

    async def force_reconnect(self) -> None:
        """End the current session; :meth:`run` reconnects (after its backoff delay) with a socket opened after this
        call. While the socket is still opening there is nothing to close: the flag makes the session drop it."""
        self._reconnect_requested.set()
        if self._ws is not None:
            await self._ws.close()

    async def run(self) -> None:
        """Connect, stream and reconnect until cancelled."""
        while True:
            try:
                await self._session()
            except ConnectionClosedOK:
                logger.info("bybit.closed")
            except (OSError, TimeoutError, WebSocketException, BybitFeedError) as exc:
                self.stats.record_error(repr(exc))
                logger.info("bybit.disconnected", extra={"error": repr(exc)})
            delay = self.backoff.next_delay()
            self.stats.backoff_delays.append(delay)
            self.stats.reconnects += 1
            await self._sleep(delay)

    async def _connect(self) -> ClientConnection:
        limits = self.limits
        return await connect(
            self.ws_url,
            open_timeout=limits.open_timeout_s,
            close_timeout=limits.close_timeout_s,
            # Bybit's keepalive is the application-level ping below; protocol pings would only double the traffic.
            ping_interval=None,
            max_size=limits.max_frame_bytes,
            max_queue=limits.max_queued_frames,
        )

    async def _session(self) -> None:
        limits = self.limits
        self._reconnect_requested.clear()  # a request made before this connect is served by it
        async with await self._connect() as ws:
            self._ws = ws
            self.stats.connects += 1
            self.stats.connected = True
            self.backoff.on_connected()
            self._resubscribes = 0
            now = self._clock()
            # A new connection is a new subscription: every book waits for the snapshot the subscribe brings.
            for book in self.books.values():
                book.invalidate()
            self._awaiting_snapshot = dict.fromkeys(self.symbols, now)
            keepalive: asyncio.Task[None] | None = None
            watch: asyncio.Task[None] | None = None
            try:
                await self._subscribe(ws, "subscribe", self.topics)
                self._streams.watch_all(self.symbols)
                keepalive = asyncio.create_task(self._keepalive(ws), name="bybit-keepalive")
                if self._streams.enabled:
                    watch = asyncio.create_task(self._streams.run(partial(self._on_stale, ws)), name="bybit-streams")
                while not self._reconnect_requested.is_set():
                    try:
                        async with asyncio.timeout(limits.silence_timeout_s):
                            raw = await ws.recv()
                    except ConnectionClosed:
                        if self._reconnect_requested.is_set():
                            break  # closed by force_reconnect()
                        raise
                    await self._on_frame(raw, ws)
                logger.info("bybit.reconnect_forced")
            finally:
                self._ws = None
                self.stats.connected = False
                self.stats.disconnects += 1
                self.backoff.on_disconnected()
                self._streams.clear()
                tasks = [t for t in (keepalive, watch) if t is not None]
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _subscribe(self, ws: ClientConnection, op: str, names: list[str]) -> None:
        step = self.limits.max_topics_per_request
        for start in range(0, len(names), step):
            await ws.send(request(op, names[start : start + step], str(next(self._req_ids))))

    async def _keepalive(self, ws: ClientConnection) -> None:
        """Ping on schedule; a missing pong or a book stuck without a snapshot closes the connection."""
        limits = self.limits
        while True:
            await asyncio.sleep(limits.ping_interval_s)
            self._pong.clear()
            await ws.send(request("ping", req_id=str(next(self._req_ids))))
            self.stats.pings += 1
            try:
                async with asyncio.timeout(limits.pong_timeout_s):
                    await self._pong.wait()
            except TimeoutError:
                self.stats.stale_timeouts += 1
                self.stats.record_error("pong timeout")
                logger.warning("bybit.stale", extra={"reason": "pong_timeout"})
                await ws.close()
                return
            now = self._clock()
            stuck = [s for s, since in self._awaiting_snapshot.items() if now - since >= limits.snapshot_timeout_s]
            if stuck:
                self.stats.record_error(f"no book snapshot for {','.join(stuck)}")
                logger.warning("bybit.stale", extra={"reason": "snapshot_timeout", "symbols": stuck})
                await ws.close()
                return

    async def _on_frame(self, raw: str | bytes, ws: ClientConnection) -> None:
        self.stats.frames += 1
        self.stats.last_frame_at = self._clock()
        try:
            parsed = parse_frame(raw, int(self._wall_clock() * 1000))
        except MalformedFrameError:
            self.stats.malformed += 1
            return
        if parsed.control is not None:
            self._on_control(parsed.control)
            return
        if not parsed.events:
            self.stats.ignored += 1
            return
        for event in parsed.events:
            book = self.books.get(event.symbol)
            if book is None:
                self.stats.ignored += 1
            elif isinstance(event, BookSnapshot):
                self._streams.seen(BOOK, event.symbol)
                book.on_snapshot(event, parsed.seq)
                self._awaiting_snapshot.pop(event.symbol, None)
                await self._sink(event)
            elif isinstance(event, BookUpdate):
                self._streams.seen(BOOK, event.symbol)  # whatever the book makes of it: the topic is flowing
                result = book.on_update(event, parsed.seq)
                if result is BookResult.APPLIED:
                    await self._sink(event)
                elif result is BookResult.GAP:
                    await self._resubscribe_book(event.symbol, ws)
            else:
                if isinstance(event, Trade):
                    self._streams.seen(TRADES, event.symbol)
                await self._sink(event)

    def _on_control(self, control: Control) -> None:
        if control.is_pong:
            self.stats.pongs += 1
            self._pong.set()
        elif not control.success:
            # A refused subscription never heals on its own; reconnecting (with backoff) retries it and shows it.
            raise BybitFeedError(f"{control.op} refused: {control.message}")
        elif control.op in ("subscribe", "unsubscribe"):
            self.stats.acks += 1
        else:
            self.stats.ignored += 1

    async def _resubscribe_book(self, symbol: str, ws: ClientConnection, *, reason: str = "gap") -> None:
        self.stats.resyncs += 1
        self._resubscribes += 1
        logger.warning("bybit.resync", extra={"symbol": symbol, "reason": reason})
        if self._resubscribes > self.limits.max_resubscribes:
            raise BybitFeedError(f"book for {symbol} kept breaking: {self._resubscribes} resubscribes")
        self.books[symbol].invalidate()  # after a gap it already is; a silent book is no longer trusted either
        self._awaiting_snapshot.setdefault(symbol, self._clock())
        self._streams.watch(BOOK, [symbol])  # a new subscription: its silence is timed from now
        topic = [book_topic(symbol, self.limits.book_depth)]
        # Unsubscribe first: subscribing to a topic already held is refused, and only a new subscribe brings a
        # new snapshot. Deltas still in flight meanwhile are dropped by the invalid book.
        await self._subscribe(ws, "unsubscribe", topic)
        await self._subscribe(ws, "subscribe", topic)

    async def _on_stale(self, ws: ClientConnection, stale: list[StaleStream]) -> bool:
        """A silent book is resubscribed in band; silent trades reconnect. False once the connection is going."""
        try:
            for stream in stale:
                if stream.kind == BOOK and stream.symbol in self._awaiting_snapshot:
                    # Already resubscribed and waiting for its snapshot: the snapshot timeout escalates if need be.
                    self._log_stale(stream, "await_snapshot", logging.INFO)
                    continue
                self.stats.stale_streams += 1
                if stream.kind == BOOK:
                    self._log_stale(stream, "resubscribe")
                    await self._resubscribe_book(stream.symbol, ws, reason="silent")
                else:
                    self._log_stale(stream, "reconnect")
                    self.stats.record_error(f"{stream.kind} of {stream.symbol} silent for {stream.silent_s:.1f} s")
                    await self.force_reconnect()
                    return False
        except BybitFeedError as exc:  # the resubscribe budget is spent: start over on a new connection
            self.stats.record_error(str(exc))
            await self.force_reconnect()
            return False
        except ConnectionClosed:
            return False  # the reader sees it too and ends the session
        return True

    def _log_stale(self, stream: StaleStream, action: str, level: int = logging.WARNING) -> None:
        silent_s = round(stream.silent_s, 3)
        logger.log(
            level,
            "bybit.stale_stream",
            extra={
                "venue": self.venue,
                "symbol": stream.symbol,
                "kind": stream.kind,
                "silent_s": silent_s,
                "action": action,
            },
        )
