"""Authentication and authorization problems (401 with a distinct type per cause, 403, 503)."""

from __future__ import annotations

from app.core.errors import AppError, register_problem

BEARER_CHALLENGE = {"www-authenticate": 'Bearer realm="deltaflow"'}


class ApiKeyMissing(AppError):
    slug = "api-key-missing"
    title = "API key required"
    status = 401
    description = "Send the key as `Authorization: Bearer <key>` or `X-API-Key: <key>`."


class ApiKeyInvalid(AppError):
    slug = "api-key-invalid"
    title = "Invalid API key"
    status = 401
    description = "The key is malformed, fails its checksum, or is not known to this service."


class ApiKeyAmbiguous(AppError):
    slug = "api-key-ambiguous"
    title = "Two different API keys"
    status = 401
    description = "`Authorization: Bearer` and `X-API-Key` carry different keys; send one."


class ApiKeyRevoked(AppError):
    slug = "api-key-revoked"
    title = "API key revoked"
    status = 401
    description = "The key was revoked; create or rotate to a new key."


class ApiKeyExpired(AppError):
    slug = "api-key-expired"
    title = "API key expired"
    status = 401
    description = "The key passed its expiry (at most 90 days after creation), or a rotation's grace period ended."


class InsufficientScope(AppError):
    slug = "insufficient-scope"
    title = "Insufficient scope"
    status = 403
    description = "The key is valid but lacks a scope this route requires; `required_scopes` lists them."


class AuthUnavailable(AppError):
    slug = "auth-unavailable"
    title = "Authentication temporarily unavailable"
    status = 503
    description = "Neither the database nor the verification cache could be reached; retry shortly."


# Answered by the nginx in front (nginx/nginx.conf, limit_req), documented here with the app's own problems.
register_problem(
    "client-rate-limited",
    "Too many requests from this address",
    429,
    "The proxy in front refused the request: one client address sent more than its per-address limit (nginx "
    "limit_req, before any key is checked); retry after `Retry-After` seconds.",
)


class RateLimited(AppError):
    slug = "rate-limited"
    title = "Rate limit exceeded"
    status = 429
    description = (
        "The tenant spent its request budget (a token bucket shared by all its keys, DELTAFLOW_RATE_LIMIT_*); "
        "`Retry-After` says when to retry. `RateLimit` and `RateLimit-Policy` headers describe the budget."
    )
