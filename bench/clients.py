"""Load clients that check what they receive: pollers that use ETags and count every status, and Server-Sent Events
clients that resume with `Last-Event-ID` and record every event id (a signal stream's ids are its bars' close
times, so one close apart: a larger step is a lost event). Shared by bench/bench_production.py and
tests/e2e/test_faults.py."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

OK_STATUSES = frozenset({200, 304})


@dataclass
class PollStats:
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)  # a few examples of unexpected answers, for the failure message

    @property
    def requests(self) -> int:
        return sum(self.statuses.values()) + sum(self.transport_errors.values())

    def failures(self, allowed: frozenset[int] = OK_STATUSES) -> int:
        unexpected = sum(count for status, count in self.statuses.items() if status not in allowed)
        return unexpected + sum(self.transport_errors.values())

    def reset(self) -> None:
        self.statuses.clear()
        self.transport_errors.clear()
        self.latencies.clear()
        self.bad.clear()


async def poll(
    client: httpx.AsyncClient, paths: Sequence[str], stats: PollStats, stop: asyncio.Event, *, pause: float = 0.0
) -> None:
    """One client: GET each path in turn until `stop`, sending back the ETag it last got for that path."""
    etags: dict[str, str] = {}
    index = 0
    while not stop.is_set():
        path = paths[index % len(paths)]
        index += 1
        headers = {"if-none-match": etags[path]} if path in etags else {}
        started = time.perf_counter()
        try:
            response = await client.get(path, headers=headers)
        except httpx.TransportError as exc:
            stats.transport_errors[type(exc).__name__] += 1
            if len(stats.bad) < 5:
                stats.bad.append(f"{path}: {exc!r}")
            continue
        stats.latencies.append(time.perf_counter() - started)
        stats.statuses[response.status_code] += 1
        if response.status_code not in OK_STATUSES and len(stats.bad) < 5:
            stats.bad.append(f"{path}: {response.status_code} {response.text[:200]}")
        if "etag" in response.headers:
            etags[path] = response.headers["etag"]
        if pause:
            await asyncio.sleep(pause)


@dataclass
class SseStream:
    """One EventSource-like client: reconnects whenever its stream ends, with the last id it received."""

    path: str
    ids: list[int] = field(default_factory=list)
    connects: int = 0
    resumed: int = 0  # connects that sent Last-Event-ID
    refused: Counter[int] = field(default_factory=Counter)  # non-200 answers to a connect
    problems: Counter[str] = field(default_factory=Counter)  # their problem types
    errors: Counter[str] = field(default_factory=Counter)  # streams cut (the instance died, the body broke off)

    def gaps(self, step_ms: int) -> list[tuple[int, int]]:
        """Consecutive ids not exactly one bar apart (a repeat is a gap of 0)."""
        return [(a, b) for a, b in zip(self.ids, self.ids[1:], strict=False) if b - a != step_ms]


async def follow(client: httpx.AsyncClient, stream: SseStream, stop: asyncio.Event, *, retry_s: float = 0.2) -> None:
    while not stop.is_set():
        headers = {"last-event-id": str(stream.ids[-1])} if stream.ids else {}
        stream.connects += 1
        stream.resumed += bool(headers)
        try:
            async with client.stream("GET", stream.path, headers=headers) as response:
                if response.status_code != 200:
                    stream.refused[response.status_code] += 1
                    await response.aread()
                    kind = response.json().get("type") if "json" in response.headers.get("content-type", "") else None
                    stream.problems[str(kind)] += 1
                else:
                    await _read_events(response, stream, stop)
        except httpx.TransportError as exc:
            stream.errors[type(exc).__name__] += 1
        if not stop.is_set():
            await asyncio.sleep(retry_s)


async def _read_events(response: httpx.Response, stream: SseStream, stop: asyncio.Event) -> None:
    lines = response.aiter_lines()
    while not stop.is_set():
        next_line = asyncio.ensure_future(anext(lines))
        stopped = asyncio.ensure_future(stop.wait())
        done, _pending = await asyncio.wait({next_line, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if next_line not in done:
            next_line.cancel()
            await asyncio.gather(next_line, return_exceptions=True)
            return
        stopped.cancel()
        try:
            line = next_line.result()
        except StopAsyncIteration:
            return
        if line.startswith("id:"):
            stream.ids.append(int(line[3:].strip()))


def percentile(samples: Sequence[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000
