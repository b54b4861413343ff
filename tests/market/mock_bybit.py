"""A local Bybit v5 public look-alike on 127.0.0.1: one WebSocket endpoint on an ephemeral port.

The server side of the protocol is automatic: ``subscribe``/``unsubscribe`` get Bybit's ack (or a refusal for
topics in ``reject_topics``), a successful ``orderbook.*`` subscribe is followed by a snapshot of the venue's own
book, and ``{"op":"ping"}`` gets the linear pong (unless ``answer_pings`` is off). Everything else is scripted per
test: ``script(session)`` runs once per connection and pushes trades, deltas and liquidations, or drops the socket.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Iterable
from decimal import Decimal
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

Script = Callable[["BybitSession"], Awaitable[None]]


def frame(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


def trade_frame(symbol: str, trades: Iterable[tuple[str, str, str, str]], ts: int = 1_700_000_000_000) -> str:
    """``trades`` as (side, price, size, id) with side ``Buy``/``Sell`` (the taker)."""
    data = [
        {"T": ts + n, "s": symbol, "S": side, "v": size, "p": price, "L": "PlusTick", "i": tid, "BT": False}
        for n, (side, price, size, tid) in enumerate(trades)
    ]
    return frame({"topic": f"publicTrade.{symbol}", "type": "snapshot", "ts": ts, "data": data})


def liquidation_frame(symbol: str, side: str, price: str, size: str, ts: int = 1_700_000_000_000) -> str:
    """``side`` is the liquidated *position's* side, as Bybit sends it."""
    data = [{"T": ts, "s": symbol, "S": side, "v": size, "p": price}]
    return frame({"topic": f"allLiquidation.{symbol}", "type": "snapshot", "ts": ts, "data": data})


class LiveBook:
    """The venue's own ``orderbook.50`` for one symbol: random absolute-quantity deltas with consecutive ``u``."""

    def __init__(self, symbol: str, *, seed: int = 7, first_update_id: int = 1000, levels: int = 10) -> None:
        self.symbol = symbol
        self.rng = random.Random(seed)
        self.update_id = first_update_id
        self.seq = 50_000
        self.bids = {f"{100 - i}.0": str(self.rng.randint(1, 9)) for i in range(1, levels + 1)}
        self.asks = {f"{100 + i}.0": str(self.rng.randint(1, 9)) for i in range(1, levels + 1)}

    @property
    def topic(self) -> str:
        return f"orderbook.50.{self.symbol}"

    def next_delta(self) -> str:
        """Advance the venue's state by one update and return its delta frame."""
        changes: dict[str, list[list[str]]] = {"b": [], "a": []}
        for side, key, sign in ((self.bids, "b", -1), (self.asks, "a", 1)):
            for _ in range(self.rng.randint(0, 3)):
                price = f"{100 + sign * self.rng.randint(1, 14)}.0"
                qty = "0" if price in side and self.rng.random() < 0.3 else str(self.rng.randint(1, 20))
                if qty == "0":
                    side.pop(price, None)
                else:
                    side[price] = qty
                changes[key].append([price, qty])
        self.update_id += 1
        self.seq += self.rng.randint(1, 5)  # the cross sequence grows but is not consecutive
        data = {"s": self.symbol, "b": changes["b"], "a": changes["a"], "u": self.update_id, "seq": self.seq}
        return frame({"topic": self.topic, "type": "delta", "ts": 1_700_000_000_000 + self.update_id, "data": data})

    def snapshot(self, update_id: int | None = None) -> str:
        data = {
            "s": self.symbol,
            "b": [[p, q] for p, q in sorted(self.bids.items(), key=lambda kv: -Decimal(kv[0]))],
            "a": [[p, q] for p, q in sorted(self.asks.items(), key=lambda kv: Decimal(kv[0]))],
            "u": self.update_id if update_id is None else update_id,
            "seq": self.seq,
        }
        return frame({"topic": self.topic, "type": "snapshot", "ts": 1_700_000_000_000, "data": data})

    def levels(self) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """The venue's book as the connector should hold it: best first, floats."""
        bids = sorted(((float(p), float(q)) for p, q in self.bids.items()), reverse=True)
        asks = sorted((float(p), float(q)) for p, q in self.asks.items())
        return bids, asks


class BybitSession:
    """One client connection as the script sees it."""

    def __init__(self, mock: MockBybit, ws: ServerConnection, index: int) -> None:
        self.mock = mock
        self.ws = ws
        self.index = index  # 0 for the first connection
        self.topics: set[str] = set()
        self.subscribed = asyncio.Event()

    async def send(self, raw: str) -> None:
        await self.ws.send(raw)

    async def send_delta(self, book: LiveBook, *, drop: bool = False) -> None:
        """Advance ``book``; deliver the delta unless ``drop`` (a lost frame) or the topic is not subscribed."""
        delta = book.next_delta()
        if not drop and book.topic in self.topics:
            await self.ws.send(delta)

    def drop(self) -> None:
        self.ws.transport.abort()  # an abrupt drop, no close handshake

    async def wait_subscribed(self) -> None:
        await asyncio.wait_for(self.subscribed.wait(), 5.0)


class MockBybit:
    def __init__(
        self,
        script: Script | None = None,
        *,
        books: Iterable[LiveBook] = (),
        answer_pings: bool = True,
        reject_topics: Iterable[str] = (),
    ) -> None:
        self.script = script
        self.books = {b.topic: b for b in books}
        self.answer_pings = answer_pings
        self.reject_topics = frozenset(reject_topics)
        self.requests: list[dict[str, Any]] = []
        self.pings = 0
        self.connections = 0
        self.scripts_done = 0
        self.sessions: list[BybitSession] = []
        self._server: Server | None = None
        self._port = 0

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self._port}/v5/public/linear"

    def ops(self, op: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r.get("op") == op]

    async def __aenter__(self) -> MockBybit:
        self._server = await serve(self._handler, "127.0.0.1", 0)
        self._port = next(iter(self._server.sockets)).getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handler(self, ws: ServerConnection) -> None:
        session = BybitSession(self, ws, self.connections)
        self.connections += 1
        self.sessions.append(session)
        script = asyncio.create_task(self._run_script(session)) if self.script else None
        try:
            async for raw in ws:
                assert isinstance(raw, str), "Bybit requests are text frames"
                await self._on_request(session, json.loads(raw))
        except ConnectionClosed:
            pass
        finally:
            if script is not None:
                script.cancel()
                await asyncio.gather(script, return_exceptions=True)

    async def _run_script(self, session: BybitSession) -> None:
        assert self.script is not None
        await self.script(session)
        self.scripts_done += 1

    async def _on_request(self, session: BybitSession, request: dict[str, Any]) -> None:
        self.requests.append(request)
        op, req_id = request.get("op"), request.get("req_id", "")
        if op == "ping":
            self.pings += 1
            if self.answer_pings:
                reply = {"success": True, "ret_msg": "pong", "conn_id": "mock", "req_id": req_id, "op": "ping"}
                await session.send(frame(reply))
            return
        args = request.get("args", [])
        refused = [a for a in args if a in self.reject_topics]
        ack: dict[str, Any] = {"success": not refused, "ret_msg": "", "conn_id": "mock", "req_id": req_id, "op": op}
        if refused:
            ack["ret_msg"] = f"error:handler not found,topic:{refused[0]}"
            await session.send(frame(ack))
            return
        if op == "unsubscribe":
            session.topics.difference_update(args)
            await session.send(frame(ack))
        elif op == "subscribe":
            session.topics.update(args)
            await session.send(frame(ack))
            for topic in args:
                if topic in self.books:
                    await session.send(self.books[topic].snapshot())
            session.subscribed.set()
