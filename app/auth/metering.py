"""What an authenticated `/v1` request costs its tenant: rate-limit tokens in, a usage count and a call-log row out
(pure ASGI).

Sits right inside `AuthMiddleware`, which leaves the principal and the matched route rule on the scope. Per
request: take one of the tenant's in-progress slots on this instance (`app.auth.concurrency`; none free → 429
`concurrency-limited`, before any token is spent), spend one token of the tenant's bucket (`app.auth.ratelimit`;
refused → 429 problem with `Retry-After`),
add `RateLimit` / `RateLimit-Policy` headers to the response, and count the request by tenant, key, route template
and final status in the in-process usage meter (flushed to the database in batches, off the request path).
A refused request is counted too: tenants see how often they were throttled.
"""

from __future__ import annotations

import math
import uuid
from typing import Protocol

from starlette.datastructures import State
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth.calls import CALL_LOG_STATE, CallLog, RequestCall
from app.auth.concurrency import ConcurrencyLimited, TenantConcurrency, TenantSlot, tenant_concurrency_from
from app.auth.errors import RateLimited
from app.auth.middleware import ROUTE_RULE_STATE
from app.auth.principal import Principal
from app.auth.quota import QuotaExceeded, QuotaLedger
from app.auth.ratelimit import POLICY_NAME, RateLimiter, RateLimitPolicy, rate_limiter_from_settings
from app.config import Settings
from app.core.asgi import append_header
from app.core.errors import app_error_response
from app.core.metrics import RATE_LIMIT_REFUSALS
from app.core.redis import RedisClient

RATE_LIMITER_STATE = "rate_limiter"
USAGE_METER_STATE = "usage_meter"
QUOTA_LEDGER_STATE = "quota_ledger"
TENANT_CONCURRENCY_STATE = "tenant_concurrency"
UNMATCHED_ROUTE = "unmatched"


class UsageRecorder(Protocol):
    def record(self, tenant_id: uuid.UUID, key_id: uuid.UUID, route: str, status: int) -> None: ...


class MeteringMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        for limit in ("rate", "quota", "concurrency"):  # exported at 0 from the start
            RATE_LIMIT_REFUSALS.labels(limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.get("state")
        principal = state.get("principal") if scope["type"] == "http" and state else None
        if not isinstance(principal, Principal):  # not /v1, or refused by the auth middleware already
            await self.app(scope, receive, send)
            return
        app_state = scope["app"].state
        assert state is not None  # noqa: S101 - the principal came from it
        limiter: RateLimiter | None = getattr(app_state, RATE_LIMITER_STATE, None)
        meter: UsageRecorder | None = getattr(app_state, USAGE_METER_STATE, None)
        calls: CallLog | None = getattr(app_state, CALL_LOG_STATE, None)
        call = RequestCall() if calls is not None else None
        rule = state.get(ROUTE_RULE_STATE)
        path = rule.path if rule is not None else UNMATCHED_ROUTE
        route = f"{scope['method']} {path}" if rule is not None else UNMATCHED_ROUTE
        try:
            slot, rate_headers = await _pass_limits(principal, app_state, limiter)
        except (ConcurrencyLimited, RateLimited, QuotaExceeded) as refusal:
            _count_refusal(refusal, principal, meter, route)
            await app_error_response(scope, refusal)(scope, receive, send)
            if call is not None and calls is not None:
                call.status = refusal.status
                call.log(calls, scope, principal, path)
            return
        if slot is None and meter is None and call is None and not rate_headers:
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets if the app raises before it responds

        async def send_metered(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if slot is not None and _is_event_stream(message):
                    slot.release()  # a stream lives for hours; the per-tenant stream bound covers it from here
                if status != RateLimited.status:  # a 429 from inside (`charge_extra`) carries its own
                    for header in rate_headers:
                        append_header(message, header)
                if call is not None:
                    call.status = status
                    for name, value in message.get("headers", ()):
                        if name == b"x-cache":
                            call.cache = value.decode("latin-1")[:4]
            elif call is not None and message["type"] == "http.response.body":
                call.bytes += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_metered)
        finally:
            if slot is not None:
                slot.release()
            if meter is not None and principal.key_id is not None:  # /v1 principals are keys; never None here
                meter.record(principal.tenant_id, principal.key_id, route, status)
            if call is not None and calls is not None:
                call.log(calls, scope, principal, path)


def install_tenant_limits(app_state: State, settings: Settings, redis: RedisClient) -> None:
    """The rate limiter and the concurrency limiter every authenticated request passes (see the module doc)."""
    setattr(app_state, RATE_LIMITER_STATE, rate_limiter_from_settings(settings, redis))
    concurrency = tenant_concurrency_from(
        settings.tenant_max_in_flight, settings.tenant_concurrency_retry_after_seconds
    )
    setattr(app_state, TENANT_CONCURRENCY_STATE, concurrency)


_REFUSAL_LABELS = {ConcurrencyLimited: "concurrency", RateLimited: "rate", QuotaExceeded: "quota"}


def _count_refusal(
    refusal: ConcurrencyLimited | RateLimited | QuotaExceeded,
    principal: Principal,
    meter: UsageRecorder | None,
    route: str,
) -> None:
    """Refusals are metered too: tenants see how often they were throttled, operators by which limit."""
    RATE_LIMIT_REFUSALS.labels(_REFUSAL_LABELS[type(refusal)]).inc()
    if meter is not None and principal.key_id is not None:
        meter.record(principal.tenant_id, principal.key_id, route, refusal.status)


async def _pass_limits(
    principal: Principal, app_state: State, limiter: RateLimiter | None
) -> tuple[TenantSlot | None, tuple[tuple[bytes, bytes], ...]]:
    """One of the tenant's in-progress slots on this instance (None: not limited), then a token and a request of
    its quota; the headers that describe them. Raises the refusal (the slot given back): concurrency first, so a
    request refused for it costs neither a token nor quota."""
    concurrency: TenantConcurrency | None = getattr(app_state, TENANT_CONCURRENCY_STATE, None)
    slot = concurrency.admit(principal.tenant_id) if concurrency is not None else None
    try:
        headers = await _spend_token(principal, limiter)
        headers += await _spend_quota(principal, getattr(app_state, QUOTA_LEDGER_STATE, None))
    except BaseException:
        if slot is not None:
            slot.release()
        raise
    return slot, headers


def _is_event_stream(start: Message) -> bool:
    return any(
        name == b"content-type" and value.startswith(b"text/event-stream") for name, value in start.get("headers", ())
    )


async def _spend_token(principal: Principal, limiter: RateLimiter | None) -> tuple[tuple[bytes, bytes], ...]:
    """One token of the tenant's bucket; the RateLimit headers to send (none when not limited). Raises
    `RateLimited` when the bucket is empty."""
    policy = policy_of(principal, limiter)
    if limiter is None or policy is None:
        return ()
    remaining = await limiter.acquire(principal.tenant_id, policy=policy)
    reset = math.ceil(max(policy.burst - remaining, 0) / policy.per_second)
    return (
        (b"ratelimit", f'"{POLICY_NAME}";r={remaining};t={reset}'.encode("latin-1")),
        (b"ratelimit-policy", policy.header),
    )


async def _spend_quota(principal: Principal, ledger: QuotaLedger | None) -> tuple[tuple[bytes, bytes], ...]:
    """One request of the tenant's monthly quota, if it has one; the X-Quota-* headers to send. Raises
    `QuotaExceeded` when the month's quota is used up."""
    if ledger is None or principal.monthly_quota is None:
        return ()
    state = await ledger.spend(principal.tenant_id, principal.monthly_quota)
    return state.headers


async def charge_extra(scope: Scope, tokens: int) -> None:
    """Spend `tokens` more of the caller's budget, for a request that does the work of several (a batch item
    costs what a single request does). Raises `RateLimited` (→ 429) when the bucket does not hold them all; none of
    them is spent then (the request's own token is)."""
    limiter: RateLimiter | None = getattr(scope["app"].state, RATE_LIMITER_STATE, None)
    principal = scope.get("state", {}).get("principal")
    if tokens > 0 and isinstance(principal, Principal):
        policy = policy_of(principal, limiter)
        # The request paid one token already: together at most the whole bucket, or a batch larger than the
        # tenant's burst could never pass (it then costs exactly one full bucket).
        extra = min(tokens, policy.burst - 1) if policy is not None else 0
        if limiter is not None and policy is not None and extra > 0:
            await limiter.acquire(principal.tenant_id, extra, policy=policy)


def policy_of(principal: Principal, limiter: RateLimiter | None) -> RateLimitPolicy | None:
    """The tenant's own budget, else the service default (None: not limited)."""
    if limiter is None:
        return None
    return principal.rate_limit or limiter.default_policy
