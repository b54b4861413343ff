"""Background work for keys, off the request path: pub/sub invalidation, last_used_at batches, expiry notices.

Every API instance runs these; they are safe to run concurrently (notice rows are unique per key and threshold;
last_used_at writes are idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit import repository as audit
from app.auth.verifier import INVALIDATION_CHANNEL, KeyVerifier
from app.config import Settings
from app.core.logging import get_logger
from app.core.redis import RedisClient
from app.keys import repository
from app.models import ApiKey, KeyExpiryNotice
from app.tenants import repository as tenants

log = get_logger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


async def run_forever(name: str, interval: float, step: Callable[[], Awaitable[object]]) -> None:
    """Run `step` every `interval` seconds; a failing step is logged and retried next time, never fatal."""
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job.failed", job=name)
        await asyncio.sleep(interval)


async def listen_for_invalidations(
    redis: RedisClient, verifier: KeyVerifier, stop: asyncio.Event, retry_seconds: float = 1.0
) -> None:
    """Drop in-process cache entries as other instances revoke or rotate keys, until `stop` is set.

    After every (re)subscription the whole local cache is dropped: messages sent while we were disconnected are
    lost, and the TTL alone would leave up to 5 s of staleness. Stopping is by event, not by cancellation alone:
    redis-py's `get_message(timeout=…)` can swallow a cancellation that races with its own timeout.
    """
    while not stop.is_set():
        pubsub = redis.pubsub()
        try:
            await pubsub.subscribe(INVALIDATION_CHANNEL)
            verifier.invalidate_local(None)
            while not stop.is_set():
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
                if message is not None and message.get("type") == "message":
                    data = message["data"]
                    verifier.invalidate_local(data.decode() if isinstance(data, bytes) else str(data))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("auth.invalidation_listener_lost", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), retry_seconds)
        finally:
            with contextlib.suppress(Exception):  # the connection may already be broken
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves this unannotated


async def flush_last_used(verifier: KeyVerifier, sessions: async_sessionmaker[AsyncSession]) -> int:
    """Write the batch of keys used since the last flush; returns how many."""
    used, verifier.used_key_ids = verifier.used_key_ids, set()
    if not used:
        return 0
    try:
        async with sessions() as session, session.begin():
            await repository.touch_last_used(session, sorted(used), utc_now())
    except (SQLAlchemyError, OSError):
        verifier.used_key_ids |= used  # try again next time (the set stays bounded by the verifier)
        raise
    return len(used)


class ExpiryNotices:
    """At each threshold (default 14, 7, 1 days before expiry) notify once: an audit event and a webhook.

    A key that crosses several thresholds between two runs (e.g. created to expire in 5 days) is notified once,
    at the tightest threshold; the looser ones are recorded as skipped so they never fire later.
    """

    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession], clock: Clock = utc_now) -> None:
        self.thresholds = sorted(set(settings.key_expiry_notice_days))
        self.sessions = sessions
        self.clock = clock

    async def run_once(self) -> int:
        if not self.thresholds:
            return 0
        now = self.clock()
        async with self.sessions() as session:
            keys = await repository.keys_expiring_between(session, now, now + timedelta(days=self.thresholds[-1]))
            existing = await self._existing(session, [key.id for key in keys])
        sent = 0
        for key in keys:
            remaining = key.expires_at - now
            due = {t for t in self.thresholds if remaining <= timedelta(days=t)} - existing.get(key.id, set())
            if due and await self._notify(key, due, now):
                sent += 1
        return sent

    async def _existing(self, session: AsyncSession, key_ids: list[uuid.UUID]) -> dict[uuid.UUID, set[int]]:
        found: dict[uuid.UUID, set[int]] = {}
        if key_ids:
            rows = await session.execute(
                select(KeyExpiryNotice.api_key_id, KeyExpiryNotice.threshold_days).where(
                    KeyExpiryNotice.api_key_id.in_(key_ids)
                )
            )
            for key_id, threshold in rows:
                found.setdefault(key_id, set()).add(threshold)
        return found

    async def _notify(self, key: ApiKey, due: set[int], now: datetime) -> bool:
        tightest = min(due)
        payload = {
            "event": "api_key.expiring",
            "key_id": str(key.id),
            "key_name": key.name,
            "prefix": key.prefix,
            "threshold_days": tightest,
            "expires_at": key.expires_at.isoformat(),
            "notified_at": now.isoformat(),
        }
        try:
            async with self.sessions() as session, session.begin():
                for threshold in sorted(due):
                    notice = KeyExpiryNotice(
                        api_key_id=key.id, threshold_days=threshold, delivered=threshold == tightest
                    )
                    session.add(notice)
                await session.flush()  # the unique (key, threshold) constraint decides who notifies
                audit.record(
                    session,
                    tenant_id=key.tenant_id,
                    actor_key_id=None,
                    action="key.expiry_notice",
                    target=f"api_key:{key.id}",
                    request_id=None,
                    details={"threshold_days": tightest, "skipped_thresholds": sorted(due - {tightest})},
                )
                if await tenants.get_webhook(session, key.tenant_id) is not None:
                    tenants.enqueue_delivery(
                        session, tenant_id=key.tenant_id, event="api_key.expiring", payload=payload, due_at=now
                    )
        except IntegrityError:
            return False  # another instance recorded this notice first
        log.info("keys.expiry_notice", key_id=str(key.id), threshold_days=tightest)
        return True
