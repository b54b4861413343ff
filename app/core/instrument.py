"""Request metrics as a pure ASGI middleware: count, latency and in-flight requests by route template.

Outermost, so it sees the status the client gets (also the 500 that `RequestContextMiddleware` makes of an
unhandled error) and times everything the app does. The route template is read after the app ran, from the
`route` the router leaves on the scope — FastAPI's own router (0.16x) leaves only the `endpoint` for a plain
Starlette route (the fast lanes), looked up in an endpoint → template table built once; a request refused before
routing (401 from auth, 429 from metering, 404) is matched against the app's routes here, off the hot path
(matching every request cost a cached signal ~60 µs: measured). Unknown methods and unmatched paths collapse into
fixed label values, so a scanner cannot create series.

Per request it adds to in-process numbers (a dict lookup, a bisect for the bucket), written to the metrics once
per `metrics_flush_seconds` (:mod:`app.core.tally` says why); `bench/bench_metrics.py` measures the cost.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import ClassVar

from prometheus_client.metrics import Counter, Histogram
from starlette.applications import Starlette
from starlette.routing import Match, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core import tally
from app.core.metrics import (
    HTTP_DURATION,
    HTTP_IN_FLIGHT,
    HTTP_REQUESTS,
    LATENCY_BUCKETS,
    check_multiprocess_values,
    mark_started,
)

UNMATCHED = "unmatched"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


def route_template(scope: Scope, endpoints: dict[object, str] | None = None) -> str:
    """The path template of the route that handled (or would handle) the request, e.g. `/v1/signals/{venue}`.
    `endpoints`: the templates of plain Starlette routes by endpoint (see :func:`endpoint_templates`)."""
    route = scope.get("route")
    if route is None and endpoints:
        template = endpoints.get(scope.get("endpoint"))
        if template is not None:
            return template
    if route is None:
        route = _match(scope)
        if route is None:
            return UNMATCHED
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return UNMATCHED
    if isinstance(route, Mount):  # a mounted app (static files): its prefix is the template
        return path + "/*"
    return path


def endpoint_templates(app: object) -> dict[object, str]:
    """Endpoint → path template of the app's plain Starlette routes, an endpoint used by several paths left out."""
    templates: dict[object, str] = {}
    shared: set[object] = set()
    for route in getattr(getattr(app, "router", None), "routes", ()):
        if type(route) is Route:  # not FastAPI's APIRoute, for which its router sets `route`
            if route.endpoint in templates:
                shared.add(route.endpoint)
            templates[route.endpoint] = route.path
    return {endpoint: path for endpoint, path in templates.items() if endpoint not in shared}


def _match(scope: Scope) -> object | None:
    app = scope.get("app")
    router = getattr(app, "router", None)
    partial = None
    for route in getattr(router, "routes", ()):
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route  # type: ignore[no-any-return]
        if match is Match.PARTIAL and partial is None:
            partial = route  # the path exists, not with this method (405)
    return partial


class _Pending:
    """One (template, method, status class)'s requests since the last flush."""

    __slots__ = ("buckets", "count", "counter", "histogram", "total")

    def __init__(self, counter: Counter, histogram: Histogram) -> None:
        self.counter, self.histogram = counter, histogram
        self.count, self.total = 0, 0.0
        self.buckets = [0] * len(BOUNDS)


class _Requests:
    in_flight = 0
    pending: ClassVar[dict[tuple[str, str, int], _Pending]] = {}


BOUNDS = (*LATENCY_BUCKETS, float("inf"))  # as the histogram's own upper bounds


def _flush() -> None:
    """Write what the requests added since the last flush (see app.core.tally) and the in-flight count now."""
    HTTP_IN_FLIGHT.set(_Requests.in_flight)
    for entry in _Requests.pending.values():
        if entry.count:
            entry.counter.inc(entry.count)
            # The histogram's own parts, as its observe() updates them: one bucket per observation, and the sum.
            entry.histogram._sum.inc(entry.total)
            for index, count in enumerate(entry.buckets):
                if count:
                    entry.histogram._buckets[index].inc(count)
            entry.count, entry.total, entry.buckets = 0, 0.0, [0] * len(BOUNDS)


tally.add_flusher(_flush)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._endpoints: dict[object, str] | None = None  # built at the first request: the routes are final then

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, self._flush_at_shutdown(send) if scope["type"] == "lifespan" else send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees if nothing was sent

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        _Requests.in_flight += 1
        if tally.idle():
            tally.request_flush()  # a long request (a stream) shows in flight before it ends
        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            elapsed = time.perf_counter() - started
            _Requests.in_flight -= 1
            method = scope["method"]
            if self._endpoints is None:
                self._endpoints = endpoint_templates(scope.get("app"))
            template = route_template(scope, self._endpoints)
            key = (template, method if method in KNOWN_METHODS else "other", status // 100)
            entry = _Requests.pending.get(key) or self._entry(key)
            entry.count += 1
            entry.total += elapsed
            entry.buckets[bisect_left(BOUNDS, elapsed)] += 1

    @staticmethod
    def _entry(key: tuple[str, str, int]) -> _Pending:
        """The labelled counter and histogram for a (template, method, status class), bound once: `labels()` costs
        more than the update itself. Templates and methods are bounded sets, so is this dict."""
        route, method, status_class = key
        labels = (route, method, STATUS_CLASSES[status_class - 1] if 1 <= status_class <= 5 else "other")
        entry = _Pending(HTTP_REQUESTS.labels(*labels), HTTP_DURATION.labels(*labels))
        _Requests.pending[key] = entry
        return entry

    @staticmethod
    def _flush_at_shutdown(send: Send) -> Send:
        async def send_after_flushing(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                tally.flush()  # the last period's counts, before the worker exits
            await send(message)

        return send_after_flushing


def install(app: Starlette, flush_seconds: float) -> None:
    """Add the middleware, outermost: call after every other `add_middleware`."""
    tally.configure(flush_seconds)
    check_multiprocess_values()
    mark_started()
    app.add_middleware(MetricsMiddleware)
