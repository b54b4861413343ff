"""Readiness checks: run concurrently, each bounded by a timeout, each reporting its own latency.

Policy: the database is required (it holds the schema this code expects); Redis is shared by every instance, so
Redis being down marks the instance `degraded` but keeps it in rotation — pulling every instance out at once
over a shared dependency would turn a partial outage into a full one.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import current_revision
from app.core.migrations import code_head, schema_state
from app.core.redis import RedisClient

CheckStatus = Literal["ok", "fail"]


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    status: CheckStatus
    required: bool
    latency_ms: float
    detail: str


async def check_database(engine: AsyncEngine) -> str:
    revision = await current_revision(engine)
    state = schema_state(revision)
    if state in {"current", "ahead"}:
        return f"schema {state} at revision {revision}"
    raise RuntimeError(f"schema {state}: database at {revision or 'no revision'}, code expects {code_head()}")


async def check_redis(redis: RedisClient) -> str:
    await redis.ping()
    return "ping ok"


async def run_check(name: str, *, required: bool, limit_seconds: float, probe: asyncio.Task[str]) -> CheckResult:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(limit_seconds):
            detail = await probe
        status: CheckStatus = "ok"
    except TimeoutError:
        status, detail = "fail", f"timed out after {limit_seconds * 1000:.0f} ms"
    except Exception as exc:  # any failure of a dependency is a failed check, never a 500
        status, detail = "fail", _describe(exc)
    latency_ms = round((time.perf_counter() - started) * 1000, 3)
    return CheckResult(name=name, status=status, required=required, latency_ms=latency_ms, detail=detail)


def _describe(exc: Exception) -> str:
    # Exception class and message only: enough to act on, no traceback or connection string.
    message = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {message}"[:300]


async def readiness(engine: AsyncEngine, redis: RedisClient, limit_seconds: float) -> list[CheckResult]:
    database = asyncio.create_task(check_database(engine))
    cache = asyncio.create_task(check_redis(redis))
    return list(
        await asyncio.gather(
            run_check("database", required=True, limit_seconds=limit_seconds, probe=database),
            run_check("redis", required=False, limit_seconds=limit_seconds, probe=cache),
        )
    )
