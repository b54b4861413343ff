"""Start and stop usage metering: the in-process meter and its flush (and retention) job."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.calls import CALL_LOG_STATE
from app.auth.metering import QUOTA_LEDGER_STATE, USAGE_METER_STATE
from app.auth.quota import QuotaLedger
from app.config import Settings
from app.core.redis import RedisClient
from app.keys.jobs import run_forever
from app.usage.cache import USAGE_CACHE_STATE, UsageReportCache
from app.usage.calls.maintenance import maintain
from app.usage.calls.recorder import CallRecorder
from app.usage.meter import UsageMeter
from app.usage.quota_notices import QuotaNotices
from app.usage.retention import UsageRetention


async def start_usage_services(
    app: FastAPI, settings: Settings, sessions: async_sessionmaker[AsyncSession], redis: RedisClient | None = None
) -> Callable[[], Awaitable[None]]:
    """Sets `app.state.usage_meter` (read by the metering middleware) and starts its flush job; returns the
    matching shutdown coroutine, which stops the job and flushes what is left."""
    cache = UsageReportCache(redis, settings.usage_cache_ttl_seconds) if redis is not None else None
    meter = UsageMeter(settings.usage_max_pending_rows, after_flush=cache.invalidate if cache is not None else None)
    setattr(app.state, USAGE_CACHE_STATE, cache)
    setattr(app.state, USAGE_METER_STATE, meter)
    # Pruning is a background job like expiry notices (off where DELTAFLOW_BACKGROUND_JOBS is false); flushing is
    # not optional: the counts live only in this process until flushed.
    retention = UsageRetention(settings.usage_retention_days, meter.today) if settings.background_jobs else None
    in_flight: set[asyncio.Future[int]] = set()

    async def step() -> None:
        # Shielded: a flush cancelled halfway would lose its batch (already swapped out of the meter), and merging
        # it back is wrong if the commit had gone through. Shutdown waits for it instead.
        flush = asyncio.ensure_future(meter.flush(sessions))
        in_flight.add(flush)
        flush.add_done_callback(in_flight.discard)
        await asyncio.shield(flush)
        if retention is not None:
            await retention.prune_if_due(sessions)

    task = asyncio.create_task(run_forever("usage", settings.usage_flush_seconds, step), name="usage-flush")
    stop_calls = await _start_call_log(app, settings, sessions) if settings.call_log_enabled else None
    notices = QuotaNotices(sessions)
    # Quotas are counted in Redis (without it, e.g. in a test of the meter alone, no tenant is held to one).
    ledger = None
    if redis is not None:
        ledger = QuotaLedger(
            redis, lease_size=settings.quota_lease_size, thresholds=settings.quota_notice_thresholds, notify=notices
        )
        setattr(app.state, QUOTA_LEDGER_STATE, ledger)

    async def stop() -> None:
        if ledger is not None:
            with contextlib.suppress(Exception):  # Redis may be what is going away; the leases then stay counted
                await ledger.give_back()
        await notices.drain()
        task.cancel()
        await asyncio.gather(task, *in_flight, return_exceptions=True)
        with contextlib.suppress(Exception):  # best effort: the database may be what is going away
            await meter.flush(sessions)
        if stop_calls is not None:
            await stop_calls()

    return stop


async def _start_call_log(
    app: FastAPI, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> Callable[[], Awaitable[None]]:
    """The call log's buffer (read by the metering middleware), its writer, and its partitions: made for today and
    the days ahead at start-up, so the first calls land in their day's partition; kept hourly by background jobs."""
    recorder = CallRecorder(settings.call_log_max_pending)
    setattr(app.state, CALL_LOG_STATE, recorder)
    in_flight: set[asyncio.Future[int]] = set()

    async def write() -> None:
        flush = asyncio.ensure_future(recorder.flush(sessions))
        in_flight.add(flush)
        flush.add_done_callback(in_flight.discard)
        await asyncio.shield(flush)  # a cancelled flush would lose its batch: shutdown waits for it

    tasks = [asyncio.create_task(run_forever("call-log", settings.call_log_flush_seconds, write), name="call-log")]
    if settings.background_jobs:
        tasks.append(
            asyncio.create_task(run_forever("call-log-partitions", 3600, lambda: maintain(sessions, settings)))
        )

    async def stop() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, *in_flight, return_exceptions=True)
        with contextlib.suppress(Exception):
            await recorder.flush(sessions)

    return stop
