"""RFC 9457 problem details: the one shape every error response takes.

Domain code raises `AppError` subclasses (status, type slug and title live on the class); one set of handlers
renders them, FastAPI's validation errors and Starlette's HTTP errors as `application/problem+json` with `type`,
`title`, `status`, `detail`, `instance` and `request_id`. Problem `type`s are relative URI references
(`/problems/<slug>`) that the service itself documents at `GET /problems/{slug}`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, ClassVar

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Scope

from app.core.logging import get_logger

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "/problems/"
PROBLEM_LOG = get_logger(__name__)


class ProblemType:
    """A documented problem type: what `/problems/<slug>` explains."""

    def __init__(self, slug: str, title: str, status: int, description: str) -> None:
        self.slug = slug
        self.title = title
        self.status = status
        self.description = description

    @property
    def uri(self) -> str:
        return PROBLEM_TYPE_PREFIX + self.slug


PROBLEM_TYPES: dict[str, ProblemType] = {}


def register_problem(slug: str, title: str, status: int, description: str) -> ProblemType:
    problem = ProblemType(slug, title, status, description)
    PROBLEM_TYPES[slug] = problem
    return problem


class AppError(Exception):
    """Base for every error a client may see. Subclasses set `slug`, `title`, `status` and `description`."""

    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal server error"
    status: ClassVar[int] = 500
    description: ClassVar[str] = "The server failed to handle the request; the request id identifies it in the logs."

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register_problem(cls.slug, cls.title, cls.status, cls.description)

    def __init__(
        self,
        detail: str | None = None,
        *,
        extensions: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extensions = dict(extensions or {})
        self.headers = dict(headers or {})


register_problem(AppError.slug, AppError.title, AppError.status, AppError.description)


class PayloadTooLarge(AppError):
    slug = "payload-too-large"
    title = "Request body too large"
    status = 413
    description = "The request body exceeds the configured limit (DELTAFLOW_MAX_BODY_BYTES)."


class BodyTooLarge(StarletteHTTPException):
    """Raised while a streamed body is read. An HTTPException, because FastAPI turns any other exception raised
    during body parsing into a 400; rendered as the `payload-too-large` problem."""

    def __init__(self, detail: str) -> None:
        super().__init__(status_code=413, detail=detail, headers={"connection": "close"})


class MalformedJson(AppError):
    slug = "malformed-json"
    title = "Malformed JSON body"
    status = 400
    description = "The request body is not syntactically valid JSON."


class ServiceUnavailable(AppError):
    slug = "service-unavailable"
    title = "Service unavailable"
    status = 503
    description = "A dependency the request needs is unreachable, or the instance is starting or draining."


VALIDATION_PROBLEM = register_problem(
    "validation-failed",
    "Request validation failed",
    422,
    "One or more parts of the request are invalid; `errors` points at each offending field.",
)
_HTTP_PROBLEMS = {
    404: register_problem("not-found", "Not found", 404, "No resource exists at this URL."),
    405: register_problem(
        "method-not-allowed",
        "Method not allowed",
        405,
        "The resource exists but not for this method; see Allow.",
    ),
    413: PROBLEM_TYPES[PayloadTooLarge.slug],
}


def problem_for_status(status: int) -> ProblemType:
    """The documented problem for a bare HTTP status (404, 405 …), a generic one for others."""
    known = _HTTP_PROBLEMS.get(status)
    if known is not None:
        return known
    phrase = _status_phrase(status)
    slug = f"http-{status}"
    return PROBLEM_TYPES.get(slug) or register_problem(slug, phrase, status, f"HTTP {status} {phrase}.")


def _status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_body(
    *,
    problem: ProblemType,
    detail: str,
    instance: str,
    request_id: str | None,
    status: int | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> bytes:
    body: dict[str, Any] = {
        "type": problem.uri,
        "title": problem.title,
        "status": status or problem.status,
        "detail": detail,
        "instance": instance,
        "request_id": request_id,
    }
    if extensions:
        # Extensions never override the standard members.
        body.update({key: value for key, value in extensions.items() if key not in body})
    return orjson.dumps(body)


def problem_response(
    scope: Scope,
    *,
    problem: ProblemType,
    detail: str,
    status: int | None = None,
    extensions: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    content = problem_body(
        problem=problem,
        detail=detail,
        instance=scope.get("path", ""),
        request_id=request_id_of(scope),
        status=status,
        extensions=extensions,
    )
    return Response(
        content,
        status_code=status or problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=dict(headers or {}),
    )


def app_error_response(scope: Scope, error: AppError, *, extra_headers: Mapping[str, str] | None = None) -> Response:
    """The problem response for a raised `AppError`, also for middleware that answers before any route runs."""
    headers = {**error.headers, **extra_headers} if extra_headers else error.headers
    return problem_response(
        scope, problem=PROBLEM_TYPES[error.slug], detail=error.detail, extensions=error.extensions, headers=headers
    )


def request_id_of(scope: Scope) -> str | None:
    state = scope.get("state")
    if isinstance(state, dict):
        value = state.get("request_id")
        return value if isinstance(value, str) else None
    return None


def json_pointer(path: Sequence[str | int]) -> str:
    """RFC 6901 pointer as a URI fragment (`#/candles/3/h`), the form RFC 9457's examples use."""
    escaped = (str(part).replace("~", "~0").replace("/", "~1") for part in path)
    return "#/" + "/".join(escaped) if path else "#"


_NO_BODY = object()


def _body_path(path: Sequence[str | int], body: Any) -> tuple[str | int, ...]:
    """Pydantic's location with the union tags it inserts left out (`destination/url/url`: one `url` names the
    tagged member, the other the member of the body), by walking the body: the first reading in which every kept
    segment is a member of the body (the last may name a missing one) and every left-out one is a tag."""
    if body is _NO_BODY:
        return tuple(path)
    found = _walk(tuple(path), body)
    return found if found is not None else tuple(path)


def _walk(path: tuple[str | int, ...], node: Any) -> tuple[str | int, ...] | None:
    if not path:
        return ()
    segment, rest = path[0], path[1:]
    in_dict = isinstance(node, dict) and segment in node
    in_list = isinstance(node, list) and isinstance(segment, int) and 0 <= segment < len(node)
    child: Any = node[segment] if in_dict or in_list else _NO_BODY
    if child is not _NO_BODY:
        stepped = _walk(rest, child)
        if stepped is not None:
            return (segment, *stepped)
    elif not rest and isinstance(node, dict):
        return (segment,)  # a missing member
    if rest and isinstance(segment, str) and isinstance(node, dict | list):
        return _walk(rest, node)  # a tag: pydantic went on inside the same value
    return None


def validation_errors(errors: Sequence[Any], body: Any = _NO_BODY) -> list[dict[str, Any]]:
    """FastAPI/pydantic error list → problem `errors`: a pointer into the body, or the parameter/header name.
    Given the parsed body, pointers name members of it (union tags left out)."""
    rendered: list[dict[str, Any]] = []
    for error in errors:
        location = tuple(error.get("loc", ()))
        source, path = (location[0], location[1:]) if location else ("body", ())
        entry: dict[str, Any] = {"detail": str(error.get("msg", "invalid value")), "code": error.get("type")}
        if source == "body":
            entry["pointer"] = json_pointer(_body_path(path, body))
        elif source in {"query", "path", "header", "cookie"}:
            entry[{"query": "parameter", "path": "parameter", "header": "header", "cookie": "cookie"}[source]] = (
                ".".join(str(part) for part in path)
            )
            entry["in"] = source
        else:
            entry["pointer"] = json_pointer(location)
        rendered.append(entry)
    return rendered


async def _app_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)  # noqa: S101 - registered for AppError only
    return app_error_response(request.scope, exc)


async def _http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101 - registered for HTTPException only
    detail = exc.detail if isinstance(exc.detail, str) else _status_phrase(exc.status_code)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"No route matches {request.method} {request.url.path}."
    elif exc.status_code == 405 and detail == "Method Not Allowed":
        detail = f"{request.method} is not allowed on {request.url.path}."
    headers = {name.lower(): value for name, value in (exc.headers or {}).items()}
    if exc.status_code == 405:
        headers["allow"] = _allowed_methods(request, headers.get("allow", ""))
    return problem_response(
        request.scope,
        problem=problem_for_status(exc.status_code),
        detail=detail,
        headers=headers,
    )


ROUTE_METHODS_STATE = "route_methods"


def _allowed_methods(request: Request, first_match: str) -> str:
    """Every method any route on this path accepts (RFC 9110 §15.5.6). Starlette names only the first route that
    matched the path, but GET and POST on one path are often separate routes. The index of (path pattern,
    methods) is built by the app factory into `app.state.route_methods`."""
    methods = {m.strip() for m in first_match.split(",") if m.strip()}
    index: Sequence[tuple[Any, frozenset[str]]] = getattr(request.app.state, ROUTE_METHODS_STATE, ())
    for pattern, route_methods in index:
        if pattern.match(request.url.path):
            methods |= route_methods
    return ", ".join(sorted(methods))


async def _validation_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for RequestValidationError only
    errors = list(exc.errors())
    if any(error.get("type") == "json_invalid" for error in errors):
        malformed = PROBLEM_TYPES[MalformedJson.slug]
        message = next(str(e.get("ctx", {}).get("error", "")) for e in errors if e.get("type") == "json_invalid")
        detail = f"The body is not valid JSON: {message}" if message else "The body is not valid JSON."
        return problem_response(request.scope, problem=malformed, detail=detail)
    rendered = validation_errors(errors, exc.body)
    count = len(rendered)
    detail = f"{count} invalid field{'s' if count != 1 else ''}: " + "; ".join(
        f"{e.get('pointer') or e.get('parameter') or e.get('header') or e.get('cookie')}: {e['detail']}"
        for e in rendered[:5]
    )
    return problem_response(request.scope, problem=VALIDATION_PROBLEM, detail=detail, extensions={"errors": rendered})


async def _redis_error_handler(request: Request, exc: Exception) -> Response:
    # Market data, signals and caches live in Redis: unreachable Redis is a 503 the client may retry, not a bug.
    PROBLEM_LOG.warning("redis.unavailable", path=request.url.path, error=type(exc).__name__)
    problem = PROBLEM_TYPES[ServiceUnavailable.slug]
    return problem_response(
        request.scope, problem=problem, detail="The cache and market-data store is unreachable; retry shortly.",
        headers={"retry-after": "2"},
    )  # fmt: skip


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error_handler)
    app.add_exception_handler(RedisError, _redis_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
