"""Helpers shared by tests: start an app with its lifespan, find free ports, a TCP server that never answers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from starlette.types import ASGIApp


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def blackhole_server() -> AsyncIterator[int]:
    """Accepts TCP connections and never sends a byte: a hung dependency."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.close()
        for writer in held:
            writer.close()
        await server.wait_closed()


class RecordedRequest:
    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body


@asynccontextmanager
async def http_receiver(statuses: list[int]) -> AsyncIterator[tuple[str, list[RecordedRequest]]]:
    """A real HTTP/1.1 server on loopback that records requests and answers with `statuses` in turn
    (the last one repeats): stands in for a tenant's webhook endpoint."""
    received: list[RecordedRequest] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _version = lines[0].split(" ", 2)
                headers = {
                    name.strip().lower(): value.strip()
                    for name, _, value in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                received.append(RecordedRequest(method, path, headers, body))
                status = statuses[min(len(received), len(statuses)) - 1]
                writer.write(f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/hooks/deltaflow", received
    finally:
        server.close()
        await server.wait_closed()


OnResponseStart = Callable[[], Awaitable[None]]


async def asgi_call(
    app: ASGIApp,
    method: str,
    path: str,
    *,
    headers: dict[str, str],
    body: bytes = b"",
    query: str = "",
    on_response_start: OnResponseStart | None = None,
) -> tuple[int, bytes]:
    """One request straight through the ASGI interface, running `on_response_start` at the moment the app sends
    its status line (what a real server would write to the socket next): lets a test observe the world exactly
    when the client could first act on the response. httpx's ASGITransport cannot, as it waits for the whole app."""
    raw_headers = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    raw_headers += [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": raw_headers,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    delivered = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> dict[str, object]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
            if on_response_start is not None:
                await on_response_start()
        elif message["type"] == "http.response.body":
            chunks.append(bytes(message.get("body", b"")))

    await app(scope, receive, send)
    return status, b"".join(chunks)
