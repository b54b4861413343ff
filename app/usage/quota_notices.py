"""Quota notices: when a tenant's month crosses a threshold (80 %, 100 %), one audit event and, if the tenant has a
webhook, one delivery. The crossing is decided atomically in Redis (app/auth/quota.py), so exactly one instance
calls this per threshold and month; the write happens in the background, never on the request that crossed it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit import repository as audit
from app.core.logging import get_logger
from app.tenants import repository as tenants

log = get_logger(__name__)


class QuotaNotices:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self.pending: set[asyncio.Task[None]] = set()

    def __call__(self, tenant_id: uuid.UUID, quota: int, threshold: str) -> None:
        task = asyncio.create_task(self._write(tenant_id, quota, threshold), name="quota-notice")
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _write(self, tenant_id: uuid.UUID, quota: int, threshold: str) -> None:
        now = datetime.now(UTC)
        percent = round(float(threshold) * 100)
        details = {"threshold_percent": percent, "monthly_quota": quota, "month": f"{now:%Y-%m}"}
        try:
            async with self.sessions() as session, session.begin():
                audit.record(
                    session, tenant_id=tenant_id, actor_key_id=None, action="tenant.quota_notice",
                    target=f"tenant:{tenant_id}", request_id=None, details=details,
                )  # fmt: skip
                if await tenants.get_webhook(session, tenant_id) is not None:
                    payload = {"event": "quota.threshold", "tenant_id": str(tenant_id), **details,
                               "notified_at": now.isoformat()}  # fmt: skip
                    tenants.enqueue_delivery(
                        session, tenant_id=tenant_id, event="quota.threshold", payload=payload, due_at=now
                    )
            log.info("quota.notice", tenant_id=str(tenant_id), threshold_percent=percent)
        except Exception:
            log.exception("quota.notice_failed", tenant_id=str(tenant_id), threshold_percent=percent)

    async def drain(self) -> None:
        await asyncio.gather(*self.pending, return_exceptions=True)
