"""The production topology on one machine, as real processes: nginx (the shipped nginx/nginx.conf, HTTP/1.1 and h2c
listeners) in front of `deltaflow serve` processes, `deltaflow ingest` processes on sim feeds, and a private
redis-server. Shared by bench/bench_production.py and tests/e2e/test_faults.py; blocking (call from a thread in
async code)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import redis

from app.market.aggregation import TIMEFRAMES
from app.market.keys import FeedKeys
from bench.synthetic import stored_walk

ROOT = Path(__file__).resolve().parents[1]
DELTAFLOW = str(Path(sys.executable).parent / "deltaflow")
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
REDIS_SERVER = shutil.which("redis-server")
SIM_SYMBOLS = (
    "BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "BNBUSDT", "AVAXUSDT", "LINKUSDT", "DOTUSDT",
)  # fmt: skip
MINUTE_MS = TIMEFRAMES["1m"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, process: subprocess.Popen[bytes] | None = None, *, within: float = 30.0) -> None:
    """Until `url` answers 200 (the process, if given, must not exit meanwhile)."""
    deadline = time.monotonic() + within
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except (OSError, urllib.error.HTTPError):
            pass
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer 200 within {within:.0f} s")
        time.sleep(0.1)


def _environment(env: Mapping[str, str]) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DELTAFLOW_")}
    environment.update(env)
    return environment


def start_serve(
    port: int, env: Mapping[str, str], *, workers: int = 1, warm_key: str | None = None
) -> subprocess.Popen[bytes]:
    """`deltaflow serve` on `port`, started (its /startupz answers 200). With `warm_key`, one signal is asked of it
    directly: its analysis process pool starts on the first signal request (seconds on a loaded machine), after
    /startupz already answers, and that first request would otherwise be a client's."""
    process = subprocess.Popen(
        [DELTAFLOW, "serve", "--port", str(port), "--workers", str(workers)],
        env=_environment(env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_http(f"http://127.0.0.1:{port}/startupz", process)
    if warm_key is not None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/signals/sim/{SIM_SYMBOLS[0]}", headers={"X-API-Key": warm_key}
        )
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - loopback
            response.read()
    return process


def start_ingest(env: Mapping[str, str], *, log: Path | None = None) -> subprocess.Popen[bytes]:
    """`deltaflow ingest`; its log lines appended to `log` when given (a failing test can then say what it did)."""
    # The child keeps its own descriptor of the log, so ours closes right after the start.
    with log.open("ab") if log is not None else nullcontext(None) as sink:
        return subprocess.Popen(
            [DELTAFLOW, "ingest"], env=_environment(env), stdout=sink or subprocess.DEVNULL,
            stderr=subprocess.STDOUT if sink else subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip


def stop(process: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, within: float = 30.0) -> int | None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=within)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    return process.returncode


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (a granian supervisor's workers), from /proc."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            children = (task / "children").read_text().split()
        except FileNotFoundError:
            continue
        for child in map(int, children):
            found += [child, *descendants(child)]
    return found


def kill_hard(process: subprocess.Popen[bytes]) -> None:
    """`kill -9` of a server and its workers at once: a crashed host, not a shutdown (nothing drains)."""
    for pid in [process.pid, *descendants(process.pid)]:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait(timeout=10)


def nginx_config(
    upstream_ports: Sequence[int],
    http_port: int,
    h2_port: int,
    directory: Path,
    *,
    per_client: str | None = None,
    burst: str | None = None,
) -> str:
    """The shipped config with only the deployment-specific parts replaced: the upstream servers, the listeners
    (loopback), the temp and log paths, and optionally the per-address limit (`rate=…r/s`, `burst=…`)."""
    config = (ROOT / "nginx" / "nginx.conf").read_text()
    shipped = re.search(r"^\s*server api:8000([^;]*);", config, flags=re.MULTILINE)
    if shipped is None:
        raise RuntimeError("nginx.conf: the `server api:8000` upstream line moved")
    servers = "\n".join(f"        server 127.0.0.1:{port}{shipped.group(1)};" for port in upstream_ports)
    config = config[: shipped.start()] + "\n" + servers + config[shipped.end() :]
    for old, new in (
        ("listen 8080;", f"listen 127.0.0.1:{http_port};"),
        ("listen 8081 http2;", f"listen 127.0.0.1:{h2_port} http2;"),
    ):
        if old not in config:
            raise RuntimeError(f"nginx.conf: `{old}` is missing")
        config = config.replace(old, new)
    config = config.replace("/tmp/", f"{directory}/")  # noqa: S108 - rewriting the shipped paths
    config = config.replace("access_log /dev/stdout", f"access_log {directory}/access.log")
    config = config.replace("error_log /dev/stderr", f"error_log {directory}/error.log")
    if per_client is not None:
        config = re.sub(r"rate=\d+r/s", per_client, config)
    if burst is not None:
        config = re.sub(r"burst=\d+", burst, config)
    return config


@dataclass
class Nginx:
    process: subprocess.Popen[bytes]
    url: str  # HTTP/1.1
    h2_url: str  # HTTP/2 without TLS (prior knowledge)
    directory: Path

    def access_log(self) -> list[dict[str, Any]]:
        path = self.directory / "access.log"
        return [orjson.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


@contextmanager
def nginx_in_front(upstream_ports: Sequence[int], directory: Path, **limits: str) -> Iterator[Nginx]:
    if NGINX is None:
        raise RuntimeError("nginx is not installed (apt-get install nginx-light)")
    directory.chmod(0o755)  # nginx's unprivileged workers read it
    http_port, h2_port = free_port(), free_port()
    conf = directory / "nginx.conf"
    conf.write_text(nginx_config(upstream_ports, http_port, h2_port, directory, **limits))
    process = subprocess.Popen(
        [NGINX, "-p", str(directory), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{http_port}/healthz", process, within=10)
        yield Nginx(process, f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{h2_port}", directory)
    finally:
        stop(process, sig=signal.SIGQUIT, within=10)


class PrivateRedis:
    """A redis-server of our own on a loopback port, so it can be stopped and restarted without touching the
    machine's shared Redis. `restart` is SHUTDOWN SAVE then the same command: the data survives, as with a
    managed Redis that persists; the API is without Redis meanwhile."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        if REDIS_SERVER is None:
            raise RuntimeError("redis-server is not installed")
        self.port = port or free_port()
        self.directory = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory), "--dbfilename", "dump.rdb", "--maxclients", "10000"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis(port=self.port, socket_timeout=1) as client:
                    client.ping()
                    return
            except redis.RedisError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("private redis-server did not start") from None
                time.sleep(0.05)

    def stop(self, *, save: bool = True) -> None:
        if self.process is None:
            return
        if save:
            # The server closes the connection as it exits.
            with redis.Redis(port=self.port, socket_timeout=5) as client, suppress(redis.ConnectionError):
                client.shutdown(save=True)
        stop(self.process)
        self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


def seed_history(client: redis.Redis, symbols: Sequence[str], *, bars: int = 300, venue: str = "sim") -> int:
    """Closed one-minute bars ending before the current minute, as ingestion stores them, so signals exist from
    the first second (the sim has no history and a bar takes a minute to close). Returns the current minute."""
    now_ms = time.time_ns() // 1_000_000
    for index, symbol in enumerate(symbols):
        rows = stored_walk(bars, interval_ms=MINUTE_MS, end_ms=now_ms, seed=index + 1)
        client.zadd(FeedKeys(venue, symbol).bars["1m"], {orjson.dumps(row): row["t"] for row in rows})
    return (now_ms // MINUTE_MS) * MINUTE_MS


def issue_key(env: Mapping[str, str], *, tenant: str) -> str:
    """An operator key, issued through the real CLI (printed once on stdout)."""
    result = subprocess.run(
        [DELTAFLOW, "keys", "bootstrap", "--force", "--tenant", tenant],
        env=_environment(env),
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip().splitlines()[-1]


def stored_bar_times(client: redis.Redis, symbol: str, *, venue: str = "sim", since_ms: int = 0) -> list[int]:
    """Open times of the stored closed one-minute bars from `since_ms`, oldest first."""
    members: list[tuple[bytes, float]] = client.zrangebyscore(  # type: ignore[assignment]
        FeedKeys(venue, symbol).bars["1m"], since_ms, "+inf", withscores=True
    )
    return [int(score) for _member, score in members]


def lease_holders(client: redis.Redis, symbols: Sequence[str], *, venue: str = "sim") -> dict[str, str | None]:
    """symbol → the lease owner token (`host:pid:…`) or None."""
    holders: dict[str, str | None] = {}
    for symbol in symbols:
        value = client.get(FeedKeys(venue, symbol).lease)
        holders[symbol] = value.decode() if isinstance(value, bytes) else None
    return holders


def holder_pid(token: str | None) -> int | None:
    return int(token.split(":")[1]) if token else None
