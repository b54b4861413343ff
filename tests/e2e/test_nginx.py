"""The production topology on one machine: real nginx (from apt) in front of two real `deltaflow serve` processes
sharing Postgres and Redis, configured by the shipped nginx/nginx.conf."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import TEST_REDIS_URL
from tests.e2e.test_serve import serve
from tests.helpers import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def _config_for(upstream_ports: list[int], listen_port: int, directory: Path) -> str:
    """The shipped config with only the deployment-specific addresses replaced."""
    config = (ROOT / "nginx" / "nginx.conf").read_text()
    servers = "\n".join(f"        server 127.0.0.1:{port} max_fails=3 fail_timeout=10s;" for port in upstream_ports)
    config, replaced = re.subn(r"^\s*server api:8000[^;]*;", servers, config, flags=re.MULTILINE)
    assert replaced == 1
    config = config.replace("listen 8080;", f"listen 127.0.0.1:{listen_port};")
    config = config.replace("listen 8081 http2;", f"listen 127.0.0.1:{free_port()} http2;")  # h2c, unused here
    config = config.replace("/tmp/", f"{directory}/")  # noqa: S108 - rewriting the shipped paths
    return config.replace("access_log /dev/stdout", f"access_log {directory}/access.log")


@asynccontextmanager
async def nginx_in_front(
    upstream_ports: list[int],
    directory: Path,
    *,
    per_client: str | None = None,
    burst: str | None = None,
    per_key: int | None = None,
) -> AsyncIterator[tuple[str, Path]]:
    """nginx with the shipped config; `per_client` / `burst` replace its per-address limit (`rate=…`, `burst=…`),
    `per_key` its per-key concurrency limit."""
    assert NGINX is not None
    port = free_port()
    conf = directory / "nginx.conf"
    config = _config_for(upstream_ports, port, directory)
    if per_client is not None:
        config, replaced = re.subn(r"rate=\d+r/s", per_client, config)
        assert replaced == 1
    if burst is not None:
        config, replaced = re.subn(r"burst=\d+", burst, config)
        assert replaced == 2
    if per_key is not None:
        config, replaced = re.subn(r"limit_conn per_key \d+;", f"limit_conn per_key {per_key};", config)
        assert replaced == 1
    conf.write_text(config)
    process = subprocess.Popen(  # noqa: ASYNC220 - nginx is a separate OS process
        [NGINX, "-p", str(directory), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        async with httpx.AsyncClient(base_url=base_url, timeout=1.0) as client:
            while True:
                try:
                    await client.get("/healthz")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise AssertionError("nginx did not start") from None
                    await asyncio.sleep(0.1)
        yield base_url, directory / "access.log"
    finally:
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def _access_log(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (.ci/run installs it with apt-get)")
async def test_nginx_spreads_load_passes_request_ids_and_survives_a_rolling_stop(
    postgres_url: str, nginx_dir: Path
) -> None:
    env = {
        "DELTAFLOW_DATABASE_URL": postgres_url,
        "DELTAFLOW_REDIS_URL": TEST_REDIS_URL,
        "DELTAFLOW_DRAIN_SECONDS": "1.0",
    }
    async with AsyncExitStack() as stack:
        first, first_url = await stack.enter_async_context(serve(workers=1, env=env))
        _second, second_url = await stack.enter_async_context(serve(workers=1, env=env))
        ports = [int(first_url.rsplit(":", 1)[1]), int(second_url.rsplit(":", 1)[1])]
        base_url, log_path = await stack.enter_async_context(nginx_in_front(ports, nginx_dir))

        async with httpx.AsyncClient(base_url=base_url, timeout=5.0) as client:
            echoed = await client.get("/readyz", headers={"X-Request-ID": "client-chosen-42"})
            assert echoed.status_code == 200
            assert echoed.headers["x-request-id"] == "client-chosen-42"

            minted = await client.get("/healthz")
            minted_id = minted.headers["x-request-id"]
            assert re.fullmatch(r"[0-9a-f]{32}", minted_id)

            for _ in range(30):
                assert (await client.get("/healthz")).status_code == 200

            # Rolling stop: SIGTERM one instance while traffic keeps flowing; no request may fail.
            first.send_signal(signal.SIGTERM)
            statuses: list[int] = []
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                statuses.append((await client.get("/healthz")).status_code)
                await asyncio.sleep(0.01)
            assert first.wait(timeout=10) == 0
            for _ in range(10):
                statuses.append((await client.get("/healthz")).status_code)
        assert len(statuses) > 10
        assert set(statuses) == {200}

        await asyncio.sleep(0.2)  # nginx writes its access log line after the response
        entries = _access_log(log_path)
        assert any(entry["request_id"] == minted_id for entry in entries), "nginx logs the id it passed on"
        upstreams = {str(entry["upstream"]).split(",")[0].strip() for entry in entries}
        assert {f"127.0.0.1:{port}" for port in ports} <= upstreams, "both instances served traffic"


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (.ci/run installs it with apt-get)")
async def test_nginx_limits_one_address_with_a_problem_before_the_app_sees_it(
    postgres_url: str, nginx_dir: Path
) -> None:
    env = {"DELTAFLOW_DATABASE_URL": postgres_url, "DELTAFLOW_REDIS_URL": TEST_REDIS_URL}
    async with AsyncExitStack() as stack:
        _process, url = await stack.enter_async_context(serve(workers=1, env=env))
        base_url, _log = await stack.enter_async_context(
            nginx_in_front([int(url.rsplit(":", 1)[1])], nginx_dir, per_client="rate=2r/s", burst="burst=20")
        )
        limits = httpx.Limits(max_connections=100)
        # 300 requests share 100 connections: on a saturated CI machine a request waited over 10 s for one.
        async with httpx.AsyncClient(base_url=base_url, timeout=60.0, limits=limits) as client:
            # Made-up keys from one address, faster than the limit: the burst passes to the app (401 each), the rest
            # is refused by nginx. The shipped numbers (100/s, burst 200) are scaled down to 2/s and 20: a Python
            # client on this shared machine cannot send faster than ~100 per second.
            headers = {"X-API-Key": "dfk_" + "A" * 38}
            responses = await asyncio.gather(*(client.get("/v1/me", headers=headers) for _ in range(300)))
            statuses = [r.status_code for r in responses]
            assert statuses.count(401) + statuses.count(429) == len(statuses)
            assert 20 <= statuses.count(401) <= 150, statuses.count(401)  # the burst, plus 2 per second meanwhile
            refused = next(r for r in responses if r.status_code == 429)
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.headers["retry-after"] == "1"
            problem = refused.json()
            assert problem["type"] == "/problems/client-rate-limited"
            assert problem["instance"] == "/v1/me"
            assert problem["request_id"] == refused.headers["x-request-id"]


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (.ci/run installs it with apt-get)")
async def test_nginx_limits_the_requests_one_key_has_in_progress_with_a_problem(
    postgres_url: str, nginx_dir: Path
) -> None:
    env = {"DELTAFLOW_DATABASE_URL": postgres_url, "DELTAFLOW_REDIS_URL": TEST_REDIS_URL}
    async with AsyncExitStack() as stack:
        _process, url = await stack.enter_async_context(serve(workers=1, env=env))
        base_url, _log = await stack.enter_async_context(
            nginx_in_front([int(url.rsplit(":", 1)[1])], nginx_dir, per_key=2)  # the shipped 256, scaled down
        )
        # nginx counts a key's requests from their headers on; made-up keys do (the app then answers 401).
        busy, calm = {"X-API-Key": "dfk_" + "B" * 38}, {"Authorization": "Bearer dfk_" + "C" * 38}
        let_go, sent = asyncio.Event(), [asyncio.Event(), asyncio.Event()]

        async def held_body(number: int) -> AsyncIterator[bytes]:
            yield b'{"candles": '
            sent[number].set()  # httpx sent the headers, and asks for the next chunk
            await let_go.wait()
            yield b"[]}"

        async with (
            httpx.AsyncClient(base_url=base_url, timeout=30.0) as holder,
            httpx.AsyncClient(base_url=base_url, timeout=30.0) as client,
        ):
            held = [
                asyncio.create_task(holder.post("/v1/analyze", content=held_body(n), headers=busy)) for n in range(2)
            ]
            for event in sent:
                await asyncio.wait_for(event.wait(), 10)
            refused = await client.get("/v1/me", headers=busy)
            deadline = time.monotonic() + 10
            while refused.status_code != 429 and time.monotonic() < deadline:  # until nginx has read both headers
                await asyncio.sleep(0.1)
                refused = await client.get("/v1/me", headers=busy)
            assert refused.status_code == 429, (refused.text, _log.read_text()[-2000:])
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.headers["retry-after"] == "1"
            problem = refused.json()
            assert problem["type"] == "/problems/concurrency-limited"
            assert problem["instance"] == "/v1/me"
            assert problem["request_id"] == refused.headers["x-request-id"]
            assert (await client.get("/v1/me", headers=calm)).status_code == 401  # another key passes to the app
            let_go.set()
            assert [r.status_code for r in await asyncio.gather(*held)] == [401, 401]
            assert (await client.get("/v1/me", headers=busy)).status_code == 401  # its requests ended: it passes
