"""OpenAPI post-processing: the problem responses every operation can produce, declared once; parameters that
are optional documented as omitted, not as null.

Some errors do not come from a route but from the stack around it: the auth middleware (401, 403, and 503 when
neither the database nor Redis can verify a key), the rate limit (429), the body limit (413), JSON decoding (400),
request validation (422) and the last-resort handler (500). Declaring them here, from what each operation accepts,
keeps the document truthful for every route — clients and fuzzers (schemathesis) check responses against it — without
each router repeating them. A route's own, more specific declarations are kept.
"""

from __future__ import annotations

from typing import Any

from app.core.errors import PROBLEM_MEDIA_TYPE
from app.core.schemas import problem_responses

HTTP_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options"})
# What a 429 carries (app/auth/ratelimit.py); 2xx responses of limited tenants carry the last two as well.
RATE_LIMIT_HEADERS: dict[str, Any] = {
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer", "minimum": 1}},
    "RateLimit": {
        "description": 'The tenant\'s budget left (draft-ietf-httpapi-ratelimit-headers): `"tenant";r=<remaining>;'
        "t=<seconds>`.",
        "schema": {"type": "string"},
    },
    "RateLimit-Policy": {
        "description": 'The tenant\'s budget: `"tenant";q=<burst>;w=<seconds to refill>`.',
        "schema": {"type": "string"},
    },
}


def _add(operation: dict[str, Any], *statuses: int) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for status, response in problem_responses(*statuses).items():
        responses.setdefault(str(status), response)


def add_standard_problems(schema: dict[str, Any]) -> None:
    """Per operation: 500 always; 422 with any input; 400 and 413 with a body; 401, 403, 429, 503 when secured."""
    for operations in schema.get("paths", {}).values():
        for method, operation in operations.items():
            if method not in HTTP_METHODS:
                continue
            _add(operation, 500)
            if operation.get("parameters") or operation.get("requestBody"):
                _add(operation, 422)
            if operation.get("requestBody"):
                _add(operation, 400, 413)
            if operation.get("security"):
                _add(operation, 401, 403, 429, 503)
                operation["responses"]["429"].setdefault("headers", RATE_LIMIT_HEADERS)
            # FastAPI documents its own validation error shape for 422; ours is the problem document.
            unprocessable = operation["responses"].get("422")
            if unprocessable is not None and PROBLEM_MEDIA_TYPE not in unprocessable.get("content", {}):
                operation["responses"]["422"] = problem_responses(422)[422]


def omit_null_parameters(schema: dict[str, Any]) -> None:
    """Drop the ``null`` alternative FastAPI documents for every ``X | None`` parameter.

    A query, header or path value is a string on the wire: an optional parameter is one that may be left out, and
    the text ``null`` is not a value of it (the route refuses it with 422). Documented with the null alternative,
    clients (and fuzzers) read ``?bars=null`` or ``Last-Event-ID: null`` as valid requests."""
    for operations in schema.get("paths", {}).values():
        for method, operation in operations.items():
            if method not in HTTP_METHODS:
                continue
            for parameter in operation.get("parameters", []):
                declared: dict[str, Any] = parameter.get("schema", {})
                options = declared.get("anyOf")
                if not isinstance(options, list) or not any(o.get("type") == "null" for o in options):
                    continue
                kept = [option for option in options if option.get("type") != "null"]
                del declared["anyOf"]
                if len(kept) == 1:
                    declared.update(kept[0])
                else:
                    declared["anyOf"] = kept
