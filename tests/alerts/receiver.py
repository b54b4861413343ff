"""A webhook receiver on loopback for delivery tests: a real HTTP/1.1 server that records every request and answers
each with what a script says (a status and headers, possibly computed when the request arrives), and checks every
request's signature with the `standardwebhooks` package: an implementation of the spec independent of ours."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from standardwebhooks import Webhook, WebhookVerificationError

Answer = tuple[int, dict[str, str]]
Script = Callable[[int, dict[str, str]], Answer]  # the request's 0-based index and headers → the answer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int
    verified: bool | None = None  # None: no secret to check against yet


@dataclass
class Receiver:
    url: str
    requests: list[Received] = field(default_factory=list)
    secret: str | None = None  # `whsec_…`: each request is verified against it as it arrives
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def message_ids(self) -> list[str]:
        return [r.headers["webhook-id"] for r in self.requests]

    def verified_all(self) -> bool:
        return bool(self.requests) and all(r.verified for r in self.requests)

    async def wait_for(self, count: int, within_seconds: float) -> None:
        """Until `count` requests have arrived (AssertionError after `within_seconds`)."""
        try:
            async with asyncio.timeout(within_seconds), self.arrived:
                await self.arrived.wait_for(lambda: len(self.requests) >= count)
        except TimeoutError:
            arrived = len(self.requests)
            raise AssertionError(f"{arrived} requests arrived within {within_seconds} s, not {count}") from None


def answers(*statuses: int | Answer) -> Script:
    """Answer with these in turn, the last repeating."""
    fixed = [s if isinstance(s, tuple) else (s, {}) for s in statuses]
    return lambda index, _headers: fixed[min(index, len(fixed) - 1)]


@asynccontextmanager
async def webhook_receiver(script: Script) -> AsyncIterator[Receiver]:
    receiver = Receiver(url="")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                _method, path, _version = lines[0].split(" ", 2)
                headers = {
                    name.strip().lower(): value.strip()
                    for name, _, value in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status, extra = script(len(receiver.requests), headers)
                verified = None
                if receiver.secret is not None:
                    try:
                        Webhook(receiver.secret).verify(body, headers)
                        verified = True
                    except WebhookVerificationError:
                        verified = False
                async with receiver.arrived:
                    receiver.requests.append(Received(path, headers, body, status, verified))
                    receiver.arrived.notify_all()
                head_lines = [f"HTTP/1.1 {status} X", "content-length: 0", *(f"{k}: {v}" for k, v in extra.items())]
                writer.write(("\r\n".join(head_lines) + "\r\n\r\n").encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    receiver.url = f"http://127.0.0.1:{port}/hooks/deltaflow"
    try:
        yield receiver
    finally:
        server.close()
        await server.wait_closed()
