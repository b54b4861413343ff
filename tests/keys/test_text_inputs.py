"""Free text a client stores (tenant and key names) or filters by (audit actions): control characters are a 422,
never a 500 from the database (PostgreSQL text cannot hold NUL; the fuzzer found POST /v1/tenants failing so)."""

from __future__ import annotations

import pytest
from httpx import AsyncClient

from app.auth.scopes import Role
from app.core.errors import PROBLEM_MEDIA_TYPE
from tests.keys.conftest import MakeKey


@pytest.mark.parametrize("name", ["nul\u0000inside", "line\nbreak", "\u007f", "tab\there"])
async def test_names_with_control_characters_are_refused(client: AsyncClient, make_key: MakeKey, name: str) -> None:
    operator = await make_key(Role.OPERATOR, tenant="ops")
    for path, body in (("/v1/tenants", {"name": name}), ("/v1/keys", {"name": name, "role": "reader"})):
        response = await client.post(path, json=body, headers=operator.headers)
        assert response.status_code == 422, (path, response.text)
        assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
        assert response.json()["errors"][0]["pointer"] == "#/name"


async def test_printable_names_keep_their_characters(client: AsyncClient, make_key: MakeKey) -> None:
    operator = await make_key(Role.OPERATOR, tenant="ops")
    created = await client.post("/v1/tenants", json={"name": "Ünïcode — desk ₿ 1"}, headers=operator.headers)
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "Ünïcode — desk ₿ 1"


@pytest.mark.parametrize("action", ["key.created\u0000", "\u0000"])
async def test_an_audit_filter_with_control_characters_is_refused(
    client: AsyncClient, make_key: MakeKey, action: str
) -> None:
    admin = await make_key(Role.ADMIN)
    response = await client.get("/v1/audit", params={"action": action}, headers=admin.headers)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["parameter"] == "action"
