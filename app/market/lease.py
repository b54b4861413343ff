"""Exactly one ingestor per (venue, symbol) across processes: a Redis lease.

Acquire is ``SET key token NX PX ttl``; the holder renews every ``ttl/3`` with a Lua compare-and-PEXPIRE (only
the token's owner may extend it) and releases with a compare-and-DEL on a clean stop. A holder that dies stops
renewing; the key expires within ``ttl`` and a standby, polling every ``ttl/3``, takes over: failover takes at
most ``ttl + ttl/3`` (≤ 13.3 s at the largest allowed ttl, 10 s).

A holder that cannot renew (Redis unreachable) must assume the lease lost once ``ttl`` has passed since the last
renewal was *sent* — another process may hold it by then — so :class:`LeaseKeeper` stops the work at that point
rather than when Redis answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Coroutine

from redis.exceptions import RedisError

from app.core.redis import RedisClient
from app.market.tasks import cancel_and_wait, cancelling

logger = logging.getLogger(__name__)

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def owner_token() -> str:
    """Unique per lease attempt, readable in Redis: which host and process holds a feed."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class Lease:
    def __init__(self, redis: RedisClient, key: str, ttl_ms: int, token: str | None = None) -> None:
        if ttl_ms < 100:
            raise ValueError("lease ttl must be at least 100 ms")
        self.redis = redis
        self.key = key
        self.ttl_ms = ttl_ms
        self.token = token or owner_token()

    async def acquire(self) -> bool:
        return bool(await self.redis.set(self.key, self.token, nx=True, px=self.ttl_ms))

    async def renew(self) -> bool:
        return bool(await self.redis.eval(_RENEW, 1, self.key, self.token, self.ttl_ms))

    async def release(self) -> bool:
        return bool(await self.redis.eval(_RELEASE, 1, self.key, self.token))

    async def holder(self) -> str | None:
        value = await self.redis.get(self.key)
        return None if value is None else value.decode() if isinstance(value, bytes) else str(value)


Work = Callable[[], Coroutine[None, None, None]]


class LeaseKeeper:
    """Runs ``work`` while holding the lease: acquires (polling), renews, and cancels the work when lost.

    ``work`` is a coroutine function that runs until cancelled; it is cancelled and awaited when the lease is
    lost or the keeper stops, then the lease is released (if still ours) so a standby takes over at once.
    """

    def __init__(self, lease: Lease, work: Work, *, name: str = "lease") -> None:
        self.lease = lease
        self._work = work
        self.name = name
        self.interval_s = lease.ttl_ms / 3000
        self.held = False
        self.acquisitions = 0
        self.losses = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name=f"lease-{self.name}")
        return self._task

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            # The work's clean-up (stop the source, flush the pipeline, final status) must not be interrupted.
            await cancel_and_wait(task, every_s=30.0)

    async def run(self) -> None:
        while True:
            try:
                acquired = await self.lease.acquire()
            except (RedisError, OSError) as exc:
                if cancelling():
                    raise asyncio.CancelledError from exc
                logger.warning("lease.acquire_failed", extra={"lease": self.name, "error": repr(exc)})
                acquired = False
            if acquired:
                await self._hold()
            await asyncio.sleep(self.interval_s)

    async def _hold(self) -> None:
        self.held = True
        self.acquisitions += 1
        logger.info("lease.acquired", extra={"lease": self.name, "token": self.lease.token})
        work = asyncio.create_task(self._work(), name=f"leased-{self.name}")
        try:
            await self._renew_until_lost(work)
        finally:
            self.held = False
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            # Shielded: a stop() that cancels us must still hand the feed over at once rather than after the TTL.
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(2.0):
                    await asyncio.shield(self.lease.release())

    async def _renew_until_lost(self, work: asyncio.Task[None]) -> None:
        ttl_s = self.lease.ttl_ms / 1000
        valid_until = time.monotonic() + ttl_s
        while True:
            done, _ = await asyncio.wait({work}, timeout=self.interval_s)
            if done:  # the work ended by itself (it failed): give the lease up so another process can try
                exc = work.exception()
                logger.warning("lease.work_ended", extra={"lease": self.name, "error": repr(exc)})
                return
            sent = time.monotonic()
            try:
                async with asyncio.timeout(max(0.05, valid_until - sent)):
                    renewed = await self.lease.renew()
            except (RedisError, OSError, TimeoutError) as exc:
                if cancelling():
                    raise asyncio.CancelledError from exc
                logger.warning("lease.renew_failed", extra={"lease": self.name, "error": repr(exc)})
                if time.monotonic() >= valid_until:
                    self.losses += 1
                    return
                continue
            if not renewed:
                self.losses += 1
                logger.warning("lease.lost", extra={"lease": self.name})
                return
            valid_until = sent + ttl_s
