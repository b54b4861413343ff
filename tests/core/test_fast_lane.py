"""Fast lanes: a marked endpoint is answered by a Starlette route with the same guards, methods and errors."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from httpx import ASGITransport, AsyncClient
from starlette.routing import Match, Route

from app.auth.policy import require, walk_api_routes
from app.auth.scopes import Scope
from app.core import fast_lane
from app.core.errors import install_error_handlers


def _first_full_match(app: FastAPI, method: str, path: str) -> object:
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
    for route in app.router.routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route
    raise AssertionError(f"nothing matches {method} {path}")


def test_the_signal_route_is_served_by_its_fast_lane_and_still_documented(app: FastAPI) -> None:
    served = _first_full_match(app, "GET", "/v1/signals/binance/BTCUSDT")
    assert type(served) is Route  # not the APIRoute
    assert served.methods == {"GET"}  # no HEAD added: the lane answers exactly what is documented
    documented = [path for path, _, _ in walk_api_routes(app.routes) if path == "/v1/signals/{venue}/{symbol}"]
    assert len(documented) == 1  # the FastAPI route is still there, behind the lane
    assert "/v1/signals/{venue}/{symbol}" in app.openapi()["paths"]


async def test_the_lane_runs_the_scope_guards_and_the_endpoint() -> None:
    calls: list[str] = []
    app = FastAPI()
    install_error_handlers(app)
    router = APIRouter()

    @router.get("/thing/{name}", dependencies=[require(Scope.SIGNALS_READ)])
    @fast_lane.fast_lane
    async def thing(request: Request) -> Response:
        calls.append(request.path_params["name"])
        return Response(b"ok")

    app.include_router(router)
    assert fast_lane.install(app) == 1
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client:
        # No principal on the request: the lane's scope guard refuses before the endpoint runs (a problem
        # raised by the guard, handled by the app's handlers as on the FastAPI route).
        response = await client.get("/thing/a")
        assert response.status_code == 401
        assert calls == []
        assert response.headers["content-type"] == "application/problem+json"
        assert (await client.head("/thing/a")).status_code == 405


def test_install_refuses_an_endpoint_that_would_lose_what_fastapi_does_for_it() -> None:
    app = FastAPI()

    async def needs_db() -> int:
        return 1

    @app.get("/with-param/{x}")
    @fast_lane.fast_lane
    async def with_param(request: Request, x: int) -> Response:
        return Response()

    with pytest.raises(TypeError, match="fast lane"):
        fast_lane.install(app)

    other = FastAPI()

    @other.get("/with-dep", dependencies=[Depends(needs_db)])
    @fast_lane.fast_lane
    async def with_dep(request: Request) -> Response:
        return Response()

    with pytest.raises(TypeError, match="fast lane"):
        fast_lane.install(other)
