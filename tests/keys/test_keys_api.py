"""/v1/keys, /v1/me, tenants and audit through HTTP: lifecycle, tenancy, no escalation, the 90-day ceiling."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from httpx import AsyncClient

from app.auth.scopes import Role, Scope
from tests.keys.conftest import MakeKey


def _type(response: Any) -> str:
    return str(response.json().get("type", ""))


async def test_create_shows_the_secret_once_and_lists_only_prefix_and_last_four(
    client: AsyncClient, make_key: MakeKey
) -> None:
    admin = await make_key(Role.ADMIN)
    created = await client.post("/v1/keys", json={"name": "bot", "role": "reader"}, headers=admin.headers)
    assert created.status_code == 201
    body = created.json()
    secret = body["secret"]
    assert secret.startswith("dfk_")
    assert body["prefix"] == secret[:8]
    assert body["last_four"] == secret[-4:]
    assert body["scopes"] == ["alerts:read", "market:read", "signals:read"]
    expires = datetime.fromisoformat(body["expires_at"])
    assert timedelta(days=89, hours=23) < expires - datetime.now(UTC) <= timedelta(days=90)

    listed = await client.get("/v1/keys", headers=admin.headers)
    assert secret not in listed.text
    one = await client.get(f"/v1/keys/{body['id']}", headers=admin.headers)
    assert "secret" not in one.json()
    assert (await client.get("/v1/me", headers={"X-API-Key": secret})).json()["name"] == "bot"


@pytest.mark.parametrize(
    ("payload", "pointer"),
    [
        ({"expires_in_seconds": 91 * 86_400}, "#/expires_in_seconds"),
        ({"expires_at": (datetime.now(UTC) + timedelta(days=91)).isoformat()}, "#/expires_at"),
        ({"expires_at": (datetime.now(UTC) - timedelta(days=1)).isoformat()}, "#/expires_at"),
        ({"expires_in_seconds": 60, "expires_at": datetime.now(UTC).isoformat()}, "#/expires_at"),
    ],
)
async def test_lifetime_beyond_ninety_days_or_in_the_past_is_422(
    client: AsyncClient, make_key: MakeKey, payload: dict[str, Any], pointer: str
) -> None:
    admin = await make_key(Role.ADMIN)
    response = await client.post("/v1/keys", json={"name": "x", **payload}, headers=admin.headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["pointer"] == pointer


async def test_an_earlier_expiry_can_be_requested(client: AsyncClient, make_key: MakeKey) -> None:
    admin = await make_key(Role.ADMIN)
    response = await client.post("/v1/keys", json={"name": "x", "expires_in_seconds": 3600}, headers=admin.headers)
    expires = datetime.fromisoformat(response.json()["expires_at"])
    assert abs((expires - datetime.now(UTC)).total_seconds() - 3600) < 5
    assert response.json()["status"] == "expiring"


async def test_list_is_paginated_and_filtered_by_status(client: AsyncClient, make_key: MakeKey) -> None:
    admin = await make_key(Role.ADMIN)
    ids = []
    for index in range(5):
        created = await client.post("/v1/keys", json={"name": f"k{index}"}, headers=admin.headers)
        ids.append(created.json()["id"])
    await client.post(f"/v1/keys/{ids[0]}/revoke", headers=admin.headers)

    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/keys", params=params, headers=admin.headers)).json()
        seen.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 6  # five created + the admin key itself
    revoked = (await client.get("/v1/keys", params={"status": "revoked"}, headers=admin.headers)).json()
    assert [item["id"] for item in revoked["items"]] == [ids[0]]
    active = (await client.get("/v1/keys", params={"status": "active"}, headers=admin.headers)).json()
    assert ids[0] not in {item["id"] for item in active["items"]}
    bad = await client.get("/v1/keys", params={"cursor": "!!!"}, headers=admin.headers)
    assert bad.status_code == 422
    assert _type(bad) == "/problems/invalid-cursor"


async def test_rotation_issues_a_successor_and_the_old_key_works_for_the_grace(
    client: AsyncClient, make_key: MakeKey
) -> None:
    admin = await make_key(Role.ADMIN)
    reader = await make_key(Role.READER, scopes=frozenset({Scope.SIGNALS_READ}))
    rotated = await client.post(f"/v1/keys/{reader.key_id}/rotate", json={"grace_seconds": 2}, headers=admin.headers)
    assert rotated.status_code == 201
    successor = rotated.json()
    assert successor["rotated_from_id"] == str(reader.key_id)
    assert successor["scopes"] == ["signals:read"], "the successor keeps the narrowed scopes"
    assert (await client.get("/v1/me", headers=reader.headers)).status_code == 200, "old key in its grace period"
    assert (await client.get("/v1/me", headers={"X-API-Key": successor["secret"]})).status_code == 200
    again = await client.post(f"/v1/keys/{reader.key_id}/rotate", headers=admin.headers)
    assert again.status_code == 409
    await asyncio.sleep(2.2)
    expired = await client.get("/v1/me", headers=reader.headers)
    assert expired.status_code == 401
    assert _type(expired) == "/problems/api-key-expired"
    assert "rotated" in expired.json()["detail"]


async def test_rotation_with_zero_grace_stops_the_old_key_at_once(client: AsyncClient, make_key: MakeKey) -> None:
    admin = await make_key(Role.ADMIN)
    reader = await make_key(Role.READER)
    await client.get("/v1/me", headers=reader.headers)  # cached before the rotation
    response = await client.post(f"/v1/keys/{reader.key_id}/rotate", json={"grace_seconds": 0}, headers=admin.headers)
    assert response.status_code == 201
    assert _type(await client.get("/v1/me", headers=reader.headers)) == "/problems/api-key-expired"


async def test_grace_never_extends_past_the_old_key_expiry_and_is_capped(
    client: AsyncClient, make_key: MakeKey
) -> None:
    admin = await make_key(Role.ADMIN)
    soon = datetime.now(UTC) + timedelta(hours=1)
    reader = await make_key(Role.READER, expires_at=soon)
    too_long = await client.post(
        f"/v1/keys/{reader.key_id}/rotate", json={"grace_seconds": 8 * 86_400}, headers=admin.headers
    )
    assert too_long.status_code == 422
    await client.post(f"/v1/keys/{reader.key_id}/rotate", json={"grace_seconds": 86_400}, headers=admin.headers)
    old = (await client.get(f"/v1/keys/{reader.key_id}", headers=admin.headers)).json()
    assert abs((datetime.fromisoformat(old["expires_at"]) - soon).total_seconds()) < 1


async def test_tenants_cannot_see_or_touch_each_others_keys(client: AsyncClient, make_key: MakeKey) -> None:
    admin_a = await make_key(Role.ADMIN, tenant="tenant-a")
    admin_b = await make_key(Role.ADMIN, tenant="tenant-b")
    reader_b = await make_key(Role.READER, tenant="tenant-b")
    for method, path in [
        ("GET", f"/v1/keys/{reader_b.key_id}"),
        ("POST", f"/v1/keys/{reader_b.key_id}/rotate"),
        ("POST", f"/v1/keys/{reader_b.key_id}/revoke"),
        ("GET", f"/v1/keys?tenant_id={admin_b.tenant_id}"),
        ("POST", f"/v1/keys?tenant_id={admin_b.tenant_id}"),
    ]:
        body = {"name": "x"} if path.startswith("/v1/keys?") and method == "POST" else None
        response = await client.request(method, path, json=body, headers=admin_a.headers)
        assert response.status_code == 404, f"{method} {path}: {response.status_code}"
    listed = (await client.get("/v1/keys", headers=admin_a.headers)).json()["items"]
    assert {item["tenant_id"] for item in listed} == {str(admin_a.tenant_id)}
    assert (await client.get("/v1/me", headers=reader_b.headers)).status_code == 200, "B's key untouched"


async def test_operators_work_across_tenants(client: AsyncClient, make_key: MakeKey) -> None:
    operator = await make_key(Role.OPERATOR, tenant="ops")
    reader_b = await make_key(Role.READER, tenant="tenant-b")
    listed = await client.get("/v1/keys", params={"tenant_id": str(reader_b.tenant_id)}, headers=operator.headers)
    assert [item["id"] for item in listed.json()["items"]] == [str(reader_b.key_id)]
    assert (await client.post(f"/v1/keys/{reader_b.key_id}/revoke", headers=operator.headers)).status_code == 200
    tenant = await client.post("/v1/tenants", json={"name": "newco"}, headers=operator.headers)
    assert tenant.status_code == 201
    duplicate = await client.post("/v1/tenants", json={"name": "newco"}, headers=operator.headers)
    assert duplicate.status_code == 409
    names = {t["name"] for t in (await client.get("/v1/tenants", headers=operator.headers)).json()}
    assert {"ops", "tenant-b", "newco"} <= names
    created = await client.post(
        "/v1/keys",
        params={"tenant_id": tenant.json()["id"]},
        json={"name": "first", "role": "admin"},
        headers=operator.headers,
    )
    assert created.status_code == 201
    assert created.json()["tenant_id"] == tenant.json()["id"]
    unknown = await client.get("/v1/keys", params={"tenant_id": str(uuid.uuid4())}, headers=operator.headers)
    assert unknown.status_code == 404


@pytest.mark.parametrize(
    ("holder_role", "holder_scopes", "payload"),
    [
        (Role.ADMIN, None, {"name": "x", "role": "operator"}),
        (Role.ADMIN, frozenset({Scope.KEYS_WRITE, Scope.MARKET_READ}), {"name": "x", "role": "reader"}),
        (Role.ADMIN, frozenset({Scope.KEYS_WRITE, Scope.MARKET_READ}), {"name": "x", "scopes": ["signals:read"]}),
    ],
)
async def test_a_key_cannot_create_a_key_stronger_than_itself(
    client: AsyncClient,
    make_key: MakeKey,
    holder_role: Role,
    holder_scopes: frozenset[Scope] | None,
    payload: dict[str, Any],
) -> None:
    holder = await make_key(holder_role, scopes=holder_scopes)
    response = await client.post("/v1/keys", json=payload, headers=holder.headers)
    assert response.status_code == 403
    assert _type(response) == "/problems/key-escalation-denied"


async def test_scopes_outside_the_role_are_422(client: AsyncClient, make_key: MakeKey) -> None:
    admin = await make_key(Role.ADMIN)
    response = await client.post(
        "/v1/keys", json={"name": "x", "role": "reader", "scopes": ["keys:write"]}, headers=admin.headers
    )
    assert response.status_code == 422
    assert _type(response) == "/problems/scope-not-in-role"


async def test_a_narrowed_key_cannot_widen_scopes_through_rotation(client: AsyncClient, make_key: MakeKey) -> None:
    narrowed_admin = await make_key(Role.ADMIN, scopes=frozenset({Scope.KEYS_WRITE, Scope.KEYS_READ}))
    full_reader = await make_key(Role.READER)
    response = await client.post(f"/v1/keys/{full_reader.key_id}/rotate", headers=narrowed_admin.headers)
    assert response.status_code == 403
    own = await client.post(f"/v1/keys/{narrowed_admin.key_id}/rotate", headers=narrowed_admin.headers)
    assert own.status_code == 201
    assert own.json()["scopes"] == ["keys:read", "keys:write"]


async def test_every_key_action_is_audited_with_the_request_id(client: AsyncClient, make_key: MakeKey) -> None:
    admin = await make_key(Role.ADMIN)
    created = await client.post("/v1/keys", json={"name": "x"}, headers={**admin.headers, "X-Request-ID": "req-1"})
    key_id = created.json()["id"]
    await client.post(f"/v1/keys/{key_id}/rotate", headers={**admin.headers, "X-Request-ID": "req-2"})
    await client.post(f"/v1/keys/{key_id}/revoke", headers={**admin.headers, "X-Request-ID": "req-3"})
    await client.put("/v1/webhook", json={"url": "https://hooks.example/x"}, headers=admin.headers)
    events = (await client.get("/v1/audit", headers=admin.headers)).json()["items"]
    actions = [(e["action"], e["request_id"]) for e in events if e["actor_key_id"] == str(admin.key_id)]
    assert actions[:4] == [
        ("webhook.updated", actions[0][1]),
        ("key.revoked", "req-3"),
        ("key.rotated", "req-2"),
        ("key.created", "req-1"),
    ]
    filtered = (await client.get("/v1/audit", params={"action": "key.rotated"}, headers=admin.headers)).json()
    assert [e["action"] for e in filtered["items"]] == ["key.rotated"]


async def test_revoke_is_idempotent(client: AsyncClient, make_key: MakeKey) -> None:
    admin = await make_key(Role.ADMIN)
    reader = await make_key(Role.READER)
    first = await client.post(f"/v1/keys/{reader.key_id}/revoke", headers=admin.headers)
    second = await client.post(f"/v1/keys/{reader.key_id}/revoke", headers=admin.headers)
    assert first.json()["revoked_at"] == second.json()["revoked_at"]
