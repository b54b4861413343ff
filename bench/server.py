"""Start a real `deltaflow serve` process for benchmarks and wait until it answers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running_server(*, workers: int = 2, **env: str) -> Iterator[str]:
    port = free_port()
    # The rate limiter stays on (its cost is part of every /v1 request) at a budget the single benchmark tenant,
    # far above any real tenant's rate, never spends.
    environment = {
        **os.environ,
        "DELTAFLOW_ACCESS_LOG": "true",
        "DELTAFLOW_DRAIN_SECONDS": "0",
        "DELTAFLOW_RATE_LIMIT_PER_SECOND": "1000000",
        "DELTAFLOW_RATE_LIMIT_BURST": "10000000",
        **env,
    }
    deltaflow = str(Path(sys.executable).parent / "deltaflow")
    process = subprocess.Popen(
        [deltaflow, "serve", "--port", str(port), "--workers", str(workers)],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(base_url + "/startupz", timeout=1) as response:  # noqa: S310 - loopback
                    if response.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("benchmark server did not start") from None
                time.sleep(0.1)
        yield base_url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def bench_key(env: dict[str, str], *, tenant: str = "bench") -> str:
    """An operator key for the benchmark's database, issued through the real CLI (printed once on stdout)."""
    deltaflow = str(Path(sys.executable).parent / "deltaflow")
    result = subprocess.run(
        [deltaflow, "keys", "bootstrap", "--force", "--tenant", tenant],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip().splitlines()[-1]


def alternated_load(
    env: dict[str, str], setting: str, values: dict[str, str], path: str, headers: dict[str, str], *, rounds: int = 3
) -> list[tuple[str, float, float]]:
    """(label, /healthz req/s, `path` req/s) for each value of `setting`, each on a fresh 2-worker server, the values
    alternated `rounds` times so drift in the machine's load shows up as spread rather than as a difference. One more
    round runs first and is not reported: the first servers after a benchmark's set-up measured 10-25 % slower in
    both variants (seen in every run of bench_console and bench_calls), which is warm-up, not the setting."""
    from bench.loadgen import run_load

    connections = int(os.environ.get("BENCH_CONNECTIONS", "50"))
    seconds = float(os.environ.get("BENCH_SECONDS", "5"))
    rows = []
    for round_ in range(rounds + 1):
        for label, value in values.items():
            with running_server(workers=2, **{**env, setting: value}) as base_url:
                run_load(base_url, path, connections=connections, seconds=1, headers=headers)  # warm both workers
                health = run_load(base_url, "/healthz", connections=connections, seconds=seconds)
                loaded = run_load(base_url, path, connections=connections, seconds=seconds, headers=headers)
            if round_ > 0:
                rows.append((label, health.requests_per_second, loaded.requests_per_second))
    return rows
