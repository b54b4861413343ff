"""Route → scopes policy: declared next to each route, compiled once at start-up, enforced by the middleware.

A route declares `dependencies=[require(Scope.KEYS_READ)]` (or `require()` for "any valid key"). At start-up
`compile_policy` collects the declarations; a `/v1` route that declares nothing makes start-up fail
(deny-by-default). The compiled table also feeds the OpenAPI security requirements, so the document and the
enforcement cannot disagree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import unquote_plus

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, compile_path

from app.auth.errors import ApiKeyMissing, InsufficientScope
from app.auth.principal import Principal
from app.auth.scopes import Scope
from app.core.errors import VALIDATION_PROBLEM, AppError

PROTECTED_PREFIX = "/v1"
SECURITY_SCHEMES = {
    "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "BearerAuth": {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer dfk_…`"},
}


class ScopeGuard:
    """The dependency `require()` returns; its presence on a route is the declaration.

    Dependencies here are `async def` on purpose: FastAPI runs plain `def` dependencies in a worker thread,
    which cost ~50 µs per call on the hottest path of every /v1 request (measured in bench/bench_auth.py)."""

    def __init__(self, scopes: frozenset[Scope]) -> None:
        self.scopes = scopes

    async def __call__(self, request: Request) -> Principal:
        # The middleware already enforced this; checking again means a route the policy walk missed can never
        # run with fewer scopes than it declares.
        principal = await current_principal(request)
        if not principal.has(self.scopes):
            raise InsufficientScope(
                f"This route requires {', '.join(sorted(self.scopes - principal.scopes))}.",
                extensions={"required_scopes": sorted(self.scopes)},
            )
        return principal


def require(*scopes: Scope) -> Any:
    """Declare the scopes a route needs (none: any valid key)."""
    return Depends(ScopeGuard(frozenset(scopes)))


async def current_principal(request: Request) -> Principal:
    principal = request.scope.get("state", {}).get("principal")
    if not isinstance(principal, Principal):  # only reachable if a protected route were mounted outside /v1
        raise ApiKeyMissing("This route requires an API key.")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


@dataclass(frozen=True, slots=True)
class RouteRule:
    path: str
    path_regex: re.Pattern[str]
    methods: frozenset[str]
    scopes: frozenset[Scope]
    # The query parameters the route documents (None: not known, nothing refused). A parameter outside them is a
    # 422 rather than silently ignored: `?tenant_id=` on a route without it once acted on the caller's own tenant.
    query_names: frozenset[str] | None = None


class QueryParameterUnknown(AppError):
    """A query parameter the route does not take (see its OpenAPI operation): refused rather than ignored, so a
    misspelt or unsupported parameter never silently changes what the call does. The same problem type as every
    other invalid parameter (`validation-failed`, code `extra_forbidden`), so clients handle one shape."""

    slug = VALIDATION_PROBLEM.slug
    title = VALIDATION_PROBLEM.title
    status = VALIDATION_PROBLEM.status
    description = VALIDATION_PROBLEM.description


def unknown_query_parameters(query_string: bytes, allowed: frozenset[str]) -> list[str]:
    """The names in `query_string` that `allowed` lacks, in order of appearance (each once)."""
    unknown: list[str] = []
    for part in query_string.split(b"&"):
        raw = part.split(b"=", 1)[0]
        if not raw:
            continue
        name = raw.decode("latin-1")
        if b"%" in raw or b"+" in raw:
            name = unquote_plus(name, encoding="utf-8", errors="replace")
        if name not in allowed and name not in unknown:
            unknown.append(name)
    return unknown


def refuse_unknown_query(rule: RouteRule, query_string: bytes) -> None:
    if rule.query_names is None or not query_string:
        return
    unknown = unknown_query_parameters(query_string, rule.query_names)
    if unknown:
        accepted = ", ".join(sorted(rule.query_names)) or "none"
        raise QueryParameterUnknown(
            f"Not a parameter of this route: {', '.join(unknown[:5])} (it accepts: {accepted}).",
            extensions={
                "errors": [
                    {"parameter": name, "in": "query", "detail": "unknown parameter", "code": "extra_forbidden"}
                    for name in unknown[:20]
                ]
            },
        )


class PolicyMissing(RuntimeError):
    """A /v1 route without a scope declaration: refuse to start rather than serve it unprotected."""


def _declared_scopes(dependencies: Sequence[Any]) -> frozenset[Scope] | None:
    guards = [dep.dependency for dep in dependencies if isinstance(getattr(dep, "dependency", None), ScopeGuard)]
    if not guards:
        return None
    return frozenset().union(*(guard.scopes for guard in guards))


def iter_api_routes(
    routes: Iterable[BaseRoute], prefix: str = "", inherited: tuple[Any, ...] = ()
) -> Iterator[tuple[str, frozenset[str], tuple[Any, ...]]]:
    """(full path, methods, dependencies) of every API route, descending into included routers."""
    for path, route, dependencies in walk_api_routes(routes, prefix, inherited):
        yield path, frozenset(route.methods or ()), dependencies


def walk_api_routes(
    routes: Iterable[BaseRoute], prefix: str = "", inherited: tuple[Any, ...] = ()
) -> Iterator[tuple[str, APIRoute, tuple[Any, ...]]]:
    """(full path, route, dependencies including its routers') of every API route, descending into included routers.

    Recent FastAPI keeps included routers as nodes (with their prefix and dependencies in an include context)
    instead of copying their routes into the app; older versions flatten them. Both shapes are handled.
    """
    for route in routes:
        if isinstance(route, APIRoute):
            yield prefix + route.path, route, (*inherited, *route.dependencies)
            continue
        child = getattr(route, "original_router", None)
        if child is not None:
            context = getattr(route, "include_context", None)
            yield from walk_api_routes(
                child.routes,
                prefix + str(getattr(context, "prefix", "") or ""),
                (*inherited, *(getattr(context, "dependencies", None) or ())),
            )


def compile_policy(
    routes: Iterable[BaseRoute], documented_paths: Mapping[str, Mapping[str, Any]] | None = None
) -> tuple[RouteRule, ...]:
    """Every /v1 route's scopes and documented query parameters. `documented_paths` (the OpenAPI document's
    `paths`) is also a cross-check: a /v1 operation the walk did not see must not slip through unprotected."""
    documented_paths = documented_paths or {}
    rules: list[RouteRule] = []
    missing: list[str] = []
    for path, methods, dependencies in iter_api_routes(routes):
        if not path.startswith(PROTECTED_PREFIX):
            continue
        scopes = _declared_scopes(dependencies)
        if scopes is None:
            missing.append(f"{','.join(sorted(methods))} {path}")
            continue
        query_names = _documented_query_names(documented_paths.get(path), methods)
        rules.append(RouteRule(path, compile_path(path)[0], methods, scopes, query_names))
    covered = {rule.path for rule in rules}
    missing.extend(
        f"{path} (unresolved)" for path in documented_paths if path.startswith(PROTECTED_PREFIX) and path not in covered
    )
    if missing:
        raise PolicyMissing("routes without a scope declaration (use require(...)): " + "; ".join(sorted(missing)))
    return tuple(rules)


def _documented_query_names(operations: Mapping[str, Any] | None, methods: frozenset[str]) -> frozenset[str] | None:
    if operations is None:
        return None
    names: set[str] = set()
    for method in methods:
        for parameter in (operations.get(method.lower()) or {}).get("parameters", ()):
            if parameter.get("in") == "query":
                names.add(parameter["name"])
    return frozenset(names)


def match_rule(rules: Sequence[RouteRule], path: str, method: str) -> RouteRule | None:
    for rule in rules:
        if method in rule.methods and rule.path_regex.match(path):
            return rule
    return None


def add_security_to_openapi(schema: dict[str, Any], rules: Sequence[RouteRule]) -> None:
    """Security schemes, and per operation the alternatives (X-API-Key or Bearer) with its scopes."""
    schema.setdefault("components", {}).setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
    for rule in rules:
        operations = schema.get("paths", {}).get(rule.path, {})
        scopes = sorted(scope.value for scope in rule.scopes)
        for method in rule.methods:
            operation = operations.get(method.lower())
            if operation is not None:
                operation["security"] = [{name: scopes} for name in SECURITY_SCHEMES]
