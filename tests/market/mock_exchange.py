"""A local Binance look-alike on 127.0.0.1: combined-stream WebSocket and REST depth on one ephemeral port.

WebSocket connections to ``/stream?streams=…`` get the capture's frames byte-for-byte, in order; REST
``/api/v3/depth`` and ``/fapi/v1/depth`` get the capture's recorded snapshot body, ``…/klines`` the given rows and
``…/time`` this host's clock. Knobs make it misbehave the
way real exchanges do: drop frames (a sequence gap), drop the connection after N frames, answer REST with scripted
statuses (429 + Retry-After), answer REST slowly, and serve "live" snapshots built from the frames sent so
far, as a real venue would after a gap.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

DEPTH_PATHS = ("/api/v3/depth", "/fapi/v1/depth")
KLINES_PATHS = ("/api/v3/klines", "/fapi/v1/klines")
TIME_PATHS = ("/api/v3/time", "/fapi/v1/time")


@dataclass(frozen=True)
class Capture:
    """A recorded session: the stream URL, raw frames with their receive times, and REST snapshot bodies."""

    url: str
    frames: tuple[str, ...]
    receive_ts: tuple[float, ...]
    snapshots: dict[str, bytes]  # symbol → body exactly as recorded

    def depth_frames(self, symbol: str) -> list[dict[str, object]]:
        out = []
        for raw in self.frames:
            data = json.loads(raw)["data"]
            if data.get("e") == "depthUpdate" and data["s"] == symbol:
                out.append(data)
        return out


def load_capture(folder: Path) -> Capture:
    """Read ``ws.txt`` (``<receive_ts>: <frame>`` lines after a ``<url> <-> <ts>`` header) and ``http.txt``
    (``<url> -> <receive_ts>: <body>``)."""
    lines = (folder / "ws.txt").read_bytes().split(b"\n")
    url = lines[0].split(b" <-> ")[0].decode()
    frames, stamps = [], []
    for line in lines[1:]:
        if not line.strip():
            continue
        stamp, _, raw = line.partition(b": ")
        frames.append(raw.decode())
        stamps.append(float(stamp))
    snapshots: dict[str, bytes] = {}
    for line in (folder / "http.txt").read_bytes().split(b"\n"):
        if not line.strip():
            continue
        request_url, _, rest = line.partition(b" -> ")
        _, _, body = rest.partition(b": ")
        symbol = parse_qs(urlsplit(request_url.decode()).query)["symbol"][0]
        snapshots[symbol] = body
    return Capture(url, tuple(frames), tuple(stamps), snapshots)


def _event_of(frame: str) -> dict[str, Any]:
    """The event object of a frame, or {} for frames that are not (tests also replay garbage)."""
    try:
        data = json.loads(frame).get("data")
    except (ValueError, AttributeError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass
class ScriptedResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class _LiveBook:
    """The venue's own view of a symbol: the recorded snapshot plus every diff sent since (decimal strings)."""

    def __init__(self, body: bytes) -> None:
        data = json.loads(body)
        self.last_update_id: int = data["lastUpdateId"]
        self.bids = dict(data["bids"])
        self.asks = dict(data["asks"])
        self.changed = False

    def apply(self, diff: dict[str, object]) -> None:
        last = diff["u"]
        assert isinstance(last, int)
        if last <= self.last_update_id:
            return
        for side, key in ((self.bids, "b"), (self.asks, "a")):
            levels = diff[key]
            assert isinstance(levels, list)
            for price, qty in levels:
                if Decimal(qty) == 0:
                    side.pop(price, None)
                else:
                    side[price] = qty
        self.last_update_id = last
        self.changed = True

    def body(self) -> bytes:
        bids = sorted(self.bids.items(), key=lambda kv: Decimal(kv[0]), reverse=True)
        asks = sorted(self.asks.items(), key=lambda kv: Decimal(kv[0]))
        return json.dumps({"lastUpdateId": self.last_update_id, "bids": bids, "asks": asks}).encode()


class MockExchange:
    def __init__(
        self,
        capture: Capture,
        *,
        frame_delay_s: float = 0.0,
        drop_frames: Iterable[int] = (),
        disconnect_after: int | None = None,
        rest_script: Iterable[ScriptedResponse] = (),
        rest_delay_s: float = 0.0,
        live_snapshots: bool = False,
        klines: dict[str, list[list[object]]] | None = None,
    ) -> None:
        self.capture = capture
        self.frame_delay_s = frame_delay_s
        self.drop_frames = frozenset(drop_frames)
        self.disconnect_after = disconnect_after
        self.rest_script = list(rest_script)
        self.rest_delay_s = rest_delay_s
        # After the first (recorded) snapshot of a symbol on a connection, serve the venue's current state.
        self.live_snapshots = live_snapshots
        # interval → kline rows in Binance's REST layout, served by /api/v3/klines and /fapi/v1/klines.
        self.klines = klines or {}
        self.kline_calls: list[str] = []
        self._served: set[str] = set()
        self.rest_calls: list[str] = []
        self.ws_paths: list[str] = []
        self.connections = 0
        self.frames_sent = 0
        self.replays_completed = 0
        self._live: dict[str, _LiveBook] = {}
        self._server: Server | None = None
        self._port = 0

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self._port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def depth_calls(self, symbol: str) -> int:
        return sum(1 for call in self.rest_calls if f"symbol={symbol}&" in call + "&")

    async def __aenter__(self) -> MockExchange:
        self._server = await serve(self._handler, "127.0.0.1", 0, process_request=self._process_request)
        self._port = next(iter(self._server.sockets)).getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == "/stream":
            return None  # continue with the WebSocket handshake
        if path in TIME_PATHS or path in KLINES_PATHS:
            now = json.dumps({"serverTime": int(time.time() * 1000)}).encode()
            return self._response(200, now) if path in TIME_PATHS else self._klines(request.path)
        if path not in DEPTH_PATHS:
            return self._response(404, b'{"code":-1,"msg":"not found"}')
        self.rest_calls.append(request.path)
        if self.rest_delay_s:
            await asyncio.sleep(self.rest_delay_s)
        if self.rest_script:
            scripted = self.rest_script.pop(0)
            return self._response(scripted.status, scripted.body, scripted.headers)
        symbol = parse_qs(urlsplit(request.path).query)["symbol"][0]
        live = self._live.get(symbol)
        if self.live_snapshots and live is not None and live.changed and symbol in self._served:
            return self._response(200, live.body())
        self._served.add(symbol)
        return self._response(200, self.capture.snapshots[symbol])

    def _klines(self, path: str) -> Response:
        """Binance's paging: rows from ``startTime`` on, else the newest ``limit`` rows."""
        self.kline_calls.append(path)
        query = parse_qs(urlsplit(path).query)
        rows = self.klines.get(query["interval"][0], [])
        limit = int(query.get("limit", ["500"])[0])
        if "startTime" in query:
            start = int(query["startTime"][0])
            rows = [row for row in rows if int(str(row[0])) >= start][:limit]
        else:
            rows = rows[-limit:]
        return self._response(200, json.dumps(rows).encode())

    @staticmethod
    def _response(status: int, body: bytes, extra: dict[str, str] | None = None) -> Response:
        reasons = {200: "OK", 404: "Not Found", 418: "I'm a teapot", 429: "Too Many Requests"}
        headers = Headers(
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                # websockets answers one HTTP request per connection; say so, so clients don't reuse it.
                ("Connection", "close"),
                *(extra or {}).items(),
            ]
        )
        return Response(status, reasons.get(status, "Error"), headers, body)

    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.ws_paths.append(ws.request.path)
        self.connections += 1
        # Every connection replays from the start, so the recorded snapshot always bridges the stream.
        self._live = {s: _LiveBook(body) for s, body in self.capture.snapshots.items()}
        self._served = set()
        sent = 0
        try:
            for index, frame in enumerate(self.capture.frames):
                data = _event_of(frame)
                if data.get("e") == "depthUpdate" and data["s"] in self._live:
                    # The venue's state moves on even when the wire loses the frame.
                    self._live[data["s"]].apply(data)
                if index in self.drop_frames:
                    continue
                await ws.send(frame)
                sent += 1
                self.frames_sent += 1
                if self.disconnect_after is not None and sent >= self.disconnect_after:
                    ws.transport.abort()  # an abrupt drop, no close handshake
                    return
                if self.frame_delay_s:
                    await asyncio.sleep(self.frame_delay_s)
            self.replays_completed += 1
            await ws.wait_closed()
        except ConnectionClosed:
            pass


def synthetic_capture(*, diffs: int = 40, futures: bool = False, symbol: str = "TESTUSDT") -> Capture:
    """A small hand-made capture in Binance's format, so protocol tests run without ../shared/data.

    Update ids start at 1000; the snapshot is taken at 1004, so the first five diffs are stale. Futures ids
    advance by 3 per diff (shared with other symbols) with ``pu`` linking them.
    """
    stream = f"{symbol.lower()}@depth@100ms"
    frames, stamps = [], []
    last_u = 999
    step = 3 if futures else 1
    for i in range(diffs):
        first = last_u + step if futures else last_u + 1
        last = first + step - 1
        price = 100 + (i % 5)
        data: dict[str, object] = {
            "e": "depthUpdate",
            "E": 1_700_000_000_000 + 100 * i,
            "s": symbol,
            "U": first,
            "u": last,
            "b": [[f"{price - 10}.00", str(i + 1)]],
            "a": [[f"{price + 10}.00", "0" if i % 7 == 3 else str(i + 2)]],
        }
        if futures:
            data["pu"] = last_u
        frames.append(json.dumps({"stream": stream, "data": data}, separators=(",", ":")))
        stamps.append(1_700_000_000 + 0.1 * i)
        last_u = last
    snapshot_id = 999 + 5 * step
    snapshot = {
        "lastUpdateId": snapshot_id,
        "bids": [[f"{p}.00", "5"] for p in range(95, 85, -1)],
        "asks": [[f"{p}.00", "5"] for p in range(110, 120)],
    }
    market = "fstream" if futures else "stream"
    return Capture(
        f"wss://{market}.example/stream?streams={stream}",
        tuple(frames),
        tuple(stamps),
        {symbol: json.dumps(snapshot, separators=(",", ":")).encode()},
    )
