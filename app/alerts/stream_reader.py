"""What an alert stream sends: its cursor (the newest event sent and the ids sent within the overlap window), the
catch-ups from the table, and the announced documents not sent yet. The rules are `app.alerts.stream`'s."""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.alerts import event_repository
from app.alerts.events import event_document
from app.alerts.stream_hub import EventSubscription
from app.config import Settings
from app.core.logging import get_logger
from app.market.recovery import Backoff

log = get_logger(__name__)

Key = tuple[datetime, uuid.UUID]  # an event's place in the stream's order


@dataclass(frozen=True, slots=True)
class StreamSpec:
    tenant_id: uuid.UUID  # whose events
    resume: Key | None  # the client's last event; None: start now
    started: datetime  # the request's time (the floor of a stream started now)
    max_events: int | None


def frame(event_id: str, document: bytes) -> bytes:
    # orjson never emits a raw newline, so the document is one `data:` line.
    return b"id: %s\nevent: alert.fired\ndata: %s\n\n" % (event_id.encode(), document)


class Cursor:
    """What the stream sent: the newest key, and the ids sent within the overlap window behind it (so a catch-up
    that re-reads the window, or a message also read from the table, is not sent twice)."""

    def __init__(self, spec: StreamSpec, overlap: timedelta) -> None:
        self.overlap = overlap
        self.floor = None if spec.resume is not None else spec.started
        self.last: Key = spec.resume if spec.resume is not None else (spec.started, event_repository.NIL)
        self.sent: dict[uuid.UUID, datetime] = {}
        self._prune_at = 64
        if spec.resume is not None:
            self.sent[spec.resume[1]] = spec.resume[0]

    def read_from(self) -> Key:
        start = self.last[0] - self.overlap
        if self.floor is not None:
            start = max(start, self.floor)
        return start, event_repository.NIL

    def wanted(self, key: Key) -> bool:
        if key[1] in self.sent:
            return False
        return self.floor is None or key[0] >= self.floor

    def record(self, key: Key) -> None:
        self.sent[key[1]] = key[0]
        self.last = max(self.last, key)
        if len(self.sent) > self._prune_at:  # drop what fell out of the window (amortised: the size doubles)
            horizon = self.last[0] - self.overlap
            self.sent = {i: t for i, t in self.sent.items() if t >= horizon}
            self._prune_at = max(64, 2 * len(self.sent))


def _key_of(document: dict[str, Any]) -> Key:
    return datetime.fromisoformat(document["created_at"]).astimezone(UTC), uuid.UUID(document["id"])


async def _catch_up(
    session_factory: async_sessionmaker[AsyncSession], spec: StreamSpec, cursor: Cursor, page: int
) -> AsyncGenerator[bytes, None]:
    """The events after the cursor's window from the table, oldest first, page by page."""
    after = cursor.read_from()
    while True:
        async with session_factory() as session:
            rows = await event_repository.events_after(session, spec.tenant_id, after=after, limit=page)
            documents = [event_document(row) for row in rows]
        for document in documents:
            key = _key_of(document)
            after = max(after, key)
            if cursor.wanted(key):
                cursor.record(key)
                yield frame(document["id"], orjson.dumps(document))
        if len(rows) < page:
            return


def announced(subscription: EventSubscription, cursor: Cursor) -> list[bytes]:
    """Frames for the announced documents not sent yet (a message may repeat one the table already gave)."""
    frames = []
    while subscription.pending:
        raw = subscription.pending.popleft()
        try:
            document = orjson.loads(raw)
            key = _key_of(document)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("alert_stream.bad_message")
            continue
        if cursor.wanted(key):
            cursor.record(key)
            frames.append(frame(str(key[1]), raw))
    return frames


class TableReader:
    """The stream's catch-ups from the table: when one is due, one batch at a time, and a retry with backoff when
    the database fails (the stream stays open meanwhile)."""

    def __init__(self, session_factory: async_sessionmaker[AsyncSession], settings: Settings, spec: StreamSpec) -> None:
        self.session_factory = session_factory
        self.spec = spec
        self.page = settings.alert_stream_catch_up_page
        base = settings.alert_stream_reconnect_base_seconds
        self.backoff = Backoff(
            base_s=base, cap_s=max(settings.alert_stream_reconnect_cap_seconds, base), stable_after_s=0
        )
        self.cursor = Cursor(spec, timedelta(seconds=settings.alert_stream_overlap_seconds))
        # Every stream reads the table at once: a resumed one for what the client missed, one started now for what
        # was recorded between the request and its subscription (the channel may already be subscribed for
        # another stream of the tenant, so no confirmation would come to ask for that read).
        self.more = True  # a read is due (the first, or after a full batch: more may follow)
        self.retry_at = math.inf

    def due(self, subscription: EventSubscription, now: float) -> bool:
        return self.more or subscription.lost or now >= self.retry_at

    async def read(self, subscription: EventSubscription, now: float) -> list[bytes]:
        subscription.lost, self.more, self.retry_at = False, False, math.inf
        frames: list[bytes] = []
        try:
            async with aclosing(_catch_up(self.session_factory, self.spec, self.cursor, self.page)) as rows:
                async for frame in rows:
                    frames.append(frame)
                    if len(frames) >= self.page:
                        break
        except (SQLAlchemyError, OSError) as exc:
            log.warning("alert_stream.catch_up_failed", error=type(exc).__name__)
            self.retry_at = now + self.backoff.next_delay()
        else:
            self.backoff.attempt = 0
            self.more = len(frames) >= self.page
        return frames
