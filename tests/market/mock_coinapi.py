"""A local CoinAPI Market Data WebSocket look-alike on 127.0.0.1 (ephemeral port).

Each connection must open with a ``hello``: an unknown ``apikey`` gets CoinAPI's ``error`` message and a close; a
valid one registers the session (with its exact-match symbol filters) and, if asked, starts one-per-second-style
heartbeats at ``heartbeat_interval_s``. ``broadcast`` sends market data to every live session whose filters match,
the way the real server fans one trade out to every subscriber — so a client holding two connections sees it twice.
``script(session)`` runs once per connection for per-test behaviour: notices, errors, drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

Script = Callable[["CoinApiSession"], Coroutine[Any, Any, None]]
TIME = "2024-01-02T03:04:05.1234567Z"


def trade_msg(
    symbol_id: str, n: int, *, price: float = 100.0, size: float = 1.0, side: str = "BUY", trade_uuid: str | None = None
) -> dict[str, Any]:
    return {
        "type": "trade",
        "symbol_id": symbol_id,
        "sequence": n,
        "time_exchange": TIME,
        "time_coinapi": TIME,
        "uuid": trade_uuid or str(uuid.UUID(int=n + 1)),
        "price": price,
        "size": size,
        "taker_side": side,
    }


def book20_msg(symbol_id: str, n: int, mid: float = 100.0) -> dict[str, Any]:
    return {
        "type": "book20",
        "symbol_id": symbol_id,
        "sequence": n,
        "time_exchange": TIME,
        "time_coinapi": TIME,
        "asks": [{"price": mid + 0.5 + i, "size": 1.0 + i} for i in range(20)],
        "bids": [{"price": mid - 0.5 - i, "size": 2.0 + i} for i in range(20)],
    }


class CoinApiSession:
    def __init__(self, ws: ServerConnection, hello: dict[str, Any], index: int) -> None:
        self.ws = ws
        self.hello = hello
        self.index = index
        self.filters = [f.rstrip("$") for f in hello.get("subscribe_filter_symbol_id", [])]

    def wants(self, message: dict[str, Any]) -> bool:
        symbol_id = message.get("symbol_id")
        return symbol_id is None or symbol_id in self.filters

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def notice_reconnect(self, within_seconds: float) -> None:
        """Announce a restart, then close this connection from the server side when the window has passed."""
        await self.send({"type": "reconnect", "within_seconds": within_seconds, "before_time": TIME})
        await asyncio.sleep(within_seconds)
        await self.ws.close()

    def drop(self) -> None:
        self.ws.transport.abort()


class MockCoinApi:
    def __init__(
        self,
        script: Script | None = None,
        *,
        api_keys: Iterable[str] = ("test-key",),
        heartbeat_interval_s: float | None = 0.02,
        error_for_key: str = "Invalid API key",
    ) -> None:
        self.script = script
        self.api_keys = frozenset(api_keys)
        self.heartbeat_interval_s = heartbeat_interval_s
        self.error_for_key = error_for_key
        self.hellos: list[dict[str, Any]] = []
        self.connections = 0
        self.live: list[CoinApiSession] = []
        self._server: Server | None = None
        self._port = 0

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self._port}/v1/"

    async def __aenter__(self) -> MockCoinApi:
        self._server = await serve(self._handler, "127.0.0.1", 0)
        self._port = next(iter(self._server.sockets)).getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def broadcast(self, message: dict[str, Any]) -> int:
        """Send to every subscribed session; returns how many got it."""
        sent = 0
        for session in list(self.live):
            if session.wants(message):
                with contextlib.suppress(ConnectionClosed):
                    await session.send(message)
                    sent += 1
        return sent

    async def _handler(self, ws: ServerConnection) -> None:
        index = self.connections
        self.connections += 1
        try:
            raw = await asyncio.wait_for(ws.recv(), 5.0)
        except (ConnectionClosed, TimeoutError):
            return
        assert isinstance(raw, str), "hello is a text frame"
        hello = json.loads(raw)
        self.hellos.append(hello)
        if hello.get("type") != "hello" or hello.get("apikey") not in self.api_keys:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(json.dumps({"type": "error", "message": self.error_for_key}))
                await ws.close()
            return
        session = CoinApiSession(ws, hello, index)
        self.live.append(session)
        tasks = []
        if hello.get("heartbeat") and self.heartbeat_interval_s:
            tasks.append(asyncio.create_task(self._heartbeats(session, self.heartbeat_interval_s)))
        if self.script is not None:
            tasks.append(asyncio.create_task(self.script(session)))
        try:
            await ws.wait_closed()
        finally:
            self.live.remove(session)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    async def _heartbeats(session: CoinApiSession, interval_s: float) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(interval_s)
                await session.send({"type": "hearbeat"})  # sic: CoinAPI's documented spelling
