"""Call-log rules: tenant scoping (operators may name another tenant), filters, pages and the streamed export."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.core.errors import AppError
from app.core.pagination import decode_cursor, encode_cursor
from app.keys.service import Actor, resolve_tenant
from app.models import ApiCall
from app.usage.calls import repository
from app.usage.calls.recorder import CallRecorder
from app.usage.calls.repository import CallFilter
from app.usage.calls.schemas import CallPage, CallRead

EXPORT_PAGE = 1000
CSV_COLUMNS = list(CallRead.model_fields)


class CallNotFound(AppError):
    slug = "call-not-found"
    title = "Call not found"
    status = 404
    description = "No call of your tenant carries this request id (or it is older than the retention)."


def to_read(call: ApiCall) -> CallRead:
    return CallRead(
        at=call.at, request_id=call.request_id, key_id=call.api_key_id, method=call.method, route=call.route,
        status=call.status, latency_ms=round(call.latency_ms, 3), response_bytes=call.response_bytes,
        client_address=call.client_address, user_agent=call.user_agent, cache=call.cache,
    )  # fmt: skip


class CallLogService:
    def __init__(self, session: AsyncSession, settings: Settings, recorder: CallRecorder | None) -> None:
        self.session = session
        self.settings = settings
        self.recorder = recorder

    async def filter_for(
        self,
        actor: Actor,
        *,
        tenant_id: uuid.UUID | None,
        since: datetime | None,
        until: datetime | None,
        key_id: uuid.UUID | None,
        route: str | None,
        status: int | None,
        min_latency_ms: float | None,
    ) -> CallFilter:
        tenant = await resolve_tenant(self.session, actor, tenant_id)
        return CallFilter(tenant, since, until, key_id, route, status, min_latency_ms)

    async def page(self, where: CallFilter, *, cursor: str | None, limit: int) -> CallPage:
        limit = min(limit, self.settings.call_log_page_max)
        rows = await repository.page(self.session, where, after=decode_cursor(cursor), limit=limit + 1)
        items = list(rows[:limit])
        next_cursor = encode_cursor(items[-1].at, items[-1].id) if len(rows) > limit else None
        return CallPage(
            items=[to_read(call) for call in items],
            next_cursor=next_cursor,
            recorded_every_seconds=self.settings.call_log_flush_seconds,
            dropped=self.recorder.dropped if self.recorder is not None else 0,
        )

    async def by_request_id(self, actor: Actor, request_id: str, tenant_id: uuid.UUID | None) -> list[CallRead]:
        tenant = await resolve_tenant(self.session, actor, tenant_id)
        calls = await repository.by_request_id(self.session, tenant, request_id)
        if not calls:
            raise CallNotFound(f"No call with request id {request_id!r}.")
        return [to_read(call) for call in calls]


async def export(
    sessions: async_sessionmaker[AsyncSession], where: CallFilter, *, fmt: str, max_rows: int
) -> AsyncIterator[bytes]:
    """The filtered calls, newest first, a page at a time on a session of its own (the response outlives the
    request's session); at most `max_rows`."""
    if fmt == "csv":
        yield _csv_line(CSV_COLUMNS)
    sent = 0
    after: tuple[datetime, uuid.UUID] | None = None
    while sent < max_rows:
        async with sessions() as session:
            rows: Sequence[ApiCall] = await repository.page(
                session, where, after=after, limit=min(EXPORT_PAGE, max_rows - sent)
            )
        if not rows:
            return
        chunk = []
        for call in rows:
            read = to_read(call).model_dump(mode="json")
            chunk.append(orjson.dumps(read) + b"\n" if fmt == "ndjson" else _csv_line([read[c] for c in CSV_COLUMNS]))
        yield b"".join(chunk)
        sent += len(rows)
        after = (rows[-1].at, rows[-1].id)


def _csv_line(values: Sequence[object]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(["" if v is None else v for v in values])
    return buffer.getvalue().encode()
