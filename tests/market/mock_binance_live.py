"""A live Binance spot look-alike on 127.0.0.1: a market that keeps trading whether anyone listens or not.

Unlike :class:`tests.market.mock_exchange.MockExchange` (which replays a capture from its start on every
connection), this one behaves like the venue across connections: one generator per symbol produces aggTrades
(consecutive ids) and ``depth@100ms``-style diffs (``U = previous u + 1``), and every connected combined stream
receives them from the moment it connected — so two overlapping connections see the same ids, as on Binance.

``futures=True`` makes it USDⓈ-M-like: diffs carry ``pu`` (the previous diff's ``u``) and the depth path is
``/fapi/v1/depth``.

REST on the same port: ``/api/v3/depth`` (the book as of the last diff sent, with its ``lastUpdateId``),
``/api/v3/klines`` (bars of exactly the trades generated, with taker-buy volume, in Binance's row layout) and
``/api/v3/time`` (``{"serverTime": …}``); the ``/fapi/v1/…`` paths with ``futures=True``.

Misbehaviour on demand: :meth:`server_shutdown` sends the ``serverShutdown`` event to every open connection (and
closes them ``grace_s`` later); :meth:`drop_all` aborts every connection; ``refusing = True`` fails new stream
handshakes with HTTP 503 (a stream outage, during which the market keeps trading, REST keeps answering and the
klines hold the missed minutes). Per-stream misbehaviour, the connections staying up: ``mute_depth`` stops
sending depth diffs while the book keeps changing (lost updates: REST shows the change), ``book_frozen`` keeps the
book still (trades only, so no diff is due: a merely quiet book), ``mute_trades`` stops sending aggTrades;
``depth_delay_s`` holds each depth request that long and answers with the book as of the end of the wait.

Exchange time comes from ``clock`` (epoch ms), so a test can run a fast virtual market (:class:`VirtualClock`)
that the runtime under test reads too; ``clock_offset_ms`` sets the venue's clock that far ahead of it (negative:
behind), as a host whose clock lags or leads the venue's sees it. ``klines_from_ms`` makes the venue answer
klines only for windows that opened before it (a venue whose klines lag: a repair gets nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

MIN = 60_000
INTERVALS = {"1m": MIN, "5m": 5 * MIN, "15m": 15 * MIN, "1h": 60 * MIN, "4h": 240 * MIN, "1d": 1440 * MIN}


class VirtualClock:
    """Epoch ms running ``speed`` times faster than real time from ``start_ms``."""

    def __init__(self, start_ms: int, speed: float = 1.0) -> None:
        self.start_ms = start_ms
        self.speed = speed
        self._t0 = time.monotonic()

    def __call__(self) -> int:
        return self.start_ms + int((time.monotonic() - self._t0) * 1000 * self.speed)


@dataclass
class MinuteBar:
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0
    buy: float = 0.0
    quote: float = 0.0
    trades: int = 0


@dataclass
class Market:
    """One symbol's venue-side state: ids, book, and every trade folded into 1 m bars."""

    symbol: str
    futures: bool = False  # diffs carry pu
    trade_id: int = 0
    update_id: int = 1000
    bids: dict[str, str] = field(default_factory=lambda: {f"{p}.00": "5" for p in range(90, 100)})
    asks: dict[str, str] = field(default_factory=lambda: {f"{p}.00": "5" for p in range(101, 111)})
    minutes: dict[int, MinuteBar] = field(default_factory=dict)

    def tick(self, k: int, now_ms: int, *, book: bool = True) -> list[dict[str, Any]]:
        """One trade and (unless ``book`` is False) one depth diff; quantities are multiples of 1/8 so every sum is
        exact."""
        self.trade_id += 1
        price, qty, seller_maker = 100.0 + (k % 10) * 0.5, (k % 8 + 1) / 8, k % 3 == 0
        minute = now_ms - now_ms % MIN
        bar = self.minutes.setdefault(minute, MinuteBar(price, price, price, price))
        bar.high, bar.low, bar.close = max(bar.high, price), min(bar.low, price), price
        bar.volume += qty
        bar.buy += 0.0 if seller_maker else qty
        bar.quote += price * qty
        bar.trades += 1
        trade = {"e": "aggTrade", "E": now_ms, "s": self.symbol, "a": self.trade_id, "p": f"{price}", "q": f"{qty}",
                 "f": self.trade_id, "l": self.trade_id, "T": now_ms, "m": seller_maker}  # fmt: skip
        if not book:
            return [trade]
        first = self.update_id + 1
        self.update_id += 1 + k % 3
        bid, ask = f"{90 + k % 10}.00", f"{101 + (k * 7) % 10}.00"
        self.bids[bid] = str(1 + k % 4)
        self.asks[ask] = "0" if k % 5 == 0 else str(2 + k % 3)
        if self.asks[ask] == "0":
            del self.asks[ask]
        diff = {"e": "depthUpdate", "E": now_ms, "s": self.symbol, "U": first, "u": self.update_id,
                "b": [[bid, self.bids[bid]]], "a": [[ask, self.asks.get(ask, "0")]]}  # fmt: skip
        if self.futures:
            diff["pu"] = first - 1
        return [trade, diff]

    def snapshot(self) -> bytes:
        bids = sorted(self.bids.items(), key=lambda kv: -float(kv[0]))
        asks = sorted(self.asks.items(), key=lambda kv: float(kv[0]))
        return json.dumps({"lastUpdateId": self.update_id, "bids": bids, "asks": asks}).encode()

    def book(self) -> tuple[list[list[float]], list[list[float]]]:
        bids = sorted(([float(p), float(q)] for p, q in self.bids.items()), reverse=True)
        asks = sorted([float(p), float(q)] for p, q in self.asks.items())
        return bids, asks

    def klines(self, interval: str) -> list[list[object]]:
        width = INTERVALS[interval]
        rows: dict[int, MinuteBar] = {}
        for minute in sorted(self.minutes):
            bar, window = self.minutes[minute], minute - minute % width
            row = rows.get(window)
            if row is None:
                rows[window] = MinuteBar(**vars(bar))
                continue
            row.high, row.low, row.close = max(row.high, bar.high), min(row.low, bar.low), bar.close
            row.volume += bar.volume
            row.buy += bar.buy
            row.quote += bar.quote
            row.trades += bar.trades
        # Binance's row layout: open time, o, h, l, c, volume, close time, quote volume, trades, taker buy base, …
        return [_row(t, t + width - 1, r) for t, r in sorted(rows.items())]


def _row(open_time: int, close_time: int, r: MinuteBar) -> list[object]:
    ohlcv = [str(v) for v in (r.open, r.high, r.low, r.close, r.volume)]
    return [open_time, *ohlcv, close_time, str(r.quote), r.trades, str(r.buy), "0", "0"]


class LiveBinance:
    def __init__(
        self,
        symbol: str = "TESTUSDT",
        *,
        clock: Callable[[], int] | None = None,
        tick_interval_s: float = 0.002,
        futures: bool = False,
        clock_offset_ms: int = 0,
    ) -> None:
        self.market = Market(symbol, futures)
        self.clock = clock or (lambda: int(time.time() * 1000))
        self.clock_offset_ms = clock_offset_ms
        self.klines_from_ms: int | None = None
        self.tick_interval_s = tick_interval_s
        self.refusing = False
        self.paused = False  # no ticks at all (the market stands still)
        self.mute_depth = False  # diffs are made (the book changes) but not sent: lost on the wire
        self.book_frozen = False  # ticks trade without touching the book: no diff is due
        self.mute_trades = False  # aggTrades are made but not sent
        self.depth_delay_s = 0.0  # a slow REST: the snapshot is taken when the wait ends
        self.live: list[ServerConnection] = []
        self.connections = 0
        self.max_concurrent = 0
        self.depth_calls = 0
        self.kline_calls: list[str] = []
        self.sent_while_connected = 0
        self._server: Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._closers: set[asyncio.Task[None]] = set()
        self._port = 0

    def now(self) -> int:
        """The venue's clock (epoch ms)."""
        return self.clock() + self.clock_offset_ms

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self._port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    async def __aenter__(self) -> LiveBinance:
        self._server = await serve(self._handler, "127.0.0.1", 0, process_request=self._process_request)
        self._port = next(iter(self._server.sockets)).getsockname()[1]
        self._ticker = asyncio.create_task(self._run_market())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for task in [self._ticker, *self._closers]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _run_market(self) -> None:
        k = 0
        while True:
            await asyncio.sleep(self.tick_interval_s)
            if self.paused:
                continue
            k += 1
            stream = self.market.symbol.lower()
            frames = [
                json.dumps({"stream": f"{stream}@{'aggTrade' if e['e'] == 'aggTrade' else 'depth@100ms'}", "data": e})
                for e in self.market.tick(k, self.now(), book=not self.book_frozen)
                if not (self.mute_trades if e["e"] == "aggTrade" else self.mute_depth)
            ]
            for ws in list(self.live):
                for frame in frames:
                    with contextlib.suppress(ConnectionClosed):
                        await ws.send(frame)

    async def server_shutdown(self, grace_s: float = 0.5) -> None:
        """Binance's notice to every open connection; each is closed ``grace_s`` later."""
        event = json.dumps({"e": "serverShutdown", "E": self.now()})
        for ws in list(self.live):
            with contextlib.suppress(ConnectionClosed):
                await ws.send(event)
            task = asyncio.create_task(self._close_later(ws, grace_s))
            self._closers.add(task)
            task.add_done_callback(self._closers.discard)

    @staticmethod
    async def _close_later(ws: ServerConnection, grace_s: float) -> None:
        await asyncio.sleep(grace_s)
        await ws.close()

    def drop_all(self) -> None:
        for ws in list(self.live):
            ws.transport.abort()

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        query = parse_qs(url.query)
        if url.path == "/stream":
            return self._response(503, b"outage") if self.refusing else None
        api = "/fapi/v1" if self.market.futures else "/api/v3"
        if url.path == f"{api}/time":
            return self._response(200, json.dumps({"serverTime": self.now()}).encode())
        if url.path == f"{api}/depth":
            self.depth_calls += 1
            if self.depth_delay_s:
                await asyncio.sleep(self.depth_delay_s)
            return self._response(200, self.market.snapshot())
        if url.path == f"{api}/klines":
            self.kline_calls.append(request.path)
            rows = self.market.klines(query["interval"][0])
            if self.klines_from_ms is not None:
                rows = [row for row in rows if int(str(row[0])) < self.klines_from_ms]
            limit = int(query.get("limit", ["500"])[0])
            if "startTime" in query:
                start = int(query["startTime"][0])
                rows = [row for row in rows if int(str(row[0])) >= start][:limit]
            else:
                rows = rows[-limit:]
            return self._response(200, json.dumps(rows).encode())
        return self._response(404, b'{"code":-1,"msg":"not found"}')

    @staticmethod
    def _response(status: int, body: bytes) -> Response:
        headers = Headers(
            [("Content-Type", "application/json"), ("Content-Length", str(len(body))), ("Connection", "close")]
        )
        return Response(status, {200: "OK", 404: "Not Found"}.get(status, "Service Unavailable"), headers, body)

    async def _handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        self.live.append(ws)
        self.max_concurrent = max(self.max_concurrent, len(self.live))
        try:
            await ws.wait_closed()
        finally:
            self.live.remove(ws)
