"""What the Prometheus metrics cost the hot route.

Prints, measured in this run: cached `GET /v1/signals` throughput (and `/healthz`) through a real server (2 granian
workers, multiprocess metrics written to files) with metrics on (`DELTAFLOW_METRICS_PORT` set: the request
middleware, the listener in the supervisor) and off, alternated three times in the same run (target: on >= 0.95 x
off). On a loaded 2-core machine the run-to-run spread of that ratio is larger than the cost, so the middleware's
own cost per request is measured too, in-process against a bare ASGI app (file-backed values, as under serve).
Then one scrape of the on server, timed: what Prometheus costs the supervisor per scrape.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import asyncpg
import redis
from sqlalchemy.engine import make_url
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.core.migrations import upgrade_to_head
from bench.bench_signals import PATH, stored_bars
from bench.bench_signals import seed as seed_bars
from bench.server import alternated_load, bench_key, free_port, running_server

ADMIN_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "50"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
TARGET = 0.95


async def _admin(statement: str) -> None:
    dsn = make_url(ADMIN_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _scrape_ms(env: dict[str, str], headers: dict[str, str]) -> tuple[float, int]:
    """Milliseconds of one scrape after some traffic, and the number of samples it returned."""
    from bench.loadgen import run_load

    port = free_port()
    with running_server(workers=2, **env, DELTAFLOW_METRICS_PORT=str(port)) as base_url:
        run_load(base_url, PATH, connections=CONNECTIONS, seconds=1, headers=headers)
        started = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            body = response.read().decode()
        elapsed = (time.perf_counter() - started) * 1000
    return elapsed, sum(1 for line in body.splitlines() if line and not line.startswith("#"))


def _file_backed_metrics() -> Path:
    """Metric values in files, as in a served worker (what the in-process measurements below run with); the
    directory, for the caller to remove."""
    from app.config import Settings
    from app.core.metrics_server import prepare_multiprocess_dir

    directory = Path(tempfile.mkdtemp(prefix="bench-metrics-"))
    prepare_multiprocess_dir(Settings(metrics_dir=directory))
    return directory


def route_us(env: dict[str, str], key: str, requests: int = 2_000) -> dict[str, float]:
    """µs per cached `GET /v1/signals` through the whole app in-process (every middleware, auth, rate limit, the
    memo), metrics on and off, rounds alternated (order flipped each round), best round of each: the route's own cost
    without the network and load generator whose noise dominates the HTTP comparison on a busy machine."""
    from app.config import Settings
    from app.main import create_app

    base = Settings(
        database_url=env["DELTAFLOW_DATABASE_URL"],
        redis_url=env["DELTAFLOW_REDIS_URL"],
        feeds=env["DELTAFLOW_FEEDS"],
        access_log=False,
        log_level="WARNING",
        rate_limit_per_second=1_000_000.0,
        rate_limit_burst=10_000_000,
    )
    path, _, query = PATH.partition("?")
    scope = {
        "type": "http", "http_version": "1.1", "method": "GET", "scheme": "http", "path": path,
        "raw_path": path.encode(), "root_path": "", "query_string": query.encode(),
        "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 1),
        "headers": [(b"host", b"127.0.0.1"), (b"x-api-key", key.encode())],
    }  # fmt: skip

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    statuses: list[int] = []

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(int(message["status"]))  # type: ignore[call-overload]

    async def measure() -> dict[str, float]:
        apps = {
            "metrics on": create_app(base.model_copy(update={"metrics_port": free_port()})),
            "metrics off": create_app(base),
        }
        best = dict.fromkeys(apps, float("inf"))
        on, off = apps.values()
        async with on.router.lifespan_context(on), off.router.lifespan_context(off):
            for round_ in range(8):  # the order flips every round: neither variant always runs first
                for label, app in sorted(apps.items(), reverse=round_ % 2 == 1):
                    began = time.perf_counter()
                    for _ in range(requests):
                        await app(dict(scope, headers=list(scope["headers"])), receive, send)  # type: ignore[arg-type]
                    best[label] = min(best[label], (time.perf_counter() - began) / requests * 1e6)
        assert set(statuses) == {200}, set(statuses)
        return best

    return asyncio.run(measure())


def middleware_cost_us(requests: int = 20_000) -> tuple[float, float]:
    """(bare, with MetricsMiddleware) µs per request through a trivial ASGI app, best of 5 rounds."""
    from app.core.instrument import MetricsMiddleware

    route = Route("/v1/signals/{venue}/{symbol}", lambda request: None)
    start = {"type": "http.response.start", "status": 200, "headers": []}
    body = {"type": "http.response.body", "body": b"{}"}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = route
        await send(start)
        await send(body)

    async def receive() -> dict[str, object]:
        return {"type": "http.request"}

    async def send(message: object) -> None:
        return None

    async def rounds(target: object) -> float:
        best = float("inf")
        for _ in range(5):
            began = time.perf_counter()
            for _ in range(requests):
                await target({"type": "http", "method": "GET", "path": "/v1/signals/x/y"}, receive, send)  # type: ignore[operator]
            best = min(best, (time.perf_counter() - began) / requests * 1e6)
        return best

    async def both() -> tuple[float, float]:
        return await rounds(app), await rounds(MetricsMiddleware(app))

    return asyncio.run(both())


def main() -> None:
    name = f"deltaflow_bench_metrics_{uuid.uuid4().hex[:8]}"
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        upgrade_to_head(url)
        client = redis.Redis.from_url(REDIS_URL)
        seed_bars(client, stored_bars(1000))
        client.close()
        env = {
            "DELTAFLOW_DATABASE_URL": url,
            "DELTAFLOW_REDIS_URL": REDIS_URL,
            "DELTAFLOW_FEEDS": "binance:BTCUSDT",
            "DELTAFLOW_ACCESS_LOG": "false",
        }
        headers = {"X-API-Key": bench_key(env, tenant="bench-metrics")}
        values = {"metrics on": str(free_port()), "metrics off": ""}
        rows = alternated_load(env, "DELTAFLOW_METRICS_PORT", values, PATH, headers)
        scrape_ms, samples = _scrape_ms(env, headers)
        files = _file_backed_metrics()
        in_process = route_us(env, headers["X-API-Key"])
        bare, metered = middleware_cost_us()
        shutil.rmtree(files, ignore_errors=True)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    print(f"cached GET /v1/signals, {CONNECTIONS} connections, {SECONDS:.0f} s each, 2 granian workers")
    print(f"{'variant':<12} {'/healthz req/s':>15} {'signal req/s':>13}")
    for label, health, rate in rows:
        print(f"{label:<12} {health:>15.0f} {rate:>13.0f}")
    on = statistics.mean(rate for label, _, rate in rows if label == "metrics on")
    off = statistics.mean(rate for label, _, rate in rows if label == "metrics off")
    ratio = on / off
    print(f"signal on / off = {ratio:.3f} (target >= {TARGET} -> {'met' if ratio >= TARGET else 'MISSED'})")
    print(f"one scrape of 2 workers' files: {scrape_ms:.1f} ms, {samples} samples")
    on_us, off_us = in_process["metrics on"], in_process["metrics off"]
    print(f"in-process cached signal: metrics on {on_us:.1f} µs, off {off_us:.1f} µs per request")
    print(f"-> off / on = {off_us / on_us:.3f} as throughput (target >= {TARGET} -> {_verdict(off_us / on_us)})")
    print(f"in-process, per request: bare ASGI app {bare:.2f} µs, with MetricsMiddleware {metered:.2f} µs")
    print(f"-> the middleware adds {metered - bare:.2f} µs per request (counter, histogram, in-flight gauge)")


def _verdict(ratio: float) -> str:
    return "met" if ratio >= TARGET else "MISSED"


if __name__ == "__main__":
    main()
