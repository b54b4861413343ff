"""Browser-facing protections of the console: cookies, CSRF tokens, the same-origin check, security headers.

CSRF is refused twice over on every unsafe method: the request must come from our own origin (`Sec-Fetch-Site`,
else `Origin`, when the browser sends them) and carry the session's synchronizer token (form field `csrf` or
header `X-CSRF-Token`). Before sign-in there is no session, so the login form gets its own token: a random nonce
in a short-lived cookie, and in the form the nonce with an HMAC over it and an expiry (keyed with the server
secret), so only a page we served can post the form with the cookie the browser holds.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from urllib.parse import parse_qsl

from starlette.types import Scope

from app.config import Settings

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOGIN_TOKEN_SECONDS = 1800
CSRF_HEADER = b"x-csrf-token"
# No inline script or style anywhere: every script is a file we serve. htmx is configured not to inject its own
# indicator styles (console.js), which would otherwise need 'unsafe-inline'.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
PAGE_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
)


def session_cookie_name(settings: Settings) -> str:
    # `__Host-`: the browser only accepts it Secure, for Path=/, with no Domain (no subdomain can plant or read it).
    return "__Host-deltaflow_session" if settings.console_cookie_secure else "deltaflow_session"


def login_cookie_name(settings: Settings) -> str:
    return "__Host-deltaflow_login" if settings.console_cookie_secure else "deltaflow_login"


def cookie_header(settings: Settings, name: str, value: str, max_age: int) -> str:
    secure = "; Secure" if settings.console_cookie_secure else ""
    return f"{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"


def cookie_of(scope: Scope, name: str) -> str | None:
    wanted = name.encode()
    for header, value in scope.get("headers", ()):
        if header == b"cookie":
            for part in value.split(b";"):
                key, _, raw = part.strip().partition(b"=")
                if key == wanted:
                    cookie: str = raw.decode("latin-1")
                    return cookie
    return None


def header_of(scope: Scope, name: bytes) -> str | None:
    for header, value in scope.get("headers", ()):
        if header == name:
            text: str = value.decode("latin-1")
            return text
    return None


def same_origin(scope: Scope) -> bool:
    """False when the browser tells us the request came from another site (or from an opaque origin)."""
    fetch_site = header_of(scope, b"sec-fetch-site")
    if fetch_site is not None:
        return fetch_site in {"same-origin", "none"}
    origin = header_of(scope, b"origin")
    if origin is None:
        return True  # not a browser form or fetch (or a very old browser): the token still has to match
    host = header_of(scope, b"host") or ""
    return origin == f"{scope.get('scheme', 'http')}://{host}"


def tokens_match(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


class Form:
    """An `application/x-www-form-urlencoded` body."""

    def __init__(self, body: bytes) -> None:
        self._values: dict[str, list[str]] = {}
        for name, value in parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True):
            self._values.setdefault(name, []).append(value)

    def get(self, name: str, default: str = "") -> str:
        values = self._values.get(name)
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        return list(self._values.get(name, ()))


def new_login_token(settings: Settings) -> tuple[str, str]:
    """(cookie nonce, form token) for one login form."""
    nonce = secrets.token_urlsafe(18)
    expires = int(time.time()) + LOGIN_TOKEN_SECONDS
    return nonce, f"{nonce}.{expires}.{_sign(settings, nonce, expires)}"


def login_token_valid(settings: Settings, cookie_nonce: str | None, token: str | None) -> bool:
    if not cookie_nonce or not token or token.count(".") != 2:
        return False
    nonce, expires_text, signature = token.split(".")
    if not expires_text.isdigit() or int(expires_text) < time.time():
        return False
    expected = _sign(settings, nonce, int(expires_text))
    return hmac.compare_digest(expected, signature) and hmac.compare_digest(nonce, cookie_nonce)


def _sign(settings: Settings, nonce: str, expires: int) -> str:
    key = settings.secret_key.get_secret_value().encode()
    return hmac.new(key, f"console-login:{nonce}:{expires}".encode(), hashlib.sha256).hexdigest()
