"""Bring-your-own-data POST /v1/analyze in every format, end to end over HTTP, against `smartmoneyconcepts`.

One run, the same 100 000 one-minute candles everywhere:
- over HTTP (a real 2-worker server, one keep-alive connection, sequential requests, SMC only, swing length 5):
  row JSON in → row JSON out, columnar JSON in → columnar JSON out, Arrow in → Arrow out (and the mixed pairs),
  each timed from sending the body to having the whole response; then the client decoding it;
- in-process: the `smartmoneyconcepts` package (the `bench` extra) on the same candles (its swing highs/lows,
  FVG, BOS/CHoCH, order blocks and liquidity), the reference the speed-ups are computed against.
Targets: >= 20x faster end to end with Arrow, >= 10x with JSON.

Environment: BENCH_BYOD_CANDLES (100000), BENCH_BYOD_REQUESTS (7 per format), BENCH_DATABASE_URL,
BENCH_REDIS_URL, BENCH_API_KEY (else one is bootstrapped in the bench database).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import orjson
import pyarrow as pa

from app.analytics import Candles
from bench.bench_analytics import SWING_LENGTH, random_walk_candles, reference_smc_steps
from bench.server import bench_key, running_server

CANDLES = int(os.environ.get("BENCH_BYOD_CANDLES", "100000"))
REQUESTS = int(os.environ.get("BENCH_BYOD_REQUESTS", "7"))
ARROW = "application/vnd.apache.arrow.stream"
OPTIONS = {"modules": ["smc"], "params": {"smc": {"swing_length": SWING_LENGTH}}}
TARGETS = {"json": 10.0, "arrow": 20.0}


def wire_columns(candles: Candles) -> dict[str, list[Any]]:
    return {
        "t": candles.open_time.tolist(), "o": candles.open.tolist(), "h": candles.high.tolist(),
        "l": candles.low.tolist(), "c": candles.close.tolist(), "v": candles.volume.tolist(),
    }  # fmt: skip


def bodies(candles: Candles) -> dict[str, tuple[bytes, str]]:
    """The same request as row JSON, columnar JSON and an Arrow stream (options in the schema metadata)."""
    columns = wire_columns(candles)
    rows = [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]
    table = pa.table({
        "t": candles.open_time, "o": candles.open, "h": candles.high, "l": candles.low, "c": candles.close,
        "v": candles.volume,
    }).replace_schema_metadata({"options": json.dumps(OPTIONS)})  # fmt: skip
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return {
        "row JSON": (orjson.dumps({"candles": rows, **OPTIONS}), "application/json"),
        "columnar JSON": (orjson.dumps({"candles": columns, **OPTIONS}), "application/json"),
        "Arrow": (sink.getvalue().to_pybytes(), ARROW),
    }


RESPONSES: dict[str, tuple[dict[str, str], dict[str, str], Callable[[bytes], Any]]] = {
    "row JSON": ({}, {}, orjson.loads),
    "columnar JSON": ({"format": "columnar"}, {}, orjson.loads),
    "Arrow": ({}, {"accept": ARROW}, lambda body: pa.ipc.open_stream(body).read_all()),
}
PAIRS = [
    ("row JSON", "row JSON", "json"),
    ("columnar JSON", "columnar JSON", "json"),
    ("Arrow", "Arrow", "arrow"),
    ("Arrow", "columnar JSON", "json"),
    ("columnar JSON", "Arrow", "arrow"),
]


def timed_requests(
    client: httpx.Client, body: bytes, content_type: str, response_format: str
) -> tuple[list[float], bytes]:
    params, headers, _ = RESPONSES[response_format]
    samples, content = [], b""
    for _ in range(REQUESTS):
        started = time.perf_counter()
        response = client.post(
            "/v1/analyze", content=body, params=params, headers={"content-type": content_type, **headers}
        )
        content = response.content
        samples.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"{response.status_code} {response.text[:300]}")
    return samples, content


def reference_ms(candles: Candles) -> float | None:
    steps = reference_smc_steps(candles)
    if steps is None:
        return None
    started = time.perf_counter()
    for work in steps.values():
        work()
    return (time.perf_counter() - started) * 1000


def main() -> None:
    candles = random_walk_candles(CANDLES)
    requests = bodies(candles)
    env = {
        "DELTAFLOW_DATABASE_URL": os.environ.get("BENCH_DATABASE_URL", "sqlite+aiosqlite:///./var/bench.db"),
        "DELTAFLOW_REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
        "DELTAFLOW_ACCESS_LOG": "false",
        "DELTAFLOW_ANALYZE_MAX_BODY_BYTES": str(64 * 1024 * 1024),
    }
    from app.core.migrations import upgrade_to_head

    upgrade_to_head(env["DELTAFLOW_DATABASE_URL"])
    api_key = os.environ.get("BENCH_API_KEY") or bench_key(env)
    rows: list[tuple[str, str, str, float, float, float, int, int]] = []
    with (
        running_server(workers=2, **env) as base_url,
        httpx.Client(base_url=base_url, timeout=120, headers={"authorization": f"Bearer {api_key}"}) as client,
    ):
        for body_format, response_format, kind in PAIRS:
            body, content_type = requests[body_format]
            timed_requests(client, body, content_type, response_format)  # warm both workers for this pair
            samples, content = timed_requests(client, body, content_type, response_format)
            decode = RESPONSES[response_format][2]
            started = time.perf_counter()
            decode(content)
            decode_ms = (time.perf_counter() - started) * 1000
            rows.append((body_format, response_format, kind, statistics.median(samples), min(samples), decode_ms,
                         len(body), len(content)))  # fmt: skip
    reference = reference_ms(candles)
    print(f"POST /v1/analyze, {CANDLES:,} candles, SMC (swing length {SWING_LENGTH}), real HTTP, 2 workers, "
          f"{REQUESTS} sequential requests per row (median; best)")  # fmt: skip
    header = f"{'body':<14} {'response':<14} {'in MB':>6} {'out MB':>7} {'median ms':>10} {'best ms':>8}"
    print(f"{header} {'decode ms':>10} {'speed-up':>9} {'target':>8}")
    for body_format, response_format, kind, median, best, decode_ms, size_in, size_out in rows:
        line = f"{body_format:<14} {response_format:<14} {size_in / 1e6:>6.1f} {size_out / 1e6:>7.1f} {median:>10.1f}"
        line += f" {best:>8.1f} {decode_ms:>10.1f}"
        if reference is not None:
            speed_up = reference / median
            verdict = "met" if speed_up >= TARGETS[kind] else "MISSED"
            line += f" {speed_up:>8.1f}x {f'>={TARGETS[kind]:.0f}x':>6} {verdict}"
        print(line)
    if reference is None:
        print("smartmoneyconcepts: not installed (the `bench` extra) - no speed-ups")
    else:
        print(f"smartmoneyconcepts {reference_smc_version()} in-process on the same candles: {reference:,.0f} ms "
              "(one run: swing_highs_lows, fvg, bos_choch, ob, liquidity)")  # fmt: skip


def reference_smc_version() -> str:
    from importlib.metadata import version

    return version("smartmoneyconcepts")


if __name__ == "__main__":
    main()
