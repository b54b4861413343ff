"""The console's own middleware (pure ASGI), active on `/console` only: everything else — `/v1`, the probes — passes
through after one prefix test and never touches a session.

On console paths: security headers on every page (CSP without inline code, no framing, no caching), unsafe
methods from another origin refused (403), and the session loaded from its cookie into the request state. Redis
unreachable: a 503 page with `Retry-After` (the API, which does not need sessions, is unaffected).
"""

from __future__ import annotations

import structlog
from redis.exceptions import RedisError
from starlette.responses import HTMLResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.console.security import PAGE_HEADERS, UNSAFE_METHODS, cookie_of, same_origin, session_cookie_name
from app.console.sessions import SessionStore
from app.core.asgi import append_header
from app.core.logging import get_logger

CONSOLE_PREFIX = "/console"
STATIC_PREFIX = "/console/static/"
SESSION_STATE = "console_session"
SESSION_STORE_STATE = "console_sessions"
log = get_logger(__name__)


def _page(status: int, title: str, message: str, headers: dict[str, str] | None = None) -> HTMLResponse:
    body = (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>"
        f"{title} · Deltaflow</title></head><body><main><h1>{title}</h1><p>{message}</p>"
        '<p><a href="/console/login">Back to sign-in</a></p></main></body></html>'
    )
    return HTMLResponse(body, status_code=status, headers=headers)


class ConsoleMiddleware:
    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.cookie = session_cookie_name(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not (path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        if path.startswith(STATIC_PREFIX):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                for header in PAGE_HEADERS:
                    append_header(message, header)
            await send(message)

        if scope["method"] in UNSAFE_METHODS and not same_origin(scope):
            log.warning("console.cross_origin_refused", path=path)
            page = _page(403, "Request refused", "This form was sent from another site, so it was not accepted.")
            await page(scope, receive, send_with_headers)
            return
        store: SessionStore = scope["app"].state.console_sessions
        cookie = cookie_of(scope, self.cookie)
        try:
            session = await store.load(cookie) if cookie else None
        except RedisError as error:
            log.warning("console.sessions_unavailable", error=type(error).__name__)
            page = _page(
                503,
                "Console temporarily unavailable",
                "The session store cannot be reached. The API is not affected. Try again in a minute.",
                {"retry-after": "30"},
            )
            await page(scope, receive, send_with_headers)
            return
        scope.setdefault("state", {})[SESSION_STATE] = session
        if session is not None:
            structlog.contextvars.bind_contextvars(user_id=session.user_id, tenant_id=session.tenant_id)
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            if session is not None:
                structlog.contextvars.unbind_contextvars("user_id", "tenant_id")
