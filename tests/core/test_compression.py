"""gzip middleware: who gets gzip, what is never compressed, streamed and large bodies, Vary on every response."""

from __future__ import annotations

import asyncio
import gzip
import threading
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Message

from app.core.asgi import append_header
from app.core.compression import VARY, GzipMiddleware, accepts_gzip

BIG = b'{"values":[' + b",".join(str(i).encode() for i in range(2000)) + b"]}"
MINIMUM = 1000
THREAD_MINIMUM = 64 * 1024
compressing_threads: set[str] = set()


async def big(_: Request) -> Response:
    return Response(BIG, media_type="application/json")


async def small(_: Request) -> Response:
    return Response(b'{"ok":true}', media_type="application/json")


async def huge(_: Request) -> Response:
    return Response(BIG * 40, media_type="application/json")


async def events(_: Request) -> StreamingResponse:
    async def stream() -> AsyncIterator[bytes]:
        yield b"data: one\n\n" * 200
        yield b"data: two\n\n" * 200

    return StreamingResponse(stream(), media_type="text/event-stream")


async def chunks(_: Request) -> StreamingResponse:
    async def stream() -> AsyncIterator[bytes]:
        for part in range(3):
            yield f'{{"part":{part}}}\n'.encode() * 100

    return StreamingResponse(stream(), media_type="application/x-ndjson")


async def encoded(_: Request) -> Response:
    return Response(gzip.compress(BIG), media_type="application/json", headers={"content-encoding": "gzip"})


async def image(_: Request) -> Response:
    return Response(BIG, media_type="image/png")


async def partial(_: Request) -> Response:
    return Response(BIG, status_code=206, media_type="application/json")


def _app() -> GzipMiddleware:
    routes = [
        Route(f"/{endpoint.__name__}", endpoint) for endpoint in (big, small, huge, events, chunks, encoded, image)
    ]
    routes.append(Route("/partial", partial))
    return GzipMiddleware(Starlette(routes=routes), minimum_size=MINIMUM, level=5, thread_minimum_size=THREAD_MINIMUM)


@dataclass
class Sent:
    """What the middleware sent for one request, straight off the ASGI interface (no client decoding)."""

    headers: dict[str, str]
    bodies: list[bytes]

    @property
    def wire(self) -> bytes:
        return b"".join(self.bodies)


async def _get(path: str, accept: str | None) -> Sent:
    headers = [(b"host", b"test")] + ([(b"accept-encoding", accept.encode())] if accept is not None else [])
    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": headers, "http_version": "1.1", "scheme": "http", "root_path": "",
             "client": ("127.0.0.1", 1), "server": ("test", 80)}  # fmt: skip
    messages: list[Message] = []
    requested = False

    async def receive() -> Message:
        nonlocal requested
        if requested:  # as a real server: nothing more until the client goes away, which it does not here
            await asyncio.Event().wait()
        requested = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        messages.append(message)

    await _app()(scope, receive, send)
    start, *bodies = messages
    assert start["type"] == "http.response.start"
    names = [name.decode() for name, _ in start["headers"]]
    assert len(names) == len(set(names)), f"a header was repeated: {names}"
    return Sent({name.decode(): value.decode() for name, value in start["headers"]}, [b["body"] for b in bodies])


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("br;q=1.0, gzip;q=0.8", True),
        ("x-gzip", True),
        ("*", True),
        ("GZIP", True),
        ("gzip;q=0", False),
        ("gzip;q=0.0, *;q=1", False),  # gzip refused by name wins over the wildcard
        ("*;q=0", False),
        ("deflate, br", False),
        ("identity", False),
        ("gzip;q=abc", False),
        ("", False),
    ],
)
def test_accept_encoding_is_parsed_with_q_values(header: str, expected: bool) -> None:
    assert accepts_gzip([(b"accept-encoding", header.encode())]) is expected


def test_accept_encoding_split_over_several_fields() -> None:
    assert accepts_gzip([(b"accept-encoding", b"br"), (b"accept-encoding", b"gzip;q=0.5")])
    assert not accepts_gzip([(b"host", b"x")])


async def test_large_body_is_gzipped_with_its_compressed_length() -> None:
    sent = await _get("/big", "gzip")
    assert sent.headers["content-encoding"] == "gzip"
    assert int(sent.headers["content-length"]) == len(sent.wire) < len(BIG)
    assert gzip.decompress(sent.wire) == BIG
    assert sent.headers["vary"] == "Accept-Encoding"


@pytest.mark.parametrize("accept", [None, "gzip;q=0", "br"])
async def test_clients_that_refuse_gzip_get_identity_with_vary(accept: str | None) -> None:
    sent = await _get("/big", accept)
    assert "content-encoding" not in sent.headers
    assert sent.wire == BIG
    assert int(sent.headers["content-length"]) == len(BIG)
    assert sent.headers["vary"] == "Accept-Encoding"


@pytest.mark.parametrize("path", ["/small", "/encoded", "/image", "/partial"])
async def test_never_compressed(path: str) -> None:
    sent = await _get(path, "gzip")
    expected = {"/small": b'{"ok":true}', "/encoded": gzip.compress(BIG)}.get(path, BIG)
    if path == "/encoded":  # passed on as the route encoded it, not compressed twice
        assert gzip.decompress(sent.wire) == BIG
    else:
        assert sent.wire == expected
    assert sent.headers.get("content-encoding", "identity") == ("gzip" if path == "/encoded" else "identity")
    assert int(sent.headers["content-length"]) == len(sent.wire)


async def test_event_streams_pass_through_unbuffered() -> None:
    sent = await _get("/events", "gzip")
    assert "content-encoding" not in sent.headers
    assert [body for body in sent.bodies if body] == [b"data: one\n\n" * 200, b"data: two\n\n" * 200]


async def test_streamed_body_is_compressed_chunk_by_chunk() -> None:
    sent = await _get("/chunks", "gzip")
    assert sent.headers["content-encoding"] == "gzip"
    assert "content-length" not in sent.headers
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    parts = [decoder.decompress(chunk) for chunk in sent.bodies]
    # A sync flush after every chunk: each one decodes as soon as it arrives, nothing waits for the end.
    assert [part for part in parts if part] == [f'{{"part":{n}}}\n'.encode() * 100 for n in range(3)]
    assert decoder.eof


async def test_a_large_single_body_is_compressed_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.core import compression

    original = compression._gzip_whole

    def recording(body: bytes, level: int) -> bytes:
        compressing_threads.add(threading.current_thread().name)
        return original(body, level)

    monkeypatch.setattr(compression, "_gzip_whole", recording)
    assert gzip.decompress((await _get("/huge", "gzip")).wire) == BIG * 40
    assert compressing_threads
    assert threading.main_thread().name not in compressing_threads
    compressing_threads.clear()
    assert gzip.decompress((await _get("/big", "gzip")).wire) == BIG  # below the threshold: inline
    assert not compressing_threads


@pytest.mark.parametrize("headers", [None, ((b"content-type", b"text/plain"),), [(b"content-type", b"text/plain")]])
def test_append_header_to_any_header_iterable(headers: object) -> None:
    message: Message = {"type": "http.response.start", "status": 200}
    if headers is not None:
        message["headers"] = headers
    append_header(message, VARY)
    assert list(message["headers"])[-1] == VARY
    assert len(message["headers"]) == (0 if headers is None else 1) + 1
