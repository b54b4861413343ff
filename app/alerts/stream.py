"""`GET /v1/alerts/stream`: the tenant's alert events as Server-Sent Events, live, resumable with Last-Event-ID.

Wire format (``text/event-stream``)::

    retry: 3000                     once, first: the reconnection delay (DELTAFLOW_ALERT_STREAM_RETRY_MS)

    id: 0b6f3c52-…                  the event's id
    event: alert.fired
    data: {…}                       the event document (the history's item, the webhook's body), on one line

    : keep-alive                    after DELTAFLOW_ALERT_STREAM_HEARTBEAT_SECONDS without anything sent

Rules (decisions where the issue is silent):

- Without Last-Event-ID the stream starts now: the events recorded from the moment of the request on.
- With `Last-Event-ID` (the header EventSource sends when it reconnects; the `last_event_id` query parameter for
  clients that cannot set headers; the header wins, as it is the newer) the stream first sends, oldest first, the
  tenant's events recorded after that one, then goes live. An id that is not one of the tenant's events is a 422
  `alert-stream-resume-invalid` (never a silent start from now, which would lose events): re-sync from
  `GET /v1/alerts/events` and connect without it.
- Order is (created_at, id). Two instances may commit in the other order than they created, so every catch-up
  re-reads DELTAFLOW_ALERT_STREAM_OVERLAP_SECONDS before the last event sent and skips the ids it sent: within a
  connection nothing is sent twice; after a reconnect an event of that window may come again — same id, so a
  client deduplicates by id (as it must for the webhook's at-least-once delivery). Nothing is lost.
- Live events come from Redis pub/sub (`app.alerts.stream_hub`); every (re)subscription and every overflow of the
  stream's buffer (a slow client) makes the stream catch up from the table, so a lost message loses no event.
- `max_events=N` ends the stream after N events; streams also end after DELTAFLOW_ALERT_STREAM_MAX_SECONDS and
  when the instance drains for shutdown (reconnect with Last-Event-ID). 503 when the process serves its maximum of
  streams, 429 when the tenant holds its maximum on this process (both with Retry-After).
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from typing import Annotated

import orjson
from fastapi import APIRouter, FastAPI, Header, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.alerts import event_repository
from app.alerts.events import EVENT_TYPE
from app.alerts.read_router import TenantParam
from app.alerts.read_schemas import EVENT_EXAMPLE
from app.alerts.stream_hub import Admission, AlertEventHub
from app.alerts.stream_reader import Key, StreamSpec, TableReader, announced
from app.auth.policy import require
from app.auth.scopes import Scope as AuthScope
from app.config import Settings
from app.core.deps import DbSession, SettingsDep
from app.core.errors import AppError
from app.core.event_stream import EVENT_STREAM, HubEventStream
from app.core.logging import get_logger
from app.core.schemas import problem_responses
from app.keys.router import ActorDep
from app.keys.service import resolve_tenant

log = get_logger(__name__)

KEEP_ALIVE = b": keep-alive\n\n"

STREAM_EXAMPLE = (
    "retry: 3000\n\n"
    f"id: {EVENT_EXAMPLE['id']}\nevent: {EVENT_TYPE}\ndata: {orjson.dumps(EVENT_EXAMPLE).decode()}\n\n"
    ": keep-alive\n\n"
)
EVENT_SCHEMA = {
    "type": "object",
    "required": ["id", "event", "data"],
    "properties": {
        "id": {"type": "string", "format": "uuid", "description": "The alert event's id"},
        "event": {"const": EVENT_TYPE},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/AlertEventRead"},
        },
    },
}
STREAM_DESCRIPTION = """\
Server-Sent Events: `retry: <ms>` once; then per alert event of the tenant `id` = the event's id, `event:
alert.fired` and `data` = the event document (as `GET /v1/alerts/events` returns it), on one line; `: keep-alive`
comments while idle.

Without `Last-Event-ID` the stream starts with the events recorded from now on. With it (header, or the
`last_event_id` query parameter; the header wins) the events recorded after that one come first, oldest first,
then the live ones; an id that is not one of the tenant's events is a 422. After a reconnect an event recorded
within DELTAFLOW_ALERT_STREAM_OVERLAP_SECONDS before the last one may come again (same id: deduplicate by id);
none is lost. `max_events` ends the stream after that many events; streams also end after a maximum lifetime and
when the instance drains: reconnect with `Last-Event-ID`. 503 when the instance serves its maximum of streams, 429
when the tenant holds its maximum (`Retry-After`).
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    hub = AlertEventHub(app.state.redis, app.state.settings, app.state.lifecycle)
    app.state.alert_hub = hub
    try:
        yield
    finally:
        await hub.aclose()


router = APIRouter(prefix="/v1", tags=["alerts"], lifespan=lifespan)


class AlertStreamResumeInvalid(AppError):
    slug = "alert-stream-resume-invalid"
    title = "Unknown Last-Event-ID"
    status = 422
    description = (
        "`Last-Event-ID` (or `last_event_id`) is not the id of one of your tenant's alert events, so the stream "
        "cannot say what you missed. Re-sync from GET /v1/alerts/events, then connect without it."
    )


class AlertStreamsBusy(AppError):
    slug = "alert-streams-busy"
    title = "Too many alert streams"
    status = 503
    description = (
        "This instance already serves its maximum of concurrent alert streams "
        "(DELTAFLOW_ALERT_STREAM_MAX_PER_PROCESS); retry after `Retry-After` seconds."
    )


class TenantAlertStreamsExhausted(AppError):
    slug = "tenant-alert-streams-exhausted"
    title = "Too many alert streams for this tenant"
    status = 429
    description = (
        "The tenant already holds its maximum of concurrent alert streams on this instance "
        "(DELTAFLOW_ALERT_STREAM_MAX_PER_TENANT); close one, or retry after `Retry-After` seconds."
    )


async def _events(
    hub: AlertEventHub,
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    spec: StreamSpec,
) -> AsyncGenerator[bytes, None]:
    # Subscribed before anything is read: an event committed meanwhile is in the table read or announced later.
    subscription = hub.subscribe(spec.tenant_id)
    try:
        yield b"retry: %d\n\n" % settings.alert_stream_retry_ms
        loop = asyncio.get_running_loop()
        heartbeat = settings.alert_stream_heartbeat_seconds
        ends_at = loop.time() + settings.alert_stream_max_seconds
        reader = TableReader(session_factory, settings, spec)
        sent, last_write = 0, loop.time()
        while True:
            frames = await reader.read(subscription, loop.time()) if reader.due(subscription, loop.time()) else []
            frames += announced(subscription, reader.cursor)
            for frame in frames:
                yield frame
                last_write, sent = loop.time(), sent + 1
                if spec.max_events is not None and sent >= spec.max_events:
                    return
            if hub.closing or loop.time() >= ends_at:
                return
            subscription.wake.clear()
            if reader.more or subscription.pending or subscription.lost:
                continue  # more to read, or arrived while the frames were written
            with suppress(TimeoutError):
                async with asyncio.timeout_at(min(last_write + heartbeat, ends_at, reader.retry_at)):
                    await subscription.wake.wait()
            if hub.closing or loop.time() >= ends_at:
                return
            if not subscription.wake.is_set() and loop.time() >= last_write + heartbeat:
                yield KEEP_ALIVE
                last_write = loop.time()
    finally:
        hub.unsubscribe(subscription)


def _resume_id(header: str | None, query: str | None) -> uuid.UUID | None:
    raw = header if header else query
    if not raw:
        return None
    try:
        return uuid.UUID(raw.strip())
    except ValueError:
        raise AlertStreamResumeInvalid(
            "Last-Event-ID is not an alert event id.",
            extensions={"errors": [{"parameter": "Last-Event-ID", "in": "header", "detail": "not a UUID"}]},
        ) from None


@router.get(
    "/alerts/stream",
    summary="The tenant's alert events as Server-Sent Events",
    description=STREAM_DESCRIPTION,
    dependencies=[require(AuthScope.ALERTS_READ)],
    response_class=HubEventStream,
    status_code=200,  # HubEventStream.__init__ has no status_code default for FastAPI to read
    responses={
        200: {
            "description": "`text/event-stream`: `retry:` once, then `id: <event id>` / `event: alert.fired` / "
            "`data: <the event document>` per event, and `: keep-alive` comments while idle.",
            "content": {EVENT_STREAM: {"schema": EVENT_SCHEMA, "example": STREAM_EXAMPLE}},
        },
        **problem_responses(401, 403, 404, 422, 429, 503),
    },
)
async def stream(
    request: Request,
    session: DbSession,
    actor: ActorDep,
    settings: SettingsDep,
    last_event_id: Annotated[
        str | None, Query(max_length=64, description="Resume after this event, for clients that cannot send headers")
    ] = None,
    last_event_id_header: Annotated[
        str | None, Header(alias="Last-Event-ID", max_length=64, description="Resume after this event (EventSource)")
    ] = None,
    max_events: Annotated[int | None, Query(ge=1, description="End the stream after this many events")] = None,
    tenant_id: TenantParam = None,
) -> Response:
    started = datetime.now(UTC)
    tenant = await resolve_tenant(session, actor, tenant_id)
    resume: Key | None = None
    resume_id = _resume_id(last_event_id_header, last_event_id)
    if resume_id is not None:
        event = await event_repository.get_event(session, tenant, resume_id)
        if event is None:
            raise AlertStreamResumeInvalid(f"No alert event {resume_id} in the tenant: re-sync from the history.")
        resume = (event.created_at.astimezone(UTC), event.id)
    hub: AlertEventHub = request.app.state.alert_hub
    holder = actor.principal.tenant_id
    admission = hub.admit(holder)
    retry_after = {"retry-after": str(max(1, math.ceil(settings.alert_stream_retry_ms / 1000)))}
    if admission is Admission.PROCESS_FULL:
        raise AlertStreamsBusy(
            f"This instance serves {settings.alert_stream_max_per_process} alert streams already.", headers=retry_after
        )
    if admission is Admission.TENANT_FULL:
        raise TenantAlertStreamsExhausted(
            f"Your tenant holds {settings.alert_stream_max_per_tenant} alert streams on this instance already.",
            extensions={"max_streams": settings.alert_stream_max_per_tenant},
            headers=retry_after,
        )
    spec = StreamSpec(tenant, resume, started, max_events)
    headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
    events = _events(hub, request.app.state.session_factory, settings, spec)
    return HubEventStream(events, hub, holder, headers)
