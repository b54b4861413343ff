"""Unknown query parameters are refused with a 422 naming them, never silently ignored (a `?tenant_id=` on a route
without one once acted on the caller's own tenant)."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from app.auth.policy import PROTECTED_PREFIX, compile_policy, unknown_query_parameters
from app.auth.scopes import Role
from tests.keys.conftest import MakeKey


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/v1/webhook", {"url": "https://hooks.example.com/x"}),
        ("GET", "/v1/audit", None),
        ("GET", "/v1/me", None),
        ("POST", "/v1/tenants", {"name": "other"}),
    ],
)
async def test_a_parameter_the_route_does_not_take_is_a_422_and_nothing_happens(
    client: AsyncClient, make_key: MakeKey, method: str, path: str, body: object
) -> None:
    operator = await make_key(Role.OPERATOR)
    other = await make_key(Role.READER, tenant="other-tenant")
    response = await client.request(
        method, path, params={"tenant_id": str(other.tenant_id)}, json=body, headers=operator.headers
    )
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"] == "/problems/validation-failed"
    assert problem["errors"] == [
        {"parameter": "tenant_id", "in": "query", "detail": "unknown parameter", "code": "extra_forbidden"}
    ]
    webhook = await client.get("/v1/audit", params={"action": "webhook.updated"}, headers=operator.headers)
    assert webhook.json()["items"] == [], "the refused PUT must not have written anything"
    tenants = await client.get("/v1/tenants", headers=operator.headers)
    assert "other" not in {tenant["name"] for tenant in tenants.json()}


async def test_documented_parameters_still_work_and_encoded_names_are_decoded(
    client: AsyncClient, make_key: MakeKey
) -> None:
    admin = await make_key(Role.ADMIN)
    assert (await client.get("/v1/keys?limit=5&status=active", headers=admin.headers)).status_code == 200
    assert (await client.get("/v1/keys?%6Cimit=5", headers=admin.headers)).status_code == 200  # %6C = l
    refused = await client.get("/v1/keys?limit=5&limt=6&limt=7&x", headers=admin.headers)
    assert [e["parameter"] for e in refused.json()["errors"]] == ["limt", "x"]


def test_unknown_names_are_found_in_order_once() -> None:
    allowed = frozenset({"a", "b c"})
    assert unknown_query_parameters(b"a=1&z=2&b+c=3&z&&=4&y%20=5", allowed) == ["z", "y "]


def test_every_documented_v1_route_knows_its_query_parameters(app: FastAPI) -> None:
    paths = app.openapi()["paths"]
    rules = compile_policy(app.routes, documented_paths=paths)
    assert [rule.path for rule in rules if rule.query_names is None] == [
        "/v1/analysis/{venue}/{symbol}/{module}"  # undocumented catch-all: 404 listing the modules, checks its own
    ]
    assert all(rule.query_names is not None for rule in rules if rule.path in paths)
    assert all(rule.path.startswith(PROTECTED_PREFIX) for rule in rules)
