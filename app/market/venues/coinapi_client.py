"""Asyncio connector for CoinAPI's Market Data WebSocket: ``trade`` and ``book20`` for a fixed set of symbol ids.

Lifecycle: connect, send ``hello``, read. Errors: an ``error`` whose text says the key is invalid or out of quota
cannot be fixed by retrying, so :meth:`run` returns at once with the reason in ``stats`` (the feed status shows it)
instead of hammering CoinAPI with a bad key; any other error reconnects with backoff.

Liveness comes from the server's one-per-second heartbeats: no frame for ``silence_timeout_s`` means a stale feed
and a reconnect. Heartbeats only prove the socket, not that any one symbol still flows, so each symbol's book
(``book_silence_s``) and, if enabled, its trades (``trade_silence_s``; off by default, since a quiet market goes
minutes without a trade) are timed per stream from the subscription
(:class:`~app.market.venues.stream_watch.StreamWatch`, restarted when a switch brings a new one). A stream silent
past its threshold reconnects. CoinAPI does offer in-band ``subscribe``/``unsubscribe`` (and a repeated ``hello``
replaces the scope), but nothing acknowledges them and a book message carries no continuity to check, so an in-band
resubscribe could not be told apart from one the server ignored, and our client has no per-symbol resubscribe
path to escalate from. A ``book20`` is whole every time, so a reconnect (a fresh server session and subscription)
loses nothing an in-band repair would keep.

Server ``reconnect`` notices are handled make-before-break: a second connection is opened and subscribed while the
first keeps delivering; once the second has delivered a frame (so its subscription is live) it becomes the primary
and the first is closed. Both deliver the overlap, so trades are de-duplicated by CoinAPI's trade uuid (a bounded
window of recent uuids); book20 messages are whole snapshots, for which a duplicate is harmless.

Per connection the connector owns at most two sockets, one rotation task and one stream-watch task (none if every
per-stream threshold is off); when the session ends, for whatever reason, the tasks are cancelled and every socket
closed before the backoff sleep. A :meth:`force_reconnect` request holds until the session ends, so one that comes
while a socket is still opening (nothing to close yet) is not lost. The API key is only ever sent in ``hello``; it
is kept out of ``repr``, logs and stats (server error texts are redacted before they are stored).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, WebSocketException

from app.market.recovery import Backoff, Clock
from app.market.silence import BOOK, TRADES
from app.market.tasks import BackgroundRunner
from app.market.venues.coinapi import (
    BOOK_TYPES,
    DATA_TYPES,
    DEFAULT_WS_URL,
    VENUE,
    MalformedFrameError,
    TickRule,
    hello_message,
    is_auth_error,
    parse_message,
    symbol_map,
)
from app.market.venues.stream_watch import StaleStream, StreamWatch
from app.market.venues.ws_common import EventSink, FeedStats, Sleep

logger = logging.getLogger(__name__)


class _NoFrameDebug(logging.LoggerAdapter):  # type: ignore[type-arg]
    """websockets debug-logs every frame and header: here the ``hello`` carries the API key (and error replies may
    echo it), so its DEBUG output is switched off for these sockets whatever the logging configuration says."""

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - overrides logging's name
        return level > logging.DEBUG and self.logger.isEnabledFor(level)


_wire_logger = _NoFrameDebug(logging.getLogger(f"{__name__}.wire"), {})


class CoinApiServerError(Exception):
    """CoinAPI sent an ``error`` message (it disconnects afterwards)."""


class CoinApiAuthError(CoinApiServerError):
    """The key was refused: retrying cannot help."""


@dataclass(frozen=True, slots=True)
class CoinApiLimits:
    """Every bound the connector applies; the config layer fills these from settings."""

    heartbeat: bool = True  # ask for the per-second heartbeat: it is what makes silence detectable
    silence_timeout_s: float = 10.0  # ten missed heartbeats
    book_silence_s: float | None = 30.0  # one symbol's book silent this long: reconnect (None: off)
    trade_silence_s: float | None = None  # one symbol's trades silent this long: reconnect (None: off, quiet markets)
    rotation_timeout_s: float = 10.0  # cap on a make-before-break switch (also capped by the notice's window)
    dedup_window: int = 10_000  # recent trade uuids remembered to drop overlap duplicates
    max_book_levels: int = 50  # per side and message
    open_timeout_s: float = 10.0
    close_timeout_s: float = 2.0
    max_frame_bytes: int = 1 << 20
    max_queued_frames: int = 64


@dataclass(slots=True)
class CoinApiStats(FeedStats):
    heartbeats: int = 0
    rotations: int = 0
    rotation_failures: int = 0
    duplicates: int = 0
    estimated_sides: int = 0  # BUY_ESTIMATED / SELL_ESTIMATED from CoinAPI
    unknown_sides: int = 0  # UNKNOWN, classified here by the tick rule
    fatal: bool = False  # run() gave up (refused key)
    stale_streams: int = 0  # silent book/trade streams that made the connector reconnect


class CoinApiConnector(BackgroundRunner):
    task_name = "coinapi-connector"

    def __init__(
        self,
        api_key: str,
        symbol_ids: Iterable[str] | Mapping[str, str],
        sink: EventSink,
        *,
        ws_url: str | None = None,
        data_types: Iterable[str] = DATA_TYPES,
        limits: CoinApiLimits | None = None,
        backoff: Backoff | None = None,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not api_key:
            raise ValueError("a CoinAPI API key is required")
        self.venue = VENUE
        self._api_key = api_key
        self.symbol_ids = symbol_map(symbol_ids)
        self.symbols = list(self.symbol_ids.values())
        self._sink = sink
        self.ws_url = ws_url or DEFAULT_WS_URL
        self.data_types = tuple(data_types)
        self.limits = limits or CoinApiLimits()
        self.backoff = backoff or Backoff(clock=clock)
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self.stats = CoinApiStats()
        self._ticks = TickRule()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._primary: ClientConnection | None = None
        self._open_sockets: set[ClientConnection] = set()
        self._rotation: asyncio.Task[None] | None = None
        self._reconnect_requested = asyncio.Event()  # set by force_reconnect(), cleared per connect
        self._task: asyncio.Task[None] | None = None
        # Only streams subscribed to are timed: no book threshold without a book data type, same for trades.
        has_books = not BOOK_TYPES.isdisjoint(self.data_types)
        thresholds = {
            BOOK: self.limits.book_silence_s if has_books else None,
            TRADES: self.limits.trade_silence_s if "trade" in self.data_types else None,
        }
        self._streams = StreamWatch(thresholds, clock)

    def __repr__(self) -> str:
        return f"CoinApiConnector(symbols={self.symbols!r}, ws_url={self.ws_url!r})"  # never the key

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***")

    async def force_reconnect(self) -> None:
        """End the current session; :meth:`run` reconnects (after its backoff delay) with a socket opened after this
        call. While a socket is still opening there is no primary to close: the flag makes the session drop it."""
        self._reconnect_requested.set()
        if self._primary is not None:
            await self._primary.close()

    async def run(self) -> None:
        """Connect, stream and reconnect until cancelled, or until CoinAPI refuses the key."""
        while True:
            try:
                await self._session()
            except CoinApiAuthError as exc:
                self.stats.fatal = True
                logger.error("coinapi.key_refused", extra={"error": str(exc)})
                return
            except ConnectionClosedOK:
                logger.info("coinapi.closed")
            except (OSError, TimeoutError, WebSocketException, CoinApiServerError) as exc:
                self.stats.record_error(self._redact(repr(exc)))
                logger.info("coinapi.disconnected", extra={"error": self._redact(repr(exc))})
            delay = self.backoff.next_delay()
            self.stats.backoff_delays.append(delay)
            self.stats.reconnects += 1
            await self._sleep(delay)

    async def _open(self) -> ClientConnection:
        limits = self.limits
        ws = await connect(
            self.ws_url,
            open_timeout=limits.open_timeout_s,
            close_timeout=limits.close_timeout_s,
            max_size=limits.max_frame_bytes,
            max_queue=limits.max_queued_frames,
            logger=_wire_logger,
        )
        self._open_sockets.add(ws)
        try:
            await ws.send(
                hello_message(self._api_key, self.symbol_ids, heartbeat=limits.heartbeat, data_types=self.data_types)
            )
        except BaseException:
            await self._close(ws)
            raise
        self.stats.connects += 1
        return ws

    async def _close(self, ws: ClientConnection) -> None:
        self._open_sockets.discard(ws)
        await ws.close()

    async def _session(self) -> None:
        watch: asyncio.Task[None] | None = None
        try:
            self._reconnect_requested.clear()  # a request made before this connect is served by it
            self._primary = await self._open()
            self.stats.connected = True
            self.backoff.on_connected()
            self._streams.watch_all(self.symbols)
            if self._streams.enabled:
                watch = asyncio.create_task(self._streams.run(self._on_stale), name="coinapi-streams")
            while not self._reconnect_requested.is_set():
                conn = self._primary
                try:
                    async with asyncio.timeout(self.limits.silence_timeout_s):
                        raw = await conn.recv()
                except ConnectionClosed:
                    if self._reconnect_requested.is_set():
                        break  # closed by force_reconnect(): a switch in progress must not take over
                    rotation = self._rotation
                    if self._primary is conn and rotation is not None and not rotation.done():
                        # The old socket went first: give the switch its (bounded) chance before giving up.
                        await asyncio.wait({rotation})
                    if self._primary is not conn:
                        continue  # switched to the new connection
                    raise
                await self._on_frame(raw, conn)
            logger.info("coinapi.reconnect_forced")
        finally:
            was_connected = self.stats.connected
            self.stats.connected = False
            self._primary = None
            self._streams.clear()
            tasks = [t for t in (self._rotation, watch) if t is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._rotation = None
            for ws in list(self._open_sockets):
                await self._close(ws)
            if was_connected:
                self.stats.disconnects += 1
                self.backoff.on_disconnected()

    async def _on_frame(self, raw: str | bytes, conn: ClientConnection) -> None:
        self.stats.frames += 1
        self.stats.last_frame_at = self._clock()
        try:
            message = parse_message(
                raw, self.symbol_ids, int(self._wall_clock() * 1000), self._ticks, self.limits.max_book_levels
            )
        except MalformedFrameError:
            self.stats.malformed += 1
            return
        if message.event is not None:
            # Before de-duplication: a duplicate still shows the stream flowing.
            self._streams.seen(BOOK if message.trade_uuid is None else TRADES, message.event.symbol)
            if message.trade_uuid is not None:
                if self._is_duplicate(message.trade_uuid):
                    return
                if not message.side_known:
                    self.stats.unknown_sides += 1
                elif not message.side_exact:
                    self.stats.estimated_sides += 1
            await self._sink(message.event)
        elif message.type == "heartbeat":
            self.stats.heartbeats += 1
        elif message.type == "reconnect":
            self._on_reconnect_notice(conn, message.within_seconds or 0.0)
        elif message.type == "error":
            text = self._redact(message.text)
            self.stats.record_error(text)
            if is_auth_error(text):
                raise CoinApiAuthError(text)
            raise CoinApiServerError(text)
        else:
            self.stats.ignored += 1

    def _is_duplicate(self, trade_uuid: str) -> bool:
        if trade_uuid in self._seen:
            self.stats.duplicates += 1
            return True
        self._seen[trade_uuid] = None
        if len(self._seen) > self.limits.dedup_window:
            self._seen.popitem(last=False)
        return False

    def _on_reconnect_notice(self, conn: ClientConnection, within_s: float) -> None:
        logger.info("coinapi.reconnect_notice", extra={"within_seconds": within_s})
        if conn is not self._primary or (self._rotation is not None and not self._rotation.done()):
            return  # already switching, or a notice on the socket being replaced
        window = min(within_s, self.limits.rotation_timeout_s) if within_s > 0 else self.limits.rotation_timeout_s
        self._rotation = asyncio.create_task(self._rotate(conn, window), name="coinapi-rotation")

    async def _rotate(self, old: ClientConnection, window_s: float) -> None:
        new: ClientConnection | None = None
        try:
            async with asyncio.timeout(window_s):
                new = await self._open()
                raw = await new.recv()
            # Handled before the switch, so an ``error`` answer to the new hello leaves the old socket in charge.
            await self._on_frame(raw, new)
        except (OSError, TimeoutError, WebSocketException, CoinApiServerError) as exc:
            self.stats.rotation_failures += 1
            self.stats.record_error(self._redact(f"rotation failed: {exc!r}"))
            logger.warning("coinapi.rotation_failed", extra={"error": self._redact(repr(exc))})
            if new is not None:
                await self._close(new)
            return
        # The new subscription is live: from here on the reader follows it, and the old socket can go.
        self._primary = new
        self._streams.watch_all(self.symbols)  # a new subscription: its streams are timed from now
        self.stats.rotations += 1
        await self._close(old)

    async def _on_stale(self, stale: list[StaleStream]) -> bool:
        """Any silent stream reconnects (see the module docstring for why not in band); never keeps watching."""
        for stream in stale:
            self.stats.stale_streams += 1
            logger.warning(
                "coinapi.stale_stream",
                extra={
                    "venue": self.venue,
                    "symbol": stream.symbol,
                    "kind": stream.kind,
                    "silent_s": round(stream.silent_s, 3),
                    "action": "reconnect",
                },
            )
        first = stale[0]
        self.stats.record_error(f"{first.kind} of {first.symbol} silent for {first.silent_s:.1f} s")
        await self.force_reconnect()
        return False
