"""Loopback HTTP load generation: wrk when installed (C, keeps the client's CPU cost low), else a keep-alive
asyncio client. Both report requests/s and latency percentiles for a fixed duration and connection count."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class LoadResult:
    path: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    tool: str
    mean_ms: float = float("nan")

    @property
    def busy_connections(self) -> float:
        """Little's law: connections with a request in flight on average (requests/s x mean latency). Well below
        the connection count means some connections were starved, and the percentiles describe only the served
        ones (a server that shelves part of its clients shows a flattering p99)."""
        return self.requests_per_second * self.mean_ms / 1000


def run_load(
    base_url: str, path: str, *, connections: int, seconds: float, headers: dict[str, str] | None = None
) -> LoadResult:
    headers = headers or {}
    wrk = shutil.which("wrk")
    if wrk:
        return _wrk(wrk, base_url, path, connections, seconds, headers)
    return asyncio.run(_python_load(base_url, path, connections, seconds, headers))


def _wrk(wrk: str, base_url: str, path: str, connections: int, seconds: float, headers: dict[str, str]) -> LoadResult:
    header_args = [arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}")]
    output = subprocess.run(
        [wrk, "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", *header_args, base_url + path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _wrk_latency(output, "50%")
    p99 = _wrk_latency(output, "99%")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(group) for group in socket_errors.groups())
    mean = re.search(r"Latency\s+([\d.]+)(us|ms|s)", output)
    mean_ms = _to_ms(float(mean.group(1)), mean.group(2)) if mean else float("nan")
    return LoadResult(path, rps, p50, p99, errors, "wrk", mean_ms)


def _wrk_latency(output: str, label: str) -> float:
    match = re.search(rf"{re.escape(label)}\s+([\d.]+)(us|ms|s)", output)
    if match is None:
        return float("nan")
    return _to_ms(float(match.group(1)), match.group(2))


def _to_ms(value: float, unit: str) -> float:
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


async def _python_load(
    base_url: str, path: str, connections: int, seconds: float, headers: dict[str, str]
) -> LoadResult:
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                if not head.startswith((b"HTTP/1.1 2", b"HTTP/1.1 3")):
                    errors += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    latencies.sort()

    def percentile(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")

    mean_ms = sum(latencies) / len(latencies) * 1000 if latencies else float("nan")
    return LoadResult(
        path, len(latencies) / elapsed, percentile(0.5), percentile(0.99), errors, "python-asyncio", mean_ms
    )
