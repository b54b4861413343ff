"""`deltaflow serve` as a real process: probes over real HTTP, and the SIGTERM drain."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_REDIS_URL
from tests.helpers import blackhole_server, free_port

pytestmark = pytest.mark.e2e

DELTAFLOW = str(Path(sys.executable).parent / "deltaflow")


@asynccontextmanager
async def serve(
    *, workers: int = 1, env: dict[str, str], args: Sequence[str] = ()
) -> AsyncIterator[tuple[subprocess.Popen[bytes], str]]:
    """`deltaflow serve` on a free port with ``env`` (and extra ``args``, e.g. ``--with-ingest``), once live."""
    port = free_port()
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DELTAFLOW_")}
    environment.update(env)
    process = subprocess.Popen(  # noqa: ASYNC220 - the server must be a separate OS process
        [DELTAFLOW, "serve", "--port", str(port), "--workers", str(workers), *args],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, so a test can signal the whole group as systemd does
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        await _wait_until_live(base_url, process)
        yield process, base_url
    finally:
        # The whole group: a test that failed midway must not leave workers (or their analysis pools) behind.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


async def _wait_until_live(base_url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(base_url=base_url, timeout=1.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"server exited early with {process.returncode}")
            try:
                if (await client.get("/startupz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("server did not start within 30 s")


async def _wait_for_exit(process: subprocess.Popen[bytes], within_seconds: float) -> int:
    deadline = time.monotonic() + within_seconds
    while process.poll() is None:
        if time.monotonic() > deadline:
            raise AssertionError("server did not exit in time")
        await asyncio.sleep(0.05)
    return process.returncode


SERVERS = ["granian", "uvicorn"]


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize(("workers", "whole_group"), [(1, False), (2, False), (2, True)])
async def test_sigterm_turns_readiness_off_then_exits_zero(
    postgres_url: str, workers: int, whole_group: bool, server: str
) -> None:
    # whole_group: SIGTERM to every process of the server at once (systemd's default KillMode, kill -- -PGID), not
    # just to the supervisor (docker stop, kubernetes): the workers must drain, not stop at once.
    drain = 2.0
    async with serve(
        workers=workers,
        env={
            "DELTAFLOW_DATABASE_URL": postgres_url,
            "DELTAFLOW_REDIS_URL": TEST_REDIS_URL,
            "DELTAFLOW_DRAIN_SECONDS": str(drain),
            "DELTAFLOW_SERVER": server,
        },
    ) as (process, base_url):
        async with httpx.AsyncClient(base_url=base_url, timeout=5.0) as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 200
            assert {check["name"] for check in ready.json()["checks"]} == {"database", "redis"}

            if whole_group:
                os.killpg(process.pid, signal.SIGTERM)
            else:
                process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            # One worker flips at once; uvicorn's multi-worker supervisor relays signals every 0.5 s.
            await asyncio.sleep(0.1 if workers == 1 else 0.7)
            # New connections each time: with several workers every one of them must be draining.
            for _ in range(4):
                async with httpx.AsyncClient(base_url=base_url, timeout=5.0) as fresh:
                    draining = await fresh.get("/readyz")
                    assert draining.status_code == 503
                    assert draining.json()["detail"] == "Draining for shutdown."
                    assert (await fresh.get("/healthz")).status_code == 200
            assert time.monotonic() - signalled < drain, "all of the above happened during the drain"

        assert await _wait_for_exit(process, within_seconds=drain + 15) == 0
        assert time.monotonic() - signalled >= drain


@pytest.mark.parametrize("server", SERVERS)
async def test_in_flight_request_finishes_during_shutdown(postgres_url: str, server: str) -> None:
    # A database that accepts connections and never answers makes /readyz take exactly the check timeout:
    # a request that is still in flight when the drain ends.
    async with (
        blackhole_server() as hung_port,
        serve(
            env={
                "DELTAFLOW_DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:{hung_port}/x",
                "DELTAFLOW_REDIS_URL": TEST_REDIS_URL,
                "DELTAFLOW_DRAIN_SECONDS": "0.3",
                "DELTAFLOW_READINESS_CHECK_TIMEOUT_SECONDS": "2.5",
                "DELTAFLOW_SERVER": server,
            }
        ) as (process, base_url),
    ):
        async with httpx.AsyncClient(base_url=base_url, timeout=10.0) as client:
            in_flight = asyncio.create_task(client.get("/readyz"))
            await asyncio.sleep(0.5)
            process.send_signal(signal.SIGTERM)
            response = await in_flight
        assert response.status_code == 503
        checks = {check["name"]: check for check in response.json()["checks"]}
        assert checks["database"]["detail"] == "timed out after 2500 ms"
        assert await _wait_for_exit(process, within_seconds=15) == 0


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [int(child), *_descendants(int(child))]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux-only")
async def test_granian_workers_stop_when_their_supervisor_is_killed(postgres_url: str) -> None:
    # SIGKILL cannot be drained; what matters is that no worker is left serving on the port without a supervisor.
    async with serve(
        workers=2,
        env={
            "DELTAFLOW_DATABASE_URL": postgres_url,
            "DELTAFLOW_REDIS_URL": TEST_REDIS_URL,
            "DELTAFLOW_SERVER": "granian",
        },
    ) as (process, base_url):
        for _ in range(100):
            if len(_descendants(process.pid)) >= 2:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # both workers serving (the first one answering made `serve` return)
        workers = _descendants(process.pid)
        assert len(workers) >= 2
        process.kill()
        process.wait(timeout=10)
        for _ in range(150):
            if not any(_alive(pid) for pid in workers):
                break
            await asyncio.sleep(0.1)
        assert not any(_alive(pid) for pid in workers), "a worker outlived its supervisor"
        with pytest.raises(httpx.ConnectError):  # nobody is left holding the port
            async with httpx.AsyncClient(base_url=base_url, timeout=2.0) as client:
                await client.get("/healthz")


@pytest.mark.parametrize("whole_group", [False, True])
async def test_factory_under_plain_granian_stops_on_sigterm(
    postgres_url: str, whole_group: bool, tmp_path: Path
) -> None:
    # `granian --factory app.main:create_served_app` without `deltaflow serve`: granian's own supervisor stops its
    # workers with SIGTERM, so a worker must not take SIGTERM as "drain and wait for SIGINT" there (it did, and the
    # server never stopped).
    port = free_port()
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DELTAFLOW_")}
    environment.update({"DELTAFLOW_DATABASE_URL": postgres_url, "DELTAFLOW_REDIS_URL": TEST_REDIS_URL})
    granian = str(Path(sys.executable).parent / "granian")
    log_path = tmp_path / "server.log"
    log_file = log_path.open("wb")
    process = subprocess.Popen(  # noqa: ASYNC220 - the server must be a separate OS process
        [
            granian,
            "--interface",
            "asgi",
            "--factory",
            "--workers",
            "2",
            "--port",
            str(port),
            "app.main:create_served_app",
        ],
        env=environment,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        await _wait_until_live(f"http://127.0.0.1:{port}", process)
        # Both workers started: granian 2.8 hangs a worker that gets a group's signal twice (its own and the
        # supervisor's relay) during its lifespan start-up, whatever the app does.
        await _wait_for_log_lines(log_path, '"event":"app.started"', count=2)
        if whole_group:
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.send_signal(signal.SIGTERM)
        await _wait_for_exit(process, within_seconds=20)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        log_file.close()


async def _wait_for_log_lines(path: Path, marker: str, count: int, within_seconds: float = 30) -> None:
    deadline = time.monotonic() + within_seconds
    while (await asyncio.to_thread(path.read_text, errors="replace")).count(marker) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {count} lines with {marker} within {within_seconds} s")
        await asyncio.sleep(0.05)


async def test_a_granian_worker_that_alone_gets_sigterm_drains_then_stops_on_its_own(postgres_url: str) -> None:
    # No SIGINT will follow from the supervisor (it got no signal): the worker must not wait for one forever.
    env = {
        "DELTAFLOW_DATABASE_URL": postgres_url,
        "DELTAFLOW_REDIS_URL": TEST_REDIS_URL,
        "DELTAFLOW_SERVER": "granian",
        "DELTAFLOW_DRAIN_SECONDS": "1",
        "DELTAFLOW_SHUTDOWN_TIMEOUT_SECONDS": "1",
    }
    async with serve(workers=2, env=env) as (process, base_url):
        for _ in range(100):
            if len(_descendants(process.pid)) >= 2:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        worker = _descendants(process.pid)[0]
        os.kill(worker, signal.SIGTERM)
        started = time.monotonic()
        while _alive(worker):
            assert time.monotonic() - started < 15, "the worker is still waiting for a SIGINT that never comes"
            await asyncio.sleep(0.1)
        # It stopped no sooner than its drain: the balancer had time to see /readyz turn 503.
        assert time.monotonic() - started >= 1.0
        assert process.poll() is None  # the supervisor and the other worker go on serving
        async with httpx.AsyncClient(base_url=base_url, timeout=5.0) as client:
            assert (await client.get("/healthz")).status_code == 200
