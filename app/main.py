"""Application factory: settings in, a wired FastAPI app out (lifespan, middleware order, routers)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import __version__
from app.config import Settings, get_settings
from app.core.db import create_engine, create_session_factory
from app.core.errors import install_error_handlers
from app.core.lifecycle import Lifecycle, install_sigterm_drain
from app.core.logging import configure_logging, get_logger
from app.core.middleware import BodyLimitMiddleware, RequestContextMiddleware
from app.core.redis import create_redis
from app.core.responses import OrjsonResponse
from app.core.schemas import Problem
from app.health.router import router as health_router
from app.system.router import router as system_router

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
        uninstall_drain: Callable[[], None] | None = None
        if handle_sigterm:
            uninstall_drain = install_sigterm_drain(lifecycle, settings.drain_seconds)
        lifecycle.mark_started()
        log.info("app.started", environment=settings.environment.value, version=__version__)
        try:
            yield
        finally:
            if uninstall_drain is not None:
                uninstall_drain()
            await redis.aclose()
            await engine.dispose()
            log.info("app.stopped")

    app = FastAPI(
        title="Deltaflow",
        version=__version__,
        summary="Explainable crypto trading signals from order flow, market structure and indicators.",
        default_response_class=OrjsonResponse,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.lifecycle = lifecycle
    install_error_handlers(app)
    app.include_router(health_router)
    app.include_router(system_router)
    _register_problem_schema(app)
    # Added last = outermost: the request id and access log wrap everything, including the 413 short-circuit.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware, access_log_enabled=settings.access_log)
    return app


def _register_problem_schema(app: FastAPI) -> None:
    """Make `#/components/schemas/Problem` exist for the problem+json responses every route documents."""
    original = app.openapi

    def openapi() -> dict[str, object]:
        if app.openapi_schema is None:
            schema = original()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(problem.pop("$defs", {}))
            components.setdefault("Problem", problem)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_served_app() -> FastAPI:
    """Factory for `deltaflow serve` (uvicorn imports it by name in every worker process)."""
    return create_app(get_settings(), handle_sigterm=True)
