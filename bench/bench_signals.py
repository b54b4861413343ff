"""GET /v1/signals through a real server (2 workers) on 5 000 stored one-minute bars.

Prints, measured in this run:
- a cold (uncached) signal on 5 000 bars: the computation alone (in-process) and end to end through the server
  (cache entry deleted before each request), target < 100 ms;
- cached `GET /v1/signals` throughput as a ratio of `GET /healthz`, 50 connections, same run (target >= 0.6);
- cached `GET /v1/signals` p99 latency at 200 concurrent connections (target < 50 ms).
Each load figure is measured on both servers `deltaflow serve` offers (granian, the default, and uvicorn), one
after the other in the same run, so the choice of default stays justified by numbers from this machine.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.core.migrations import upgrade_to_head
from app.market.aggregation import TIMEFRAMES
from app.market.keys import FeedKeys
from app.signals.compute import SignalInput, compute_signal
from bench.loadgen import LoadResult, run_load
from bench.server import bench_key, running_server
from bench.synthetic import stored_walk

CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "50"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
BARS = 5000
COLD_SAMPLES = 30
PATH = "/v1/signals/binance/BTCUSDT?timeframe=1m"
SERVERS = ("granian", "uvicorn")  # the default first


def stored_bars(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """A random walk of one-minute bars in the stored candle layout, ending before now."""
    minute = TIMEFRAMES["1m"]
    return stored_walk(count, interval_ms=minute, end_ms=time.time_ns() // 1_000_000 - minute, seed=seed)


def seed(client: redis.Redis, rows: list[dict[str, Any]]) -> None:
    """Bars on the benchmark's own Redis index, emptied first (a previous run's cached signals would be hits)."""
    client.flushdb()
    client.zadd(FeedKeys("binance", "BTCUSDT").bars["1m"], {orjson.dumps(r): r["t"] for r in rows})


def in_process_cold_ms(rows: list[dict[str, Any]]) -> float:
    raw = orjson.dumps(rows)
    spec = SignalInput("binance", "BTCUSDT", "1m", TIMEFRAMES["1m"], rows[-1]["t"], BARS, include_forming=False)
    compute_signal(raw, spec)  # first call pays for lazy imports
    samples = []
    for _ in range(COLD_SAMPLES):
        started = time.perf_counter()
        compute_signal(raw, spec)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def http_cold_ms(base_url: str, key: str, client: redis.Redis, rows: list[dict[str, Any]]) -> tuple[float, float]:
    """A cold signal as at every bar close: close one more bar (stored and announced as the ingestion does),
    then ask; the first request for the new bar computes it."""
    keys = FeedKeys("binance", "BTCUSDT")
    minute = TIMEFRAMES["1m"]
    samples = []
    with httpx.Client(base_url=base_url, headers={"X-API-Key": key}) as http:
        for _ in range(4):  # warm both server processes' worker pools
            http.get(PATH)
        last = dict(rows[-1])
        for _ in range(COLD_SAMPLES):
            last = {**last, "t": last["t"] + minute}
            client.zadd(keys.bars["1m"], {orjson.dumps(last): last["t"]})
            client.publish(keys.bar_closed, f"1m:{last['t']}")
            time.sleep(0.05)  # let both processes hear of the close
            started = time.perf_counter()
            response = http.get(PATH)
            samples.append(time.perf_counter() - started)
            if response.status_code != 200 or response.headers["x-cache"] != "miss":
                raise RuntimeError(f"expected a cold 200, got {response.status_code} {response.headers}")
    samples.sort()
    return statistics.median(samples) * 1000, samples[int(len(samples) * 0.95) - 1] * 1000


def measure_server(server: str, env: dict[str, str], headers: dict[str, str]) -> dict[str, LoadResult]:
    with running_server(workers=2, **{"DELTAFLOW_SERVER": server, **env}) as base_url:
        run_load(base_url, PATH, connections=CONNECTIONS, seconds=1, headers=headers)  # warm both workers
        return {
            "health": run_load(base_url, "/healthz", connections=CONNECTIONS, seconds=SECONDS),
            "cached": run_load(base_url, PATH, connections=CONNECTIONS, seconds=SECONDS, headers=headers),
            "wide": run_load(base_url, PATH, connections=200, seconds=SECONDS, headers=headers),
        }


def main() -> None:
    rows = stored_bars(BARS)
    client = redis.Redis.from_url(REDIS_URL)
    seed(client, rows)
    compute_ms = in_process_cold_ms(rows)
    with tempfile.TemporaryDirectory() as scratch:
        database_url = f"sqlite+aiosqlite:///{scratch}/bench.db"
        upgrade_to_head(database_url)
        env = {
            "DELTAFLOW_DATABASE_URL": database_url,
            "DELTAFLOW_REDIS_URL": REDIS_URL,
            "DELTAFLOW_FEEDS": "binance:BTCUSDT",
            "DELTAFLOW_SIGNAL_BARS": str(BARS),
            "DELTAFLOW_ACCESS_LOG": "false",
        }
        key = bench_key(env, tenant="bench-signals")
        headers = {"X-API-Key": key}
        with running_server(workers=2, **env) as base_url:
            cold_p50, cold_p95 = http_cold_ms(base_url, key, client, rows)
        # The default server first, then the alternative, each on a fresh 2-worker server in this same run.
        results = {server: measure_server(server, env, headers) for server in SERVERS}
    client.close()

    print(f"cold signal on {BARS} one-minute bars (median of {COLD_SAMPLES})")
    print(f"  computation in-process          {compute_ms:>8.1f} ms")
    print(f"  end to end, cache miss (p50/p95) {cold_p50:>7.1f} / {cold_p95:.1f} ms")
    print(f"  target: < 100 ms -> {'met' if cold_p50 < 100 else 'MISSED'}\n")
    tool = results[SERVERS[0]]["health"].tool
    print(f"cached, 2 workers, {SECONDS:.0f} s each, load by {tool}")
    print(
        f"{'server':<8} {'route':<26} {'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'busy':>6} {'non-2xx':>8}"
    )
    for server, measured in results.items():
        for label, conns, name in (
            ("GET /healthz", CONNECTIONS, "health"),
            ("GET /v1/signals (cached)", CONNECTIONS, "cached"),
            ("GET /v1/signals (cached)", 200, "wide"),
        ):
            result = measured[name]
            print(
                f"{server:<8} {label:<26} {conns:>5} {result.requests_per_second:>9.0f} {result.p50_ms:>8.2f}"
                f" {result.p99_ms:>8.2f} {result.busy_connections:>6.0f} {result.errors:>8}"
            )
    print("busy = requests/s x mean latency (Little's law): about the connection count when none is starved")
    default = results[SERVERS[0]]
    ratio = default["cached"].requests_per_second / default["health"].requests_per_second
    print(f"{SERVERS[0]} (default): cached signals / healthz = {ratio:.2f} (target >= 0.6 -> {_verdict(ratio >= 0.6)})")
    p99 = default["wide"].p99_ms
    print(f"{SERVERS[0]} (default): p99 at 200 connections = {p99:.1f} ms (target < 50 ms -> {_verdict(p99 < 50)})")
    speedup = default["wide"].requests_per_second / results[SERVERS[1]]["wide"].requests_per_second
    print(
        f"{SERVERS[1]}: p99 at 200 connections = {results[SERVERS[1]]['wide'].p99_ms:.1f} ms;"
        f" {SERVERS[0]} serves {speedup:.2f}x its throughput there"
    )


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


if __name__ == "__main__":
    main()
