"""Call-log housekeeping, at start-up and hourly: daily partitions created ahead, old ones dropped (PostgreSQL), old
rows deleted (SQLite). Safe on every instance at once: creation checks first and a lost race is only logged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.core.logging import get_logger
from app.usage.calls import repository

log = get_logger(__name__)


async def maintain(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
    today = datetime.now(UTC).date()
    cutoff = today - timedelta(days=settings.call_log_retention_days - 1)
    try:
        async with sessions() as session, session.begin():
            if session.get_bind().dialect.name == "postgresql":
                created = await repository.ensure_partitions(
                    session, today - timedelta(days=1), settings.call_log_partitions_ahead_days + 1
                )
                dropped = await repository.drop_partitions_before(session, cutoff)
                if created or dropped:
                    log.info("call_log.partitions", created=created, dropped=dropped)
            await repository.delete_before(session, datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=UTC))
    except (SQLAlchemyError, OSError) as error:  # another instance made the partition first, or the database is away
        log.warning("call_log.maintenance_failed", error=type(error).__name__)
