"""What every console page shares: templates, the signed-in user, CSRF-checked forms, redirects for htmx.

Templates are Jinja2 with autoescaping on; static files are referenced through `static_url`, which adds a content
hash, so they can be cached for a year (`immutable`) and still change with a release.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from app.auth.principal import Principal
from app.auth.scopes import ROLE_SCOPES, Scope
from app.console.middleware import SESSION_STATE
from app.console.security import CSRF_HEADER, Form, header_of, tokens_match
from app.console.service import KEY_ROLE, ConsoleRole
from app.console.sessions import ConsoleSession
from app.core.errors import request_id_of
from app.keys.service import Actor

PACKAGE = Path(__file__).parent
STATIC_DIR = PACKAGE / "static"
MAX_FORM_BYTES = 64 * 1024


class LoginRequired(Exception):
    """No live session: the page answers with a redirect to the sign-in form."""


class CsrfRefused(Exception):
    """An unsafe request without the session's token."""


class ScopeMissing(Exception):
    """The user's role lacks a scope the page needs (as an API key of that role would)."""

    def __init__(self, scope: Scope) -> None:
        super().__init__(scope.value)
        self.scope = scope


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    session: ConsoleSession
    principal: Principal
    actor: Actor

    @property
    def is_operator(self) -> bool:
        return self.principal.is_operator

    @property
    def scope_names(self) -> frozenset[str]:
        return frozenset(scope.value for scope in self.principal.scopes)

    @property
    def home(self) -> str:
        """Where sign-in lands: the keys page for those who may read keys, the feeds page for viewers."""
        return "/console/keys" if Scope.KEYS_READ in self.principal.scopes else "/console/feeds"

    def require(self, *scopes: Scope) -> None:
        """The same scope rule the API's routes declare, for the page that does the same thing."""
        for scope in scopes:
            if scope not in self.principal.scopes:
                raise ScopeMissing(scope)


def current_user(request: Request) -> ConsoleUser:
    session: ConsoleSession | None = request.scope.get("state", {}).get(SESSION_STATE)
    if session is None:
        raise LoginRequired
    settings = request.app.state.settings
    role = KEY_ROLE[ConsoleRole(session.role)]
    principal = Principal(
        key_id=None,
        tenant_id=uuid.UUID(session.tenant_id),
        role=role,
        scopes=ROLE_SCOPES[role],
        expires_at=datetime.fromtimestamp(session.absolute_deadline(settings), UTC),
        name=session.email,
        user_id=session.user_uuid,
    )
    return ConsoleUser(session, principal, Actor(principal=principal, request_id=request_id_of(request.scope)))


def operator_tenant(request: Request, user: ConsoleUser) -> uuid.UUID | None:
    """Operators switch tenant with `?tenant_id=`; everyone else acts on their own (the services enforce it)."""
    raw = request.query_params.get("tenant_id")
    if not raw or not user.is_operator:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None


async def checked_form(request: Request, user: ConsoleUser | None) -> Form:
    """The urlencoded body of an unsafe request, after the CSRF token (header or `csrf` field) matched."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise CsrfRefused
    form = Form(body)
    if user is not None:
        token = header_of(request.scope, CSRF_HEADER) or form.get("csrf")
        if not tokens_match(user.session.csrf, token):
            raise CsrfRefused
    return form


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def redirect(request: Request, url: str) -> Response:
    """A full-page navigation: htmx follows `HX-Redirect`; a plain form post follows the 303."""
    if is_htmx(request):
        return Response(status_code=204, headers={"hx-redirect": url})
    return RedirectResponse(url, status_code=303)


@lru_cache(maxsize=256)
def _static_version(name: str) -> str:
    return hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]


def static_url(name: str) -> str:
    return f"/console/static/{name}?v={_static_version(name)}"


def _relative(moment: datetime | None, now: datetime | None = None) -> str:
    """'3 min ago', 'in 12 days', 'never'."""
    if moment is None:
        return "never"
    seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    future, seconds = seconds < 0, abs(seconds)
    for size, unit in ((86_400, "day"), (3600, "hour"), (60, "min")):
        if seconds >= size:
            count = int(seconds // size)
            text = f"{count} {unit}{'s' if count != 1 and unit != 'min' else ''}"
            return f"in {text}" if future else f"{text} ago"
    return "just now" if not future else "in under a minute"


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(PACKAGE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["static_url"] = static_url
    env.filters["relative"] = _relative
    env.filters["iso"] = lambda moment: "" if moment is None else moment.isoformat(timespec="seconds")
    env.filters["epoch"] = lambda seconds: datetime.fromtimestamp(seconds, UTC)
    return env


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    user: ConsoleUser | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    page = (
        environment()
        .get_template(template)
        .render(request=request, user=user, csrf=user.session.csrf if user else "", **(context or {}))
    )
    return HTMLResponse(page, status_code=status, headers=headers)
