"""`GET /v1/signals/{venue}/{symbol}/stream`: the signal as Server-Sent Events, one event per bar close.

Wire format (``text/event-stream``)::

    retry: 3000                     once, first: the reconnection delay (DELTAFLOW_SIGNAL_STREAM_RETRY_MS)

    id: 1700000060000               the signal's `as_of` (close time of its newest bar, epoch ms)
    event: signal
    data: {…}                       exactly the body GET /v1/signals/{venue}/{symbol} returns, on one line

    : keep-alive                    after DELTAFLOW_SIGNAL_STREAM_HEARTBEAT_SECONDS without anything sent

Rules:

- On connect the current signal is sent at once, unless the client already has it: ``Last-Event-ID`` (the header
  EventSource sends when it reconnects, or the ``last_event_id`` query parameter for clients that cannot set
  headers; the larger wins) is at or past its ``as_of``. With no closed bar yet the stream stays open and the first
  close is sent.
- Then one event per close of the stream's timeframe. Ids strictly increase and are never repeated. If several
  closes happen while an event is being prepared or the client reads slowly, only the newest signal is sent (a
  signal on the latest bars supersedes the previous ones; nothing is queued per client).
- ``max_events=N`` ends the stream after N events (scripts, health checks, tests); streams also end after
  DELTAFLOW_SIGNAL_STREAM_MAX_SECONDS and when the instance drains for shutdown. A client reconnects with
  ``Last-Event-ID`` and misses nothing but superseded signals.

Bad input is a normal problem+json response (404 venue/symbol, 422 timeframe) because it is checked before the
stream starts; a process already serving DELTAFLOW_SIGNAL_STREAM_MAX_PER_PROCESS streams answers 503, and a tenant
already holding DELTAFLOW_SIGNAL_STREAM_MAX_PER_TENANT of them on this process gets 429 (one tenant cannot take every
slot).

Bar closes reach the process through one Redis pub/sub connection shared by all its streams
(:mod:`app.signals.hub`), and every event goes through :meth:`SignalService.resolve`, whose per-bar cache and
single flight make N clients on M instances cost one computation per close. A stream owns no task: it runs in its
request's task, and its subscription is dropped in that task's ``finally``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Annotated

import orjson
from fastapi import APIRouter, FastAPI, Header, Query, Request, Response
from redis.exceptions import RedisError

from app.auth.policy import current_principal, require
from app.auth.scopes import Scope as AuthScope
from app.config import Settings
from app.core.deps import SettingsDep
from app.core.errors import AppError
from app.core.event_stream import EVENT_STREAM, HubEventStream
from app.core.logging import get_logger
from app.core.schemas import problem_responses
from app.market.aggregation import TIMEFRAMES
from app.market.recovery import Backoff
from app.signals.hub import Admission, BarCloseHub
from app.signals.router import SignalServiceDep
from app.signals.schemas import SIGNAL_EXAMPLE
from app.signals.service import SignalQuery, SignalService, feed_freshness, with_feed
from app.trading.markets import (
    MarketDataUnavailable,
    SymbolPath,
    TimeframeInvalid,
    VenuePath,
    check_market_feed,
)

log = get_logger(__name__)

KEEP_ALIVE = b": keep-alive\n\n"
STREAM_EXAMPLE = (
    "retry: 3000\n\n"
    f"id: {SIGNAL_EXAMPLE['as_of']}\nevent: signal\ndata: {orjson.dumps(SIGNAL_EXAMPLE).decode()}\n\n"
    ": keep-alive\n\n"
)

# One event, as OpenAPI before 3.2 describes a `text/event-stream` (its `schema` applies to each event; 3.2 names
# the same object `itemSchema`): `data` is JSON text holding exactly the GET /v1/signals body.
EVENT_SCHEMA = {
    "type": "object",
    "required": ["id", "event", "data"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$", "description": "The signal's `as_of` (epoch ms)"},
        "event": {"const": "signal"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/SignalResponse"},
        },
    },
}

STREAM_DESCRIPTION = """\
Server-Sent Events. First `retry: <ms>`; then, per close of `timeframe`, an event with `id` = the signal's `as_of`
(close time of its newest bar, epoch ms), `event: signal` and `data` = the body `GET /v1/signals/{venue}/{symbol}`
returns, on one line; `: keep-alive` comments while idle.

On connect the current signal is sent unless `Last-Event-ID` (header, or the `last_event_id` query parameter;
the larger wins) is at or past its `as_of`; with no closed bar yet the stream waits for the first close. Ids
strictly increase; when several closes happen before an event is written, only the newest signal is sent.
`max_events` ends the stream after that many events; streams also end after a maximum lifetime and when the
instance drains: reconnect with `Last-Event-ID`. Bad venue, symbol or timeframe are problem+json responses; 503
when the instance serves its maximum of streams (`Retry-After`).
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    hub = BarCloseHub(app.state.redis, app.state.settings, app.state.lifecycle)
    app.state.signal_hub = hub
    try:
        yield
    finally:
        await hub.aclose()


router = APIRouter(prefix="/v1", tags=["signals"], lifespan=lifespan)


class SignalStreamsBusy(AppError):
    slug = "signal-streams-busy"
    title = "Too many signal streams"
    status = 503
    description = (
        "This instance already serves its maximum of concurrent signal streams "
        "(DELTAFLOW_SIGNAL_STREAM_MAX_PER_PROCESS); retry after `Retry-After` seconds."
    )


class TenantSignalStreamsExhausted(AppError):
    slug = "tenant-signal-streams-exhausted"
    title = "Too many signal streams for this tenant"
    status = 429
    description = (
        "The tenant already holds its maximum of concurrent signal streams on this instance "
        "(DELTAFLOW_SIGNAL_STREAM_MAX_PER_TENANT); close one, or retry after `Retry-After` seconds."
    )


@dataclass(frozen=True, slots=True)
class StreamSpec:
    venue: str
    symbol: str
    timeframe: str
    last_event_id: int  # -1: the client has nothing yet
    max_events: int | None


def _frame(as_of: int, body: bytes) -> bytes:
    # orjson never emits a raw newline, so the body is one `data:` line.
    return b"id: %d\nevent: signal\ndata: %s\n\n" % (as_of, body)


async def _next_event(service: SignalService, spec: StreamSpec, after: int) -> tuple[int, bytes] | None:
    """The current signal as an event if it is newer than `after`; None when there is nothing new (or no data)."""
    try:
        # Fresh: a wake-up may be a catch-up after lost announcements, which this process's memo missed too.
        outcome = await service.resolve(SignalQuery(spec.venue, spec.symbol, spec.timeframe), fresh=True)
    except MarketDataUnavailable:
        return None  # no closed bar yet: the first close wakes the stream
    as_of: int = orjson.loads(outcome.document)["as_of"]
    if as_of <= after:
        return None
    feed = await feed_freshness(service.redis, spec.venue, spec.symbol)
    return as_of, _frame(as_of, with_feed(outcome.document, feed))


async def _read_event(
    service: SignalService, spec: StreamSpec, after: int, backoff: Backoff
) -> tuple[tuple[int, bytes] | None, float]:
    """(the event to send or None, when to read again: never unless Redis failed). A feed that disappeared (no
    longer configured nor live) raises its AppError: nothing more will come, so the stream ends."""
    try:
        event = await _next_event(service, spec, after)
    except (RedisError, OSError) as exc:
        # Redis is briefly unreachable: keep the stream and read again (the hub's own reconnect also wakes the
        # stream for a catch-up once pub/sub is back).
        log.warning("signal_stream.read_failed", error=type(exc).__name__)
        return None, asyncio.get_running_loop().time() + backoff.next_delay()
    backoff.attempt = 0
    return event, math.inf


async def _events(
    service: SignalService, hub: BarCloseHub, settings: Settings, spec: StreamSpec
) -> AsyncGenerator[bytes, None]:
    # Subscribed before the first read of the newest bar, so a close in between wakes the stream (never lost).
    subscription = hub.subscribe(spec.venue, spec.symbol, spec.timeframe)
    try:
        yield b"retry: %d\n\n" % settings.signal_stream_retry_ms
        loop = asyncio.get_running_loop()
        heartbeat = settings.signal_stream_heartbeat_seconds
        interval = TIMEFRAMES[spec.timeframe]
        ends_at = loop.time() + settings.signal_stream_max_seconds
        base = settings.signal_stream_reconnect_base_seconds
        backoff = Backoff(base_s=base, cap_s=max(settings.signal_stream_reconnect_cap_seconds, base), stable_after_s=0)
        last_id, sent, check = spec.last_event_id, 0, True
        retry_at = math.inf
        last_write = loop.time()
        while True:
            if check:
                try:
                    event, retry_at = await _read_event(service, spec, last_id, backoff)
                except AppError as error:
                    log.info("signal_stream.feed_gone", venue=spec.venue, symbol=spec.symbol, problem=error.slug)
                    return
                newest = event[0] if event is not None else last_id
                if subscription.announced >= 0 and newest < subscription.announced + interval:
                    # The announced bar is stored (the store publishes after writing it) but the service's view
                    # is older: an in-process memo of the newest bar may not have seen the close yet. Read again
                    # shortly rather than wait for the next close, which would drop this one.
                    retry_at = min(retry_at, loop.time() + settings.signal_stream_poll_seconds)
                if event is not None:
                    last_id, frame = event
                    yield frame
                    last_write, sent = loop.time(), sent + 1
                    if spec.max_events is not None and sent >= spec.max_events:
                        return
            if hub.closing:
                return
            with suppress(TimeoutError):
                async with asyncio.timeout_at(min(last_write + heartbeat, ends_at, retry_at)):
                    await subscription.wake.wait()
            if hub.closing or loop.time() >= ends_at:
                return
            check = subscription.wake.is_set() or loop.time() >= retry_at
            subscription.wake.clear()
            if not check and loop.time() >= last_write + heartbeat:
                yield KEEP_ALIVE
                last_write = loop.time()
    finally:
        hub.unsubscribe(subscription)


@router.get(
    "/signals/{venue}/{symbol}/stream",
    summary="The signal as Server-Sent Events: one event per bar close",
    description=STREAM_DESCRIPTION,
    dependencies=[require(AuthScope.SIGNALS_READ)],
    response_class=HubEventStream,
    status_code=200,  # HubEventStream.__init__ has no status_code default for FastAPI to read
    responses={
        200: {
            "description": "`text/event-stream`: `retry:` once, then `id: <as_of>` / `event: signal` / "
            "`data: <the GET /v1/signals body>` per bar close, and `: keep-alive` comments while idle.",
            "content": {EVENT_STREAM: {"schema": EVENT_SCHEMA, "example": STREAM_EXAMPLE}},
        },
        **problem_responses(401, 403, 404, 422, 429, 503),
    },
)
async def stream(
    venue: VenuePath,
    symbol: SymbolPath,
    request: Request,
    service: SignalServiceDep,
    settings: SettingsDep,
    timeframe: Annotated[
        str,
        Query(description="1m, 5m, 15m, 1h, 4h or 1d", examples=["5m"], json_schema_extra={"enum": list(TIMEFRAMES)}),
    ] = "1m",
    last_event_id: Annotated[
        int | None, Query(ge=0, description="Resume after this id, for clients that cannot send `Last-Event-ID`")
    ] = None,
    last_event_id_header: Annotated[
        int | None, Header(alias="Last-Event-ID", ge=0, description="Resume after this id (sent by EventSource)")
    ] = None,
    max_events: Annotated[int | None, Query(ge=1, description="End the stream after this many events")] = None,
) -> Response:
    # Validated before the stream starts, so bad input is an ordinary problem response.
    await check_market_feed(service.redis, settings, venue, symbol)
    if timeframe not in TIMEFRAMES:
        raise TimeframeInvalid(f"Unknown timeframe {timeframe!r}.", extensions={"valid": list(TIMEFRAMES)})
    hub: BarCloseHub = request.app.state.signal_hub
    tenant_id = (await current_principal(request)).tenant_id
    admission = hub.admit(tenant_id)
    retry_after = {"retry-after": str(max(1, math.ceil(settings.signal_stream_retry_ms / 1000)))}
    if admission is Admission.PROCESS_FULL:
        raise SignalStreamsBusy(
            f"This instance serves {settings.signal_stream_max_per_process} signal streams already.",
            headers=retry_after,
        )
    if admission is Admission.TENANT_FULL:
        raise TenantSignalStreamsExhausted(
            f"Your tenant holds {settings.signal_stream_max_per_tenant} signal streams on this instance already.",
            extensions={"max_streams": settings.signal_stream_max_per_tenant},
            headers=retry_after,
        )
    resume = max((i for i in (last_event_id, last_event_id_header) if i is not None), default=-1)
    spec = StreamSpec(venue, symbol, timeframe, resume, max_events)
    # no-cache: each stream is live; X-Accel-Buffering: nginx must pass events through as they are written.
    headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
    return HubEventStream(_events(service, hub, settings, spec), hub, tenant_id, headers)
