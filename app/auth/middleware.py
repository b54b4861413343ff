"""The one place `/v1` requests are authenticated and authorised, before any handler runs (pure ASGI).

Order of checks: key present → well-formed with a valid checksum (no I/O) → verified (caches, then database) →
not revoked, not expired → holds the scopes the matched route declared → names only query parameters the route
documents (422 otherwise). Failures are problem+json: 401 with a
distinct type per cause, 403 for missing scopes, 503 when the key store is unreachable. Keys close to expiry get
`Sunset` (RFC 8594) on every response.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import format_datetime

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth.calls import CALL_LOG_STATE, CallLog, RequestCall
from app.auth.errors import (
    BEARER_CHALLENGE,
    ApiKeyAmbiguous,
    ApiKeyExpired,
    ApiKeyInvalid,
    ApiKeyMissing,
    ApiKeyRevoked,
    InsufficientScope,
)
from app.auth.policy import PROTECTED_PREFIX, RouteRule, match_rule, refuse_unknown_query
from app.auth.principal import Principal
from app.auth.verifier import KeyVerifier
from app.core.asgi import append_header
from app.core.errors import AppError, app_error_response
from app.core.metrics import AUTH_FAILURES

# Where the middleware leaves the matched route's rule for the layers inside it (usage metering).
ROUTE_RULE_STATE = "route_rule"


def _extract_key(scope: Scope) -> str | None:
    """The key from `Authorization: Bearer` or `X-API-Key`. Two different keys are refused rather than one picked:
    a request must not be authorised by one credential while carrying another (RFC 6750 §2: one method per
    request), and a client sending both usually has a stale one it believes is in use."""
    bearer: str | None = None
    api_key: str | None = None  # "" when the header is present but empty: still a second credential
    name: bytes
    value: bytes
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            bearer = credentials.strip() or None if scheme.lower() == "bearer" else bearer
        elif name == b"x-api-key":
            api_key = value.decode("latin-1").strip()
    if bearer is not None and api_key is not None and bearer != api_key:
        raise ApiKeyAmbiguous("Send one API key, in `Authorization: Bearer` or in `X-API-Key`, not two different ones.")
    return bearer or api_key or None


class AuthMiddleware:
    def __init__(self, app: ASGIApp, *, rules: Sequence[RouteRule], sunset_warning_days: int) -> None:
        self.app = app
        self.rules = rules
        self.sunset_warning_seconds = sunset_warning_days * 86_400
        for refusal in (ApiKeyMissing, ApiKeyInvalid, ApiKeyRevoked, ApiKeyExpired, InsufficientScope):
            AUTH_FAILURES.labels(refusal.slug)  # the common causes exported at 0 from the start

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not (path == PROTECTED_PREFIX or path.startswith(PROTECTED_PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        verifier: KeyVerifier = scope["app"].state.key_verifier
        principal: Principal | None = None
        try:
            principal = await self._authenticate(verifier, scope)
            rule = self._authorise(principal, scope)
        except AppError as error:
            AUTH_FAILURES.labels(error.slug).inc()
            challenge = BEARER_CHALLENGE if error.status == 401 else None
            await app_error_response(scope, error, extra_headers=challenge)(scope, receive, send)
            calls: CallLog | None = getattr(scope["app"].state, CALL_LOG_STATE, None)
            if principal is not None and calls is not None:  # refused, but by a key we know: the tenant's call
                call = RequestCall()
                call.status = error.status
                matched = match_rule(self.rules, scope["path"], scope["method"])
                call.log(calls, scope, principal, matched.path if matched is not None else "unmatched")
            return
        state = scope.setdefault("state", {})
        state["principal"] = principal
        state[ROUTE_RULE_STATE] = rule
        structlog.contextvars.bind_contextvars(key_id=str(principal.key_id), tenant_id=str(principal.tenant_id))
        try:
            await self.app(scope, receive, self._with_sunset(principal, send))
        finally:
            structlog.contextvars.unbind_contextvars("key_id", "tenant_id")

    async def _authenticate(self, verifier: KeyVerifier, scope: Scope) -> Principal:
        raw_key = _extract_key(scope)
        if raw_key is None:
            raise ApiKeyMissing("Send an API key as `Authorization: Bearer <key>` or `X-API-Key: <key>`.")
        return await verifier.verify(raw_key)

    def _authorise(self, principal: Principal, scope: Scope) -> RouteRule | None:
        rule = match_rule(self.rules, scope["path"], scope["method"])
        if rule is not None and not principal.has(rule.scopes):
            missing = sorted(scope.value for scope in rule.scopes - principal.scopes)
            raise InsufficientScope(
                f"This route requires {', '.join(missing)}.",
                extensions={
                    "required_scopes": sorted(s.value for s in rule.scopes),
                    "granted_scopes": sorted(s.value for s in principal.scopes),
                },
            )
        if rule is not None:
            refuse_unknown_query(rule, scope.get("query_string", b""))
        return rule

    def _with_sunset(self, principal: Principal, send: Send) -> Send:
        expires = principal.expires_at.timestamp()
        if expires - time.time() > self.sunset_warning_seconds:
            return send
        sunset = format_datetime(datetime.fromtimestamp(expires, UTC), usegmt=True).encode("latin-1")

        async def send_with_sunset(message: Message) -> None:
            if message["type"] == "http.response.start":
                append_header(message, (b"sunset", sunset))
            await send(message)

        return send_with_sunset
