"""The auth middleware: 401 per cause, 403 per scope, open probes, Sunset, zero I/O for malformed keys."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from httpx import AsyncClient
from sqlalchemy import event

from app.auth.policy import PolicyMissing, compile_policy, require
from app.auth.scopes import Role, Scope
from app.core.errors import PROBLEM_MEDIA_TYPE
from app.core.security import generate_api_key
from tests.keys.conftest import MakeKey


def _problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body: dict[str, Any] = response.json()
    assert body["type"] == f"/problems/{slug}"
    assert body["request_id"] == response.headers["x-request-id"]
    return body


async def test_missing_key_is_401_with_a_challenge(client: AsyncClient) -> None:
    response = await client.get("/v1/me")
    _problem(response, 401, "api-key-missing")
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Authorization", "X-API-Key"])
async def test_both_header_forms_authenticate(client: AsyncClient, make_key: MakeKey, header: str) -> None:
    key = await make_key(Role.READER)
    value = f"Bearer {key.secret}" if header == "Authorization" else key.secret
    response = await client.get("/v1/me", headers={header: value})
    assert response.status_code == 200
    body = response.json()
    assert body["key_id"] == str(key.key_id)
    assert body["tenant_id"] == str(key.tenant_id)
    assert body["role"] == "reader"
    assert body["scopes"] == ["alerts:read", "market:read", "signals:read"]


async def test_two_different_keys_are_refused_and_the_same_key_twice_is_accepted(
    client: AsyncClient, make_key: MakeKey
) -> None:
    key = await make_key(Role.READER)
    other = generate_api_key()
    for headers in (
        {"Authorization": f"Bearer {key.secret}", "X-API-Key": other},
        {"Authorization": f"Bearer {other}", "X-API-Key": key.secret},
        {"Authorization": f"Bearer {key.secret}", "X-API-Key": ""},  # an empty second credential is still one
    ):
        _problem(await client.get("/v1/me", headers=headers), 401, "api-key-ambiguous")
    same = {"Authorization": f"Bearer {key.secret}", "X-API-Key": key.secret}
    assert (await client.get("/v1/me", headers=same)).status_code == 200


@pytest.mark.parametrize("bad", ["nope", "dfk_" + "a" * 38, "Bearer", generate_api_key()[:-1] + "!"])
async def test_malformed_key_is_rejected_without_touching_the_database(
    client: AsyncClient, app: FastAPI, bad: str
) -> None:
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(app.state.engine.sync_engine, "before_cursor_execute", count)
    try:
        response = await client.get("/v1/me", headers={"X-API-Key": bad})
    finally:
        event.remove(app.state.engine.sync_engine, "before_cursor_execute", count)
    _problem(response, 401, "api-key-invalid")
    assert statements == []


async def test_unknown_well_formed_key_is_invalid(client: AsyncClient) -> None:
    response = await client.get("/v1/me", headers={"X-API-Key": generate_api_key()})
    body = _problem(response, 401, "api-key-invalid")
    assert "not known" in body["detail"]


async def test_revoked_key_is_rejected_with_its_own_type(client: AsyncClient, make_key: MakeKey) -> None:
    admin = await make_key(Role.ADMIN)
    reader = await make_key(Role.READER)
    assert (await client.get("/v1/me", headers=reader.headers)).status_code == 200  # now cached
    revoked = await client.post(f"/v1/keys/{reader.key_id}/revoke", headers=admin.headers)
    assert revoked.status_code == 200
    assert revoked.json()["status"] == "revoked"
    _problem(await client.get("/v1/me", headers=reader.headers), 401, "api-key-revoked")


async def test_key_created_to_expire_in_two_seconds_stops_working(client: AsyncClient, make_key: MakeKey) -> None:
    key = await make_key(Role.READER, expires_at=datetime.now(UTC) + timedelta(seconds=2))
    assert (await client.get("/v1/me", headers=key.headers)).status_code == 200
    await asyncio.sleep(2.1)
    body = _problem(await client.get("/v1/me", headers=key.headers), 401, "api-key-expired")
    assert "expired at" in body["detail"]


async def test_sunset_header_only_within_fourteen_days_of_expiry(client: AsyncClient, make_key: MakeKey) -> None:
    soon = datetime.now(UTC) + timedelta(days=10)
    expiring = await make_key(Role.READER, expires_at=soon)
    fresh = await make_key(Role.READER)
    response = await client.get("/v1/me", headers=expiring.headers)
    assert abs((parsedate_to_datetime(response.headers["sunset"]) - soon).total_seconds()) < 1
    assert "sunset" not in (await client.get("/v1/me", headers=fresh.headers)).headers


async def test_missing_scope_is_403_listing_what_is_required(client: AsyncClient, make_key: MakeKey) -> None:
    reader = await make_key(Role.READER)
    body = _problem(await client.get("/v1/keys", headers=reader.headers), 403, "insufficient-scope")
    assert body["required_scopes"] == ["keys:read"]
    assert "keys:read" not in body["granted_scopes"]


async def test_a_narrowed_key_loses_the_scopes_it_does_not_hold(client: AsyncClient, make_key: MakeKey) -> None:
    narrowed = await make_key(Role.ADMIN, scopes=frozenset({Scope.KEYS_READ}))
    assert (await client.get("/v1/keys", headers=narrowed.headers)).status_code == 200
    _problem(
        await client.put("/v1/webhook", json={"url": "https://x.example"}, headers=narrowed.headers),
        403,
        "insufficient-scope",
    )


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/startupz", "/docs", "/openapi.json", "/problems"])
async def test_probes_and_docs_stay_open(client: AsyncClient, path: str) -> None:
    assert (await client.get(path)).status_code == 200


async def test_unknown_v1_path_needs_a_key_first(client: AsyncClient, make_key: MakeKey) -> None:
    _problem(await client.get("/v1/nothing-here"), 401, "api-key-missing")
    key = await make_key(Role.READER)
    _problem(await client.get("/v1/nothing-here", headers=key.headers), 404, "not-found")


async def test_openapi_declares_the_scopes_of_every_v1_operation(client: AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert set(spec["components"]["securitySchemes"]) == {"ApiKeyHeader", "BearerAuth"}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if path.startswith("/v1"):
                assert operation.get("security"), f"{method.upper()} {path} has no security requirement"
            else:
                assert "security" not in operation
    assert spec["paths"]["/v1/keys"]["get"]["security"] == [
        {"ApiKeyHeader": ["keys:read"]},
        {"BearerAuth": ["keys:read"]},
    ]


def test_start_up_fails_when_a_v1_route_declares_no_scopes() -> None:
    router = APIRouter()

    @router.get("/v1/forgotten")
    async def forgotten() -> None: ...

    @router.get("/v1/declared", dependencies=[require(Scope.MARKET_READ)])
    async def declared() -> None: ...

    with pytest.raises(PolicyMissing, match="/v1/forgotten"):
        compile_policy(router.routes)


async def test_a_405_allows_every_method_of_the_path_even_across_routes(client: AsyncClient, make_key: MakeKey) -> None:
    admin = await make_key(Role.ADMIN)
    response = await client.request("OPTIONS", "/v1/keys", headers=admin.headers)  # GET and POST are two routes
    _problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == "GET, POST"
