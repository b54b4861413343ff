"""/v1/alerts on both backends: CRUD, pagination, tenancy, roles, the per-tenant limit under concurrency, the audit
trail, and 422 problems that point at the offending member or condition node."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from app.auth.scopes import Role
from app.config import Settings
from app.main import create_app
from tests.alerts.conftest import rule_body
from tests.helpers import running
from tests.keys.conftest import MakeKey, key_maker

Backend = tuple[FastAPI, AsyncClient]


async def test_create_read_list_update_delete(backend: Backend, make_backend_key: MakeKey) -> None:
    _, client = backend
    admin = await make_backend_key(Role.ADMIN)
    created = await client.post("/v1/alerts", json=rule_body(cooldown_bars=2), headers=admin.headers)
    assert created.status_code == 201, created.text
    rule = created.json()
    assert rule["tenant_id"] == str(admin.tenant_id)
    assert rule["frequency"] == "on_change"  # the default
    assert rule["destination"] == {"type": "webhook"}  # the tenant's webhook by default
    assert rule["enabled"] is True
    assert rule["cooldown_bars"] == 2
    assert rule["description"] == "bias changes to long and bullish CHoCH"
    assert rule["last_fired_at"] is None

    fetched = await client.get(f"/v1/alerts/{rule['id']}", headers=admin.headers)
    assert fetched.status_code == 200
    assert fetched.json() == rule

    patched = await client.patch(
        f"/v1/alerts/{rule['id']}",
        json={
            "enabled": False,
            "frequency": "once",
            "destination": {"type": "url", "url": "https://bot.example.com/a"},
        },
        headers=admin.headers,
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert (body["enabled"], body["frequency"]) == (False, "once")
    assert body["destination"] == {"type": "url", "url": "https://bot.example.com/a"}
    assert body["name"] == rule["name"], "members not given stay"
    assert (await client.get(f"/v1/alerts/{rule['id']}", headers=admin.headers)).json() == body

    deleted = await client.delete(f"/v1/alerts/{rule['id']}", headers=admin.headers)
    assert deleted.status_code == 204
    assert deleted.content == b""
    gone = await client.get(f"/v1/alerts/{rule['id']}", headers=admin.headers)
    assert gone.status_code == 404
    assert gone.json()["type"] == "/problems/alert-rule-not-found"
    again = await client.delete(f"/v1/alerts/{rule['id']}", headers=admin.headers)
    assert again.status_code == 404

    audit = (await client.get("/v1/audit", headers=admin.headers)).json()["items"]
    actions = [event["action"] for event in audit if event["target"] == f"alert_rule:{rule['id']}"]
    assert actions == ["alert.deleted", "alert.updated", "alert.created"]


async def test_the_condition_is_stored_in_canonical_form(backend: Backend, make_backend_key: MakeKey) -> None:
    _, client = backend
    admin = await make_backend_key(Role.ADMIN)
    condition = {"any": [{"field": "rsi", "op": "crosses_above", "value": 70}, {"level": "fibonacci", "ratio": 0.618,
                 "op": "crosses_below"}]}  # fmt: skip
    created = await client.post("/v1/alerts", json=rule_body(condition=condition), headers=admin.headers)
    assert created.status_code == 201, created.text
    stored = created.json()["condition"]
    assert stored == {
        "any": [
            {"field": "rsi", "op": "crosses_above", "value": 70.0},
            {"level": "fibonacci", "ratio": 0.618, "op": "crosses_below"},
        ]
    }
    assert created.json()["description"] == "RSI crosses above 70 or close crosses below the 0.618 Fibonacci level"


async def test_pages_follow_the_cursor_newest_first(backend: Backend, make_backend_key: MakeKey) -> None:
    _, client = backend
    admin = await make_backend_key(Role.ADMIN)
    ids = []
    for i in range(5):
        response = await client.post("/v1/alerts", json=rule_body(name=f"r{i}"), headers=admin.headers)
        ids.append(response.json()["id"])
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/v1/alerts", params=params, headers=admin.headers)).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    bad = await client.get("/v1/alerts", params={"cursor": "nonsense"}, headers=admin.headers)
    assert bad.status_code == 422
    assert bad.json()["type"] == "/problems/invalid-cursor"


async def test_another_tenants_rule_is_404_everywhere(backend: Backend, make_backend_key: MakeKey) -> None:
    _, client = backend
    owner = await make_backend_key(Role.ADMIN, tenant="owner")
    other = await make_backend_key(Role.ADMIN, tenant="other")
    rule = (await client.post("/v1/alerts", json=rule_body(), headers=owner.headers)).json()
    path = f"/v1/alerts/{rule['id']}"
    assert (await client.get(path, headers=other.headers)).status_code == 404
    assert (await client.patch(path, json={"enabled": False}, headers=other.headers)).status_code == 404
    assert (await client.delete(path, headers=other.headers)).status_code == 404
    assert (await client.get("/v1/alerts", headers=other.headers)).json()["items"] == []
    probe = await client.get("/v1/alerts", params={"tenant_id": str(owner.tenant_id)}, headers=other.headers)
    assert probe.status_code == 404, "tenant ids cannot be probed"
    # Untouched by the other tenant's attempts.
    assert (await client.get(path, headers=owner.headers)).json()["enabled"] is True


async def test_readers_read_and_only_admins_write(backend: Backend, make_backend_key: MakeKey) -> None:
    _, client = backend
    admin = await make_backend_key(Role.ADMIN)
    reader = await make_backend_key(Role.READER)
    rule = (await client.post("/v1/alerts", json=rule_body(), headers=admin.headers)).json()
    assert (await client.get(f"/v1/alerts/{rule['id']}", headers=reader.headers)).status_code == 200
    assert (await client.get("/v1/alerts", headers=reader.headers)).status_code == 200
    for method, path, body in (
        ("POST", "/v1/alerts", rule_body()),
        ("PATCH", f"/v1/alerts/{rule['id']}", {"enabled": False}),
        ("DELETE", f"/v1/alerts/{rule['id']}", None),
    ):
        refused = await client.request(method, path, json=body, headers=reader.headers)
        assert refused.status_code == 403, (method, refused.text)
        assert refused.json()["required_scopes"] == ["alerts:write"]


async def test_operators_reach_another_tenants_rules(backend: Backend, make_backend_key: MakeKey) -> None:
    _, client = backend
    operator = await make_backend_key(Role.OPERATOR, tenant="ops")
    admin = await make_backend_key(Role.ADMIN, tenant="customer")
    created = await client.post(
        "/v1/alerts", params={"tenant_id": str(admin.tenant_id)}, json=rule_body(), headers=operator.headers
    )
    assert created.status_code == 201
    assert created.json()["tenant_id"] == str(admin.tenant_id)
    listed = (await client.get("/v1/alerts", headers=admin.headers)).json()["items"]
    assert [item["id"] for item in listed] == [created.json()["id"]]


def _pointers(response: Any) -> list[str]:
    assert response.status_code == 422, response.text
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    return [error["pointer"] for error in problem["errors"]]


@pytest.mark.parametrize(
    ("overrides", "pointer"),
    [
        ({"condition": {"all": [{"event": "bos"}, {"event": "fvg"}, {"field": "rsi", "op": "between", "value": 1}]}},
         "#/condition/all/2/op"),
        ({"condition": {"field": "bias", "op": "gt", "value": "long"}}, "#/condition/op"),
        ({"condition": {"field": "bias", "op": "eq", "value": "up"}}, "#/condition/value"),
        ({"condition": {"field": "rsi", "op": "gt", "value": "70"}}, "#/condition/value"),
        ({"condition": {"field": "rsi", "op": "gt", "value": True}}, "#/condition/value"),
        ({"condition": {"field": "price", "op": "gt", "value": 1}}, "#/condition/field"),
        ({"condition": {"field": "rsi", "op": "gt", "value": 1, "extra": 1}}, "#/condition/extra"),
        ({"condition": {"field": "rsi", "op": "gt"}}, "#/condition"),
        ({"condition": {"any": []}}, "#/condition/any"),
        ({"condition": {"not": [{"event": "bos"}]}}, "#/condition/not"),
        ({"condition": {"all": [{"event": "bos"}], "any": [{"event": "bos"}]}}, "#/condition"),
        ({"condition": {}}, "#/condition"),
        ({"condition": {"any": [{"event": "bos"}, 3]}}, "#/condition/any/1"),
        ({"condition": {"event": "breakout"}}, "#/condition/event"),
        ({"condition": {"event": "choch", "direction": "up"}}, "#/condition/direction"),
        ({"condition": {"event": "equal_highs", "direction": "bullish"}}, "#/condition/direction"),
        ({"condition": {"level": "fibonacci", "ratio": 0.7, "op": "crosses_above"}}, "#/condition/ratio"),
        ({"condition": {"level": "fibonacci", "op": "crosses_above"}}, "#/condition/ratio"),
        ({"condition": {"level": "stop", "op": "gt"}}, "#/condition/op"),
        ({"condition": {"level": "stop", "ratio": 0.5, "op": "crosses_above"}}, "#/condition/ratio"),
        ({"condition": {"level": "vwap", "op": "crosses_above"}}, "#/condition/level"),
        ({"venue": "kraken"}, "#/venue"),
        ({"symbol": "DOGEUSDT"}, "#/symbol"),
        ({"timeframe": "2m"}, "#/timeframe"),
        ({"destination": {"type": "url", "url": "http://127.0.0.1:6379/"}}, "#/destination/url"),
        ({"expires_at": "2020-01-01T00:00:00Z"}, "#/expires_at"),
        ({"expires_at": "2999-01-01T00:00:00"}, "#/expires_at"),
        ({"expires_at": "9999-12-31T23:59:59-14:00"}, "#/expires_at"),
    ],
)  # fmt: skip
async def test_every_malformed_rule_is_a_422_pointing_at_it(
    backend: Backend, make_backend_key: MakeKey, overrides: dict[str, Any], pointer: str
) -> None:
    _, client = backend
    admin = await make_backend_key(Role.ADMIN)
    response = await client.post("/v1/alerts", json=rule_body(**overrides), headers=admin.headers)
    assert response.json()["type"] == "/problems/alert-rule-invalid", response.text
    assert pointer in _pointers(response)
    assert (await client.get("/v1/alerts", headers=admin.headers)).json()["items"] == [], "nothing stored"


@pytest.mark.parametrize(
    ("overrides", "pointer"),
    [
        ({"frequency": "always"}, "#/frequency"),
        ({"cooldown_bars": -1}, "#/cooldown_bars"),
        ({"destination": {"type": "email"}}, "#/destination"),
        ({"condition": [1]}, "#/condition"),
        ({"name": ""}, "#/name"),
        ({"colour": "red"}, "#/colour"),
    ],
)
async def test_schema_errors_are_422_validation_problems_with_pointers(
    backend: Backend, make_backend_key: MakeKey, overrides: dict[str, Any], pointer: str
) -> None:
    _, client = backend
    admin = await make_backend_key(Role.ADMIN)
    response = await client.post("/v1/alerts", json=rule_body(**overrides), headers=admin.headers)
    assert response.json()["type"] == "/problems/validation-failed"
    assert any(p.startswith(pointer) for p in _pointers(response)), response.text


async def test_several_errors_are_reported_at_once(backend: Backend, make_backend_key: MakeKey) -> None:
    _, client = backend
    admin = await make_backend_key(Role.ADMIN)
    condition = {"all": [{"field": "rsi", "op": "gt", "value": "x"}, {"event": "nope"}]}
    response = await client.post(
        "/v1/alerts", json=rule_body(condition=condition, venue="kraken"), headers=admin.headers
    )
    assert _pointers(response) == ["#/condition/all/0/value", "#/condition/all/1/event", "#/venue"]


async def test_condition_depth_and_size_are_bounded(backend: Backend, make_backend_key: MakeKey) -> None:
    _, client = backend
    admin = await make_backend_key(Role.ADMIN)
    deep: dict[str, Any] = {"event": "bos"}
    for _ in range(9):  # DELTAFLOW_ALERT_CONDITION_MAX_DEPTH is 8
        deep = {"not": deep}
    response = await client.post("/v1/alerts", json=rule_body(condition=deep), headers=admin.headers)
    assert _pointers(response) == ["#/condition" + "/not" * 8]
    wide = {"any": [{"event": "bos"}] * 64}  # 65 nodes with the `any`; at most 64
    response = await client.post("/v1/alerts", json=rule_body(condition=wide), headers=admin.headers)
    assert _pointers(response) == ["#/condition/any/63"]
    within = {"any": [{"event": "bos"}] * 63}
    assert (await client.post("/v1/alerts", json=rule_body(condition=within), headers=admin.headers)).status_code == 201


async def test_patch_validates_and_refuses_null_for_required_members(
    backend: Backend, make_backend_key: MakeKey
) -> None:
    _, client = backend
    admin = await make_backend_key(Role.ADMIN)
    rule = (await client.post("/v1/alerts", json=rule_body(), headers=admin.headers)).json()
    path = f"/v1/alerts/{rule['id']}"
    nulls = await client.patch(path, json={"name": None, "condition": None}, headers=admin.headers)
    assert _pointers(nulls) == ["#/name", "#/condition"]
    bad = await client.patch(
        path, json={"condition": {"not": {"field": "cvd", "op": "changes_to"}}}, headers=admin.headers
    )
    assert _pointers(bad) == ["#/condition/not"]
    market = await client.patch(path, json={"symbol": "NOPE"}, headers=admin.headers)
    assert _pointers(market) == ["#/symbol"]
    expiry = datetime.now(UTC) + timedelta(days=1)
    ok = await client.patch(path, json={"expires_at": expiry.isoformat()}, headers=admin.headers)
    assert datetime.fromisoformat(ok.json()["expires_at"]) == expiry
    cleared = await client.patch(path, json={"expires_at": None}, headers=admin.headers)
    assert cleared.json()["expires_at"] is None
    assert (await client.get(path, headers=admin.headers)).json() == cleared.json()


async def test_the_rule_limit_holds_under_concurrent_creations(backend_settings: Settings) -> None:
    app = create_app(backend_settings.model_copy(update={"alert_max_rules_per_tenant": 3}))
    async with running(app) as client:
        admin = await key_maker(app, backend_settings)(Role.ADMIN)
        neighbour = await key_maker(app, backend_settings)(Role.ADMIN, tenant="neighbour")
        responses = await asyncio.gather(
            *(client.post("/v1/alerts", json=rule_body(name=f"r{i}"), headers=admin.headers) for i in range(8))
        )
        statuses = sorted(response.status_code for response in responses)
        assert statuses == [201] * 3 + [409] * 5, [r.text for r in responses]
        refused = next(r for r in responses if r.status_code == 409).json()
        assert refused["type"] == "/problems/alert-rule-limit-reached"
        listed = (await client.get("/v1/alerts", headers=admin.headers)).json()["items"]
        assert len(listed) == 3
        # Per tenant: the neighbour still has its own three.
        assert (await client.post("/v1/alerts", json=rule_body(), headers=neighbour.headers)).status_code == 201
        # Deleting one frees a place.
        await client.delete(f"/v1/alerts/{listed[0]['id']}", headers=admin.headers)
        assert (await client.post("/v1/alerts", json=rule_body(), headers=admin.headers)).status_code == 201


async def test_concurrent_deletions_delete_and_audit_once(backend: Backend, make_backend_key: MakeKey) -> None:
    _, client = backend
    admin = await make_backend_key(Role.ADMIN)
    rule = (await client.post("/v1/alerts", json=rule_body(), headers=admin.headers)).json()
    responses = await asyncio.gather(
        *(client.delete(f"/v1/alerts/{rule['id']}", headers=admin.headers) for _ in range(6))
    )
    statuses = sorted(response.status_code for response in responses)
    assert statuses[0] == 204
    assert set(statuses[1:]) <= {204, 404}
    audit = (await client.get("/v1/audit", params={"action": "alert.deleted"}, headers=admin.headers)).json()
    assert len(audit["items"]) == statuses.count(204) == 1


async def test_the_write_is_committed_before_the_response(backend: Backend, make_backend_key: MakeKey) -> None:
    app, client = backend
    admin = await make_backend_key(Role.ADMIN)
    rule = (await client.post("/v1/alerts", json=rule_body(), headers=admin.headers)).json()
    # Another session (another connection) sees it at once.
    async with app.state.session_factory() as session:
        from app.alerts.repository import get_rule

        stored = await get_rule(session, admin.tenant_id, uuid.UUID(rule["id"]))
    assert stored is not None
    assert stored.condition == rule["condition"]


async def test_an_edit_of_what_the_rule_watches_resets_its_fire_state(
    backend: Backend, make_backend_key: MakeKey
) -> None:
    app, client = backend
    admin = await make_backend_key(Role.ADMIN)
    rule = (await client.post("/v1/alerts", json=rule_body(), headers=admin.headers)).json()
    rule_id = uuid.UUID(rule["id"])
    fired_ms = 1_764_000_000_000

    async def set_fired() -> None:
        from app.models import AlertRule

        async with app.state.session_factory() as session, session.begin():
            stored = await session.get(AlertRule, rule_id)
            assert stored is not None
            stored.last_fired_bar_ms = fired_ms
            stored.last_result = True

    await set_fired()
    path = f"/v1/alerts/{rule['id']}"
    renamed = (await client.patch(path, json={"name": "renamed"}, headers=admin.headers)).json()
    assert renamed["last_fired_at"] == "2025-11-24T16:00:00Z", "a rename keeps the state"
    moved = (await client.patch(path, json={"timeframe": "1h"}, headers=admin.headers)).json()
    assert moved["last_fired_at"] is None
    audit = (await client.get("/v1/audit", params={"action": "alert.updated"}, headers=admin.headers)).json()
    assert [e["details"] for e in audit["items"]] == [
        {"changed": ["timeframe"], "fire_state_reset": True},
        {"changed": ["name"], "fire_state_reset": False},
    ]


async def test_a_number_beyond_a_double_is_refused_at_its_node(backend: Backend, make_backend_key: MakeKey) -> None:
    """JSON has no infinity, but `1e400` parses to one: it is not a finite number to compare with."""
    _, client = backend
    admin = await make_backend_key(Role.ADMIN)
    body = (
        '{"name": "x", "venue": "binance", "symbol": "BTCUSDT", "timeframe": "1m",'
        ' "condition": {"any": [{"field": "close", "op": "gt", "value": 1e400}]}}'
    )
    response = await client.post(
        "/v1/alerts", content=body, headers=admin.headers | {"content-type": "application/json"}
    )
    assert _pointers(response) == ["#/condition/any/0/value"]
