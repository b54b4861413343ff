"""Start and stop what API keys need at run time: the verifier, its cache invalidation, and background jobs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.verifier import KeyCacheInvalidator, KeyVerifier
from app.config import Settings
from app.core.redis import RedisClient
from app.keys.jobs import ExpiryNotices, flush_last_used, listen_for_invalidations, run_forever
from app.tenants.egress import webhook_client
from app.webhooks.deliverer import WebhookDeliverer


async def start_key_services(
    app: FastAPI, settings: Settings, redis: RedisClient, sessions: async_sessionmaker[AsyncSession]
) -> Callable[[], Awaitable[None]]:
    """Returns the matching shutdown coroutine."""
    verifier = KeyVerifier(
        pepper=settings.secret_key.get_secret_value(),
        redis=redis,
        session_factory=sessions,
        cache_ttl_seconds=settings.auth_cache_ttl_seconds,
        local_cache_size=settings.auth_local_cache_size,
        redis_timeout_seconds=settings.auth_redis_timeout_seconds,
    )
    verifier.max_pending_used = settings.key_last_used_max_pending
    app.state.key_verifier = verifier
    app.state.key_invalidator = KeyCacheInvalidator(redis, verifier)

    async def flush() -> int:
        return await flush_last_used(verifier, sessions)

    http = webhook_client(settings)
    stop_listening = asyncio.Event()
    listener = asyncio.create_task(listen_for_invalidations(redis, verifier, stop_listening), name="auth-invalidations")
    tasks = [
        asyncio.create_task(run_forever("last_used", settings.key_last_used_flush_seconds, flush), name="last-used"),
    ]
    if settings.background_jobs:
        notices = ExpiryNotices(settings, sessions)
        deliverer = WebhookDeliverer(settings, sessions, http)
        tasks.append(
            asyncio.create_task(
                run_forever("expiry_notices", settings.expiry_notice_interval_seconds, notices.run_once),
                name="expiry-notices",
            )
        )
        tasks.append(
            asyncio.create_task(
                run_forever("webhooks", settings.webhook_poll_seconds, deliverer.run_once), name="webhooks"
            )
        )
    app.state.webhook_http = http

    async def stop() -> None:
        stop_listening.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):  # on timeout wait_for cancels it
            await asyncio.wait_for(listener, timeout=2.0)
        with contextlib.suppress(Exception):  # best effort: the database may be what is going away
            await flush()
        await http.aclose()

    return stop
