"""Retention of usage counts: rows older than DELTAFLOW_USAGE_RETENTION_DAYS are deleted, at most once an hour.

Safe on every instance at once: a prune deletes whole past days, which no flush writes any more, and deleting
what another instance already deleted is a no-op.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.logging import get_logger
from app.usage import repository

log = get_logger(__name__)

PRUNE_INTERVAL_SECONDS = 3600.0


class UsageRetention:
    """Deletes counts older than `retention_days`, at most once per `interval` (the first call prunes)."""

    def __init__(
        self,
        retention_days: int,
        today: Callable[[], date],
        interval: float = PRUNE_INTERVAL_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.retention_days = retention_days
        self.today = today
        self.interval = interval
        self.monotonic = monotonic
        self._next_at: float | None = None

    async def prune_if_due(self, sessions: async_sessionmaker[AsyncSession]) -> int | None:
        """Rows deleted, or None when the last prune is less than `interval` ago."""
        now = self.monotonic()
        if self._next_at is not None and now < self._next_at:
            return None
        # Scheduled before the attempt: a failing database is retried next interval, not on every flush.
        self._next_at = now + self.interval
        cutoff = self.today() - timedelta(days=self.retention_days)
        async with sessions() as session, session.begin():
            deleted = await repository.delete_before(session, cutoff)
        if deleted:
            log.info("usage.pruned", rows=deleted, before=cutoff.isoformat())
        return deleted
