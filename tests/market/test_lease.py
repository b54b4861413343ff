"""The ingestor lease: one holder per feed, renewals by the owner only, release on stop, and failover when the
holding process is killed (two real `deltaflow ingest` processes)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from app.market.keys import FeedKeys
from app.market.lease import Lease, LeaseKeeper
from tests.conftest import TEST_REDIS_URL

DELTAFLOW = str(Path(sys.executable).parent / "deltaflow")
KEY = FeedKeys("sim", "BTCUSDT").lease


async def test_only_the_owner_can_renew_or_release(redis_client: Redis) -> None:
    first, second = Lease(redis_client, KEY, 5000), Lease(redis_client, KEY, 5000)
    assert await first.acquire()
    assert not await second.acquire()
    assert not await second.renew()
    assert not await second.release()
    assert await first.renew()
    assert 4000 < await redis_client.pttl(KEY) <= 5000
    assert await first.holder() == first.token
    assert await first.release()
    assert await second.acquire()


async def test_a_stopped_keeper_hands_over_at_once_and_a_lost_lease_stops_the_work(redis_client: Redis) -> None:
    running: list[str] = []

    def work(name: str) -> LeaseKeeper:
        async def run() -> None:
            running.append(name)
            try:
                await asyncio.Event().wait()
            finally:
                running.remove(name)

        return LeaseKeeper(Lease(redis_client, KEY, 600), run, name=name)

    a, b = work("a"), work("b")
    a.start()
    await asyncio.sleep(0.05)
    b.start()
    await asyncio.sleep(0.3)
    assert running == ["a"], "exactly one keeper works"
    await a.stop()
    assert running == []
    await asyncio.sleep(0.3)  # b polls every ttl/3 = 0.2 s
    assert running == ["b"]
    assert not a.held
    assert b.held
    await redis_client.set(KEY, "someone-else")  # an operator (or an expiry plus another process) took it
    await asyncio.sleep(0.3)
    assert running == [], "a keeper that cannot renew stops its work"
    assert b.losses == 1
    await b.stop()


async def test_work_that_fails_gives_the_lease_up(redis_client: Redis) -> None:
    attempts = 0

    async def failing() -> None:
        nonlocal attempts
        attempts += 1
        raise RuntimeError("venue misconfigured")

    keeper = LeaseKeeper(Lease(redis_client, KEY, 300), failing)
    keeper.start()
    await asyncio.sleep(0.35)
    await keeper.stop()
    assert attempts >= 2, "released and re-acquired"
    assert await redis_client.get(KEY) is None


def _ingest(ttl_s: float, log: Path) -> subprocess.Popen[bytes]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DELTAFLOW_")}
    env |= {
        "DELTAFLOW_REDIS_URL": TEST_REDIS_URL,
        "DELTAFLOW_FEEDS": "sim:BTCUSDT",
        "DELTAFLOW_MARKET_LEASE_TTL_SECONDS": str(ttl_s),
        "DELTAFLOW_SIM_RATE": "50",
    }
    with log.open("wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen([DELTAFLOW, "ingest"], env=env, stdout=out, stderr=subprocess.STDOUT)


async def _holder_pid(redis: Redis) -> int | None:
    token = await redis.get(KEY)
    if token is None:
        return None
    return int((token.decode() if isinstance(token, bytes) else token).split(":")[1])


async def _failover(redis: Redis, tmp_path: Path, ttl_s: float) -> float:
    processes = [_ingest(ttl_s, tmp_path / f"ingest-{i}.log") for i in range(2)]
    try:
        async with asyncio.timeout(30):
            while (holder := await _holder_pid(redis)) is None:  # noqa: ASYNC110 - polls Redis
                await asyncio.sleep(0.05)
        (victim,) = [p for p in processes if p.pid == holder]
        (survivor,) = [p for p in processes if p.pid != holder]
        # The holder renews every ttl/3; kill it right after a renewal, the worst case for the standby.
        before = await redis.pttl(KEY)
        while await redis.pttl(KEY) <= before:  # noqa: ASYNC110 - polls Redis
            await asyncio.sleep(0.01)
        victim.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        victim.wait(timeout=5)
        async with asyncio.timeout(20):
            while await _holder_pid(redis) != survivor.pid:  # noqa: ASYNC110 - polls Redis
                await asyncio.sleep(0.05)
        took = time.monotonic() - killed
        # The survivor ingests: its status names it and its bars keep coming.
        async with asyncio.timeout(5):
            while True:
                status = await redis.get(FeedKeys("sim", "BTCUSDT").status)
                if status is not None and f":{survivor.pid}:".encode() in status:
                    break
                await asyncio.sleep(0.05)
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(timeout=15) == 0, (tmp_path / "ingest-1.log").read_text()
        assert await redis.get(KEY) is None, "a clean stop releases the lease"
        return took
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.mark.e2e
async def test_killed_holder_is_replaced_by_another_process(redis_client: Redis, tmp_path: Path) -> None:
    took = await _failover(redis_client, tmp_path, ttl_s=2.0)
    assert took < 2.0 + 2.0 / 3 + 1.0


@pytest.mark.e2e
@pytest.mark.slow
async def test_failover_with_the_default_lease_takes_under_15_seconds(redis_client: Redis, tmp_path: Path) -> None:
    took = await _failover(redis_client, tmp_path, ttl_s=10.0)
    assert took < 15.0
