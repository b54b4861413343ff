"""Wiring the console into the app: static files, pages, the console's own error pages, and its state."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.console.pages import account, auth, keys, operations, usage
from app.console.passwords import PasswordHasher
from app.console.sessions import SessionStore
from app.console.web import STATIC_DIR, CsrfRefused, LoginRequired, ScopeMissing, redirect, render
from app.core.asgi import append_header
from app.core.redis import RedisClient

# Static URLs carry a content hash (`static_url`), so a year of caching never serves a stale file.
_IMMUTABLE = (b"cache-control", b"public, max-age=31536000, immutable")


class _LongCache:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_cached(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 200:
                append_header(message, _IMMUTABLE)
            await send(message)

        await self.app(scope, receive, send_cached)


def install_console(app: FastAPI) -> None:
    app.mount("/console/static", _LongCache(StaticFiles(directory=STATIC_DIR)), name="console-static")
    for router in (auth.router, keys.router, usage.router, operations.router, account.router):
        app.include_router(router)
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(CsrfRefused, _csrf_refused)
    app.add_exception_handler(ScopeMissing, _scope_missing)


def start_console(app: FastAPI, settings: Settings, redis: RedisClient) -> None:
    """Lifespan: the session store and the password hasher (its argon2 context is built once)."""
    app.state.console_sessions = SessionStore(redis, settings)
    app.state.password_hasher = PasswordHasher(settings)


async def _login_required(request: Request, _exc: Exception) -> Response:
    return redirect(request, "/console/login")


async def _csrf_refused(request: Request, _exc: Exception) -> Response:
    message = "This form is out of date (or was not sent by the console). Reload the page and try again."
    return render(request, "error.html", {"message": message}, status=403)


async def _scope_missing(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ScopeMissing)  # noqa: S101 - registered for ScopeMissing only
    message = f"Your role does not include {exc.scope.value}, which this page needs. Ask an admin of your tenant."
    return render(request, "error.html", {"message": message}, status=403)
