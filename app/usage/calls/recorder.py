"""The call log's in-process side: requests append a row to a bounded buffer (never waiting), a job writes batches.

The metering middleware calls `record` once per authenticated `/v1` request, after its response: a tuple in a list,
a few microseconds. A full buffer drops the call and counts it (`dropped`, logged and shown in every call-log
page); a batch the database refuses is dropped and counted too rather than retried forever, and a batch that fails
for a transient reason (connection lost) is put back once, within the bound.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.logging import get_logger
from app.usage.calls import repository
from app.usage.calls.repository import CallRow

log = get_logger(__name__)


class CallRecorder:
    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        self.pending: list[CallRow] = []
        self.dropped = 0
        self.written = 0
        self._dropped_logged = 0

    def record(
        self,
        *,
        at: datetime,
        tenant_id: uuid.UUID,
        key_id: uuid.UUID,
        method: str,
        route: str,
        status: int,
        latency_ms: float,
        response_bytes: int,
        client_address: str | None,
        request_id: str,
        user_agent: str | None,
        cache: str | None,
    ) -> None:
        if len(self.pending) >= self.max_pending:
            self.dropped += 1
            return
        self.pending.append(
            (at, uuid.uuid4(), tenant_id, key_id, method, route, status, latency_ms, response_bytes,
             client_address, request_id, user_agent, cache)
        )  # fmt: skip

    async def flush(self, sessions: async_sessionmaker[AsyncSession]) -> int:
        batch, self.pending = self.pending, []
        if self.dropped > self._dropped_logged:
            log.warning("call_log.calls_dropped", dropped=self.dropped, since_start=True)
            self._dropped_logged = self.dropped
        if not batch:
            return 0
        try:
            async with sessions() as session, session.begin():
                await repository.insert_calls(session, batch)
        except (IntegrityError, DataError):  # the same rows would fail again: dropped, counted, not retried
            self.dropped += len(batch)
            log.error("call_log.batch_refused", calls=len(batch))
            raise
        except (SQLAlchemyError, OSError):
            room = self.max_pending - len(self.pending)
            self.pending[:0] = batch[:room]
            self.dropped += max(len(batch) - room, 0)
            raise
        self.written += len(batch)
        return len(batch)
