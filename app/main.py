"""Application factory: settings in, a wired FastAPI app out (lifespan, middleware order, routers)."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from granian.utils.proxies import wrap_asgi_with_proxy_headers
from starlette.routing import compile_path
from starlette.types import ASGIApp

from app import __version__
from app.alerts.engine import start_alert_engine
from app.alerts.read_router import router as alert_read_router
from app.alerts.router import router as alerts_router
from app.alerts.stream import router as alert_stream_router
from app.auth.metering import MeteringMiddleware, install_tenant_limits
from app.auth.middleware import AuthMiddleware
from app.auth.policy import RouteRule, add_security_to_openapi, compile_policy, iter_api_routes
from app.config import ServerKind, Settings, get_settings
from app.console.app import install_console, start_console
from app.console.middleware import ConsoleMiddleware
from app.core import fast_lane
from app.core.compression import GzipMiddleware
from app.core.db import create_engine, create_session_factory
from app.core.db_errors import install_db_error_handlers
from app.core.errors import ROUTE_METHODS_STATE, install_error_handlers
from app.core.heap import startup_heap_freezer
from app.core.instrument import install as install_metrics
from app.core.lifecycle import Lifecycle, install_drain_signal, install_sigterm_drain, sigterm_drains_worker
from app.core.logging import configure_logging, get_logger
from app.core.middleware import BodyLimitMiddleware, RequestContextMiddleware
from app.core.openapi import add_standard_problems, omit_null_parameters
from app.core.redis import create_redis
from app.core.responses import OrjsonResponse
from app.core.schemas import Problem
from app.core.serving import (
    DRAIN_SIGNAL,
    die_with_supervisor,
    granian_stops_on_first_signal,
    under_deltaflow_supervisor,
)
from app.health.router import router as health_router
from app.keys.router import me_router
from app.keys.router import router as keys_router
from app.keys.runtime import start_key_services
from app.market.runtime import start_ingestion
from app.signals.analysis import router as analysis_router
from app.signals.router import router as signals_router
from app.signals.stream import router as signal_stream_router
from app.signals.track_record import router as track_record_router
from app.system.docs import install_docs
from app.system.router import router as system_router
from app.tenants.router import router as tenants_router
from app.trading.markets import router as markets_router
from app.trading.router import router as trading_router
from app.usage.calls.router import router as calls_router
from app.usage.router import router as usage_router
from app.usage.runtime import start_usage_services
from app.webhooks.router import router as webhooks_router

log = get_logger(__name__)


def create_app(settings: Settings | None = None, *, handle_sigterm: bool = False) -> FastAPI:
    """Build the ASGI app. `handle_sigterm` is set only by `deltaflow serve`: the drain hooks process signals."""
    settings = settings or get_settings()
    configure_logging(settings)
    lifecycle = Lifecycle()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings)
        redis = create_redis(settings)
        app.state.engine = engine
        app.state.session_factory = create_session_factory(engine)
        app.state.redis = redis
        if settings.console_enabled:
            start_console(app, settings, redis)
        # In-process market ingestion (`serve --with-ingest`); a Redis lease keeps one ingestor per feed.
        ingestion = start_ingestion(settings, redis) if settings.ingest_in_process else None
        stop_key_services = await start_key_services(app, settings, redis, app.state.session_factory)
        # Alert rules evaluated at every bar close, once across instances (a Redis claim per close).
        stop_alert_engine = await start_alert_engine(app, settings, redis, app.state.session_factory)
        install_tenant_limits(app.state, settings, redis)
        stop_usage_services = await start_usage_services(app, settings, app.state.session_factory, redis)
        uninstall_drain = _install_drain(lifecycle, settings) if handle_sigterm else None
        lifecycle.mark_started()
        log.info("app.started", environment=settings.environment.value, version=__version__)
        try:
            yield
        finally:
            if uninstall_drain is not None:
                uninstall_drain()
            await stop_usage_services()
            await stop_alert_engine()
            await stop_key_services()
            if ingestion is not None:
                await ingestion.aclose()
            await redis.aclose()
            await engine.dispose()
            log.info("app.stopped")

    app = FastAPI(
        title="Deltaflow",
        version=__version__,
        summary="Explainable crypto trading signals from order flow, market structure and indicators.",
        default_response_class=OrjsonResponse,
        lifespan=lifespan,
        docs_url=None,  # served with local assets by install_docs
        redoc_url=None,
        **_telemetry_off(),
    )
    app.state.settings = settings
    app.state.lifecycle = lifecycle
    app.state.served = handle_sigterm  # a `deltaflow serve` process: background start-up work (worker pools) runs
    install_error_handlers(app)
    install_db_error_handlers(app)
    _include_routers(app, served=handle_sigterm)
    if settings.console_enabled:
        install_console(app)
    install_docs(app)
    _index_route_methods(app)
    # Compiled after every router is included: a /v1 route without a scope declaration fails start-up here.
    policy = compile_policy(app.routes, documented_paths=app.openapi()["paths"])
    app.openapi_schema = None  # regenerated with the security requirements below
    _register_problem_schema(app, policy)
    _add_middleware(app, settings, policy)
    return app


def _install_drain(lifecycle: Lifecycle, settings: Settings) -> Callable[[], None] | None:
    """The SIGTERM drain of a served process; returns its uninstaller (None where the server drains itself)."""
    if settings.server is ServerKind.UVICORN:
        return install_sigterm_drain(lifecycle, settings.drain_seconds)
    if under_deltaflow_supervisor():
        # A lone SIGTERM (not from the supervisor) stops the worker after the drain and the shutdown timeout.
        return sigterm_drains_worker(lifecycle, settings.drain_seconds + settings.shutdown_timeout_seconds)
    return None


def _telemetry_off() -> dict[str, Any]:
    """FastAPI's built-in OpenTelemetry, switched off where the installed FastAPI has it (0.16x).

    Deltaflow exports no traces (its observability is the JSON log with request ids, and its own Prometheus
    metrics: app.core.metrics), yet with the defaults every request asked the global OpenTelemetry providers whether
    one had been configured — environment lookups and span bookkeeping on each request: ~7 µs of a ~65 µs
    `/healthz` in-process (best of 5 runs)."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}}


def _include_routers(app: FastAPI, *, served: bool) -> None:
    # FastAPI tries included routers in order, descending into each: the most requested paths go first, the
    # signals clients poll before even the probes (a load balancer asks a few times a second), administration
    # last. Measured: a cached signal spent a third of its in-process time in route matching when its router came
    # seventh, and ~15% more (~25 µs) behind the probe and key-check routers than in front of them.
    app.include_router(signals_router)
    app.include_router(health_router)
    app.include_router(me_router)
    app.include_router(signal_stream_router)
    app.include_router(analysis_router)
    app.include_router(track_record_router)
    app.include_router(markets_router)
    app.include_router(trading_router)
    app.include_router(keys_router)
    app.include_router(tenants_router)
    app.include_router(usage_router)
    app.include_router(calls_router)
    # Before the rules router: its `/v1/alerts/{rule_id}` would take `events`, `stream` and `test` as rule ids.
    app.include_router(alert_read_router)
    app.include_router(alert_stream_router)
    app.include_router(alerts_router)
    app.include_router(webhooks_router)
    app.include_router(system_router)
    fast_lane.install(app)
    if served:  # a served process (not tests, which build many apps in one process)
        app.include_router(startup_heap_freezer())


def _add_middleware(app: FastAPI, settings: Settings, policy: tuple[RouteRule, ...]) -> None:
    # Each add_middleware wraps the previous: request context (outermost) → gzip → console (on /console only) →
    # auth (on /v1 only) → metering (rate limit, usage) → body limit → routes.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(MeteringMiddleware)
    app.add_middleware(AuthMiddleware, rules=policy, sunset_warning_days=settings.key_sunset_warning_days)
    if settings.console_enabled:  # sessions, CSRF origin check and page headers on /console only
        app.add_middleware(ConsoleMiddleware, settings=settings)
    if settings.gzip_level > 0:
        # Compresses only for clients that accept gzip and bodies of at least `gzip_min_bytes`; never buffers
        # event streams (SSE). See app.core.compression for why not Starlette's.
        app.add_middleware(
            GzipMiddleware,
            minimum_size=settings.gzip_min_bytes,
            level=settings.gzip_level,
            thread_minimum_size=settings.gzip_thread_min_bytes,
        )
    app.add_middleware(RequestContextMiddleware, access_log_enabled=settings.access_log)
    if settings.metrics_port is not None:  # outermost: the status the client gets, the whole time taken
        install_metrics(app, settings.metrics_flush_seconds)


def _index_route_methods(app: FastAPI) -> None:
    """(path pattern, methods) of every route, for complete `Allow` headers on 405 responses."""
    index = [(compile_path(path)[0], methods) for path, methods, _ in iter_api_routes(app.routes)]
    setattr(app.state, ROUTE_METHODS_STATE, index)


def _register_problem_schema(app: FastAPI, policy: tuple[RouteRule, ...]) -> None:
    """`#/components/schemas/Problem` for the problem+json responses, and each route's security requirements."""
    original = app.openapi

    def openapi() -> dict[str, object]:
        if app.openapi_schema is None:
            schema = original()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(problem.pop("$defs", {}))
            components.setdefault("Problem", problem)
            add_security_to_openapi(schema, policy)
            add_standard_problems(schema)
            omit_null_parameters(schema)
            for unused in ("HTTPValidationError", "ValidationError"):  # replaced by Problem everywhere
                components.pop(unused, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_served_app() -> ASGIApp:
    """Factory for `deltaflow serve` (the server imports it by name in every worker process).

    Under granian the app is wrapped to honour ``X-Forwarded-For``/``-Proto`` from `forwarded_allow_ips` (the
    nginx in front), as uvicorn's ``proxy_headers`` does for it.
    """
    settings = get_settings()
    app = create_app(settings, handle_sigterm=True)
    if settings.server is not ServerKind.GRANIAN:
        return app
    install_drain_signal(app.state.lifecycle, DRAIN_SIGNAL)
    die_with_supervisor()
    granian_stops_on_first_signal()
    wrapped: ASGIApp = wrap_asgi_with_proxy_headers(app, trusted_hosts=settings.forwarded_allow_ips)
    return wrapped
