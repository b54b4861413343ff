"""HTTP baseline through a real server (2 workers): liveness vs readiness (DB + Redis round trips) vs a
problem+json 404, measured side by side in one run. Later benchmarks express their routes as a ratio of
/healthz measured the same way."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.loadgen import run_load
from bench.server import running_server

CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "50"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))


def main() -> None:
    env = {
        "DELTAFLOW_DATABASE_URL": os.environ.get("BENCH_DATABASE_URL", "sqlite+aiosqlite:///./var/bench.db"),
        "DELTAFLOW_REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
    }
    from app.core.migrations import upgrade_to_head

    upgrade_to_head(env["DELTAFLOW_DATABASE_URL"])
    with running_server(workers=2, **env) as base_url:
        results = [
            run_load(base_url, path, connections=CONNECTIONS, seconds=SECONDS)
            for path in ("/healthz", "/readyz", "/v1/nope")
        ]
    baseline = results[0].requests_per_second
    print(f"{CONNECTIONS} connections, {SECONDS:.0f} s each, 2 workers, load by {results[0].tool}")
    print(f"{'route':<12} {'req/s':>10} {'vs /healthz':>12} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for result in results:
        print(
            f"{result.path:<12} {result.requests_per_second:>10.0f} {result.requests_per_second / baseline:>11.2f}x"
            f" {result.p50_ms:>8.2f} {result.p99_ms:>8.2f} {result.errors:>8}"
        )


if __name__ == "__main__":
    main()
