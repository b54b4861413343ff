"""POST /v1/analyze through a real server (2 workers), measured side by side in one run:

- in-process, on the same 10 000- and 100 000-candle bodies: validating with pydantic models item by item vs
  the column-wise path the route uses (`app.trading.parsing`);
- over HTTP, one keep-alive connection, sequential requests: /healthz, then POST /v1/analyze with 10 000
  candles (all modules, compact form) — target p50 < 150 ms.

The route needs an API key with `signals:read`: `BENCH_API_KEY`, or one bootstrapped in the bench database.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import numpy as np
import orjson

from app.trading.parsing import Limits, parse_body
from app.trading.schemas import AnalyzeRequest
from bench.server import bench_key, running_server

CANDLES = int(os.environ.get("BENCH_ANALYZE_CANDLES", "10000"))
REQUESTS = int(os.environ.get("BENCH_ANALYZE_REQUESTS", "60"))
TARGET_P50_MS = 150.0


def candle_body(count: int, seed: int = 11) -> bytes:
    rng = np.random.default_rng(seed)
    close = 30_000 + np.cumsum(rng.standard_normal(count)) * 20
    open_ = np.concatenate((close[:1], close[:-1]))
    high = np.maximum(open_, close) + rng.random(count) * 10
    low = np.minimum(open_, close) - rng.random(count) * 10
    volume = rng.random(count) * 50
    taker = volume * rng.random(count)
    start = 1_700_000_000_000
    rows = [
        {"t": start + i * 60_000, "o": o, "h": h, "l": lo, "c": c, "v": v, "taker_buy_v": tb}
        for i, (o, h, lo, c, v, tb) in enumerate(
            zip(*(a.tolist() for a in (open_, high, low, close, volume, taker)), strict=True)
        )
    ]
    return orjson.dumps({"candles": rows})


def best_ms(action: Callable[[], Any], runs: int = 5) -> float:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        timings.append((time.perf_counter() - started) * 1000)
    return min(timings)


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(0.9 * (len(ordered) - 1))], ordered[-1]


def http_latencies(client: httpx.Client, method: str, path: str, body: bytes | None, count: int) -> list[float]:
    headers = {"content-type": "application/json"} if body is not None else {}
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        response = client.request(method, path, content=body, headers=headers)
        samples.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"{method} {path}: {response.status_code} {response.text[:300]}")
    return samples


def main() -> None:
    limits = Limits(max_candles=1_000_000, max_trades=0)
    print("validation of the candles (in-process, best of 5)")
    print(f"{'candles':>8} {'body MB':>8} {'pydantic ms':>12} {'columnar ms':>12} {'speed-up':>9}")
    for count in (10_000, 100_000):
        body = candle_body(count)
        pydantic_ms = best_ms(partial(AnalyzeRequest.model_validate_json, body))
        columnar_ms = best_ms(partial(parse_body, body, limits))
        speed_up = pydantic_ms / columnar_ms
        print(f"{count:>8} {len(body) / 1e6:>8.1f} {pydantic_ms:>12.1f} {columnar_ms:>12.1f} {speed_up:>8.1f}x")

    env = {
        "DELTAFLOW_DATABASE_URL": os.environ.get("BENCH_DATABASE_URL", "sqlite+aiosqlite:///./var/bench.db"),
        "DELTAFLOW_REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
        "DELTAFLOW_ACCESS_LOG": "false",
    }
    from app.core.migrations import upgrade_to_head

    upgrade_to_head(env["DELTAFLOW_DATABASE_URL"])
    api_key = os.environ.get("BENCH_API_KEY") or bench_key(env)
    body = candle_body(CANDLES)
    with (
        running_server(workers=2, **env) as base_url,
        httpx.Client(base_url=base_url, timeout=60, headers={"authorization": f"Bearer {api_key}"}) as client,
    ):
        http_latencies(client, "POST", "/v1/analyze", body, 5)  # start and warm the analysis workers
        health = http_latencies(client, "GET", "/healthz", None, REQUESTS)
        analyze = http_latencies(client, "POST", "/v1/analyze", body, REQUESTS)
        size = len(client.post("/v1/analyze", content=body, headers={"content-type": "application/json"}).content)
    print(f"\nHTTP, one keep-alive connection, {REQUESTS} sequential requests, server with 2 workers")
    print(f"{'request':<36} {'p50 ms':>8} {'p90 ms':>8} {'max ms':>8} {'target':>12}")
    print(f"{'GET /healthz':<36} {' '.join(f'{v:>8.1f}' for v in percentiles(health))}")
    label = f"POST /v1/analyze {CANDLES} candles"
    p50, p90, worst = percentiles(analyze)
    verdict = "met" if p50 < TARGET_P50_MS else "MISSED"
    print(f"{label:<36} {p50:>8.1f} {p90:>8.1f} {worst:>8.1f} {f'<{TARGET_P50_MS:.0f} {verdict}':>12}")
    print(f"request body {len(body) / 1e6:.2f} MB, response {size / 1e6:.2f} MB (compact form)")


if __name__ == "__main__":
    main()
