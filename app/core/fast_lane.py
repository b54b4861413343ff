"""Fast lanes: the hottest routes served as plain Starlette routes, still declared (and documented) through FastAPI.

FastAPI's per-request machinery — dependency solving, its request/response wrapping — cost ~30 µs of the ~150 µs a
cached `GET /v1/signals` takes in-process (measured with cProfile and wall-clock loops over the ASGI app), and
that route is what clients poll. An endpoint that already reads its own path and query (it takes only the
`Request`) and whose only dependencies are scope declarations does not need that machinery: :func:`install`
puts a Starlette route for it right before its FastAPI route, so the same function answers, after running the same
scope guards. The FastAPI route stays where it was: OpenAPI, the route policy the auth middleware enforces, and the
405 handling all still come from it.

Errors behave identically: the endpoint raises the same exceptions, and the app's exception handlers sit above the
router for both kinds of route.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute
from starlette.routing import Route

from app.auth.policy import ScopeGuard, walk_api_routes

Endpoint = TypeVar("Endpoint", bound=Callable[..., Awaitable[Any]])
FAST_LANE = "_deltaflow_fast_lane"


def fast_lane(endpoint: Endpoint) -> Endpoint:
    """Mark an endpoint ``async def f(request: Request) -> Response`` for :func:`install`."""
    setattr(endpoint, FAST_LANE, True)
    return endpoint


def install(app: FastAPI) -> int:
    """Put a Starlette route before the router holding every marked FastAPI route; returns how many. Refuses (at
    start-up) an endpoint that would lose something FastAPI did for it: another parameter or a non-scope
    dependency (its routers' dependencies included)."""
    routes = app.router.routes
    installed = 0
    for index in range(len(routes) - 1, -1, -1):
        lanes = [_lane(path, route, deps) for path, route, deps in walk_api_routes([routes[index]]) if _marked(route)]
        routes[index:index] = lanes
        installed += len(lanes)
    return installed


def _marked(route: APIRoute) -> bool:
    return bool(getattr(route.endpoint, FAST_LANE, False))


def _lane(path: str, route: APIRoute, dependencies: tuple[Any, ...]) -> Route:
    parameters = list(inspect.signature(route.endpoint).parameters)
    guards = [getattr(dependency, "dependency", None) for dependency in dependencies]
    if parameters != ["request"] or not all(isinstance(guard, ScopeGuard) for guard in guards):
        raise TypeError(f"{path}: a fast lane takes only the request and declares only scopes")
    methods = set(route.methods or ())
    lane = Route(path, _guarded(route.endpoint, guards), methods=list(methods))
    lane.methods = methods  # exactly the documented methods (Starlette would add HEAD to GET)
    return lane


def _guarded(endpoint: Callable[[Request], Awaitable[Response]], guards: list[Any]) -> Callable[..., Any]:
    async def lane(request: Request) -> Response:
        for guard in guards:
            await guard(request)
        return await endpoint(request)

    return lane
