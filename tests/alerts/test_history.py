"""GET /v1/alerts/events and /v1/alerts/events/{id} on both backends: pages newest first, the range and rule
filters, 422 problems for bad values, and tenancy (another tenant's events never appear; operators may look)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from fastapi import FastAPI
from httpx import AsyncClient

from app.alerts import event_repository
from app.alerts.events import event_document
from app.auth.scopes import Role
from tests.alerts.conftest import insert_rule
from tests.alerts.history_fixtures import T0, insert_event, insert_events
from tests.keys.conftest import MakeKey

Backend = tuple[FastAPI, AsyncClient]


def iso(moment: object) -> str:
    return str(moment).replace("+00:00", "Z").replace(" ", "T")


async def test_pages_list_every_event_newest_first_as_the_event_document(
    backend: Backend, make_backend_key: MakeKey
) -> None:
    app, client = backend
    reader = await make_backend_key(Role.READER)
    events = await insert_events(app, reader.tenant_id, 5)
    # Two events recorded at the same instant are still ordered (by id) and never split or repeated by a page.
    twin = await insert_event(app, reader.tenant_id, created_at=events[2].created_at, bar_ms=1)
    expected = sorted([*events, twin], key=lambda e: (e.created_at, e.id), reverse=True)

    seen: list[dict[str, object]] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = await client.get("/v1/alerts/events", params=params, headers=reader.headers)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["items"]) <= 2
        seen += body["items"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert [item["id"] for item in seen] == [str(e.id) for e in expected]
    # Byte for byte the document the webhook and the stream carry.
    assert seen[0] == event_document(expected[0])
    assert seen[0]["type"] == "alert.fired"

    one = await client.get(f"/v1/alerts/events/{events[1].id}", headers=reader.headers)
    assert one.status_code == 200
    assert one.json() == event_document(events[1])


async def test_from_to_and_rule_id_filter_the_events(backend: Backend, make_backend_key: MakeKey) -> None:
    app, client = backend
    reader = await make_backend_key(Role.READER)
    rule = await insert_rule(app, reader.tenant_id)
    events = await insert_events(app, reader.tenant_id, 4)
    ruled = await insert_event(app, reader.tenant_id, created_at=T0 + timedelta(seconds=30), rule_id=rule)

    async def ids(**params: str) -> list[str]:
        response = await client.get("/v1/alerts/events", params=params, headers=reader.headers)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    # `from` inclusive, `to` exclusive, on created_at.
    window = await ids(**{"from": iso(events[1].created_at), "to": iso(events[3].created_at)})
    assert window == [str(events[2].id), str(events[1].id)]
    offset = (T0 + timedelta(minutes=2)).isoformat().replace("+00:00", "+02:00")  # 2 h earlier in UTC
    assert await ids(to=offset) == []
    assert await ids(rule_id=str(rule)) == [str(ruled.id)]
    assert await ids(rule_id=str(uuid.uuid4())) == []


async def test_bad_values_are_422_problems_pointing_at_the_parameter(
    backend: Backend, make_backend_key: MakeKey
) -> None:
    _, client = backend
    reader = await make_backend_key(Role.READER)
    cases: dict[str, tuple[dict[str, str | int], str, str | None]] = {
        "naive from": ({"from": "2026-12-02T08:00:00"}, "alert-event-range-invalid", "from"),
        "to before from": (
            {"from": "2026-12-02T09:00:00Z", "to": "2026-12-02T08:00:00Z"},
            "alert-event-range-invalid",
            "to",
        ),
        "empty range": (
            {"from": "2026-12-02T08:00:00Z", "to": "2026-12-02T08:00:00Z"},
            "alert-event-range-invalid",
            "to",
        ),
        "not a time": ({"from": "yesterday"}, "validation-failed", None),
        "bad cursor": ({"cursor": "nope"}, "invalid-cursor", "cursor"),
        "bad rule id": ({"rule_id": "42"}, "validation-failed", None),
        "limit zero": ({"limit": 0}, "validation-failed", None),
    }
    for name, (params, slug, parameter) in cases.items():
        response = await client.get("/v1/alerts/events", params=params, headers=reader.headers)
        assert response.status_code == 422, name
        assert response.headers["content-type"].startswith("application/problem+json"), name
        body = response.json()
        assert body["type"] == f"/problems/{slug}", (name, body)
        if parameter is not None:
            assert body["errors"][0]["parameter"] == parameter, (name, body)
    missing = await client.get("/v1/alerts/events/not-a-uuid", headers=reader.headers)
    assert missing.status_code == 422


async def test_another_tenants_events_never_appear_and_operators_may_look(
    backend: Backend, make_backend_key: MakeKey
) -> None:
    app, client = backend
    reader = await make_backend_key(Role.READER)
    other = await make_backend_key(Role.ADMIN, tenant="someone-else")
    operator = await make_backend_key(Role.OPERATOR, tenant="ops")
    mine = await insert_events(app, reader.tenant_id, 2)
    theirs = await insert_events(app, other.tenant_id, 2)

    listed = (await client.get("/v1/alerts/events", headers=reader.headers)).json()["items"]
    assert {item["id"] for item in listed} == {str(e.id) for e in mine}
    hidden = await client.get(f"/v1/alerts/events/{theirs[0].id}", headers=reader.headers)
    assert hidden.status_code == 404
    assert hidden.json()["type"] == "/problems/alert-event-not-found"
    probing = await client.get("/v1/alerts/events", params={"tenant_id": str(other.tenant_id)}, headers=reader.headers)
    assert probing.status_code == 404  # not 403: tenant ids cannot be probed

    by_id = await client.get(f"/v1/alerts/events/{theirs[0].id}", headers=operator.headers)
    assert by_id.status_code == 200
    assert by_id.json() == event_document(theirs[0])
    as_operator = await client.get(
        "/v1/alerts/events", params={"tenant_id": str(other.tenant_id)}, headers=operator.headers
    )
    assert {item["id"] for item in as_operator.json()["items"]} == {str(e.id) for e in theirs}
    assert (await client.get("/v1/alerts/events", headers=operator.headers)).json()["items"] == []


async def test_a_deleted_rules_events_stay_with_their_name(backend: Backend, make_backend_key: MakeKey) -> None:
    app, client = backend
    admin = await make_backend_key(Role.ADMIN)
    rule = await insert_rule(app, admin.tenant_id, name="gone soon")
    event = await insert_event(app, admin.tenant_id, created_at=T0, rule_id=rule, rule_name="gone soon")
    assert (await client.delete(f"/v1/alerts/{rule}", headers=admin.headers)).status_code == 204
    kept = (await client.get(f"/v1/alerts/events/{event.id}", headers=admin.headers)).json()
    assert (kept["rule_id"], kept["rule_name"]) == (None, "gone soon")


async def test_the_streams_catch_up_query_reads_oldest_first_after_a_key(
    backend: Backend, make_backend_key: MakeKey
) -> None:
    """The stream's SQL (its HTTP tests run on Postgres): strictly after (created_at, id), one tenant, in order."""
    app, _ = backend
    reader = await make_backend_key(Role.READER)
    other = await make_backend_key(Role.READER, tenant="someone-else")
    events = await insert_events(app, reader.tenant_id, 4)
    twin = await insert_event(app, reader.tenant_id, created_at=events[1].created_at, bar_ms=2)
    await insert_events(app, other.tenant_id, 2)
    ordered = sorted([*events, twin], key=lambda e: (e.created_at, e.id))
    async with app.state.session_factory() as session:
        everything = await event_repository.events_after(
            session, reader.tenant_id, after=(T0 - timedelta(days=1), event_repository.NIL), limit=100
        )
        assert [e.id for e in everything] == [e.id for e in ordered]
        after_second = await event_repository.events_after(
            session, reader.tenant_id, after=(ordered[1].created_at, ordered[1].id), limit=2
        )
        assert [e.id for e in after_second] == [e.id for e in ordered[2:4]]
        found = await event_repository.get_event(session, reader.tenant_id, events[0].id)
        assert found is not None
        assert found.created_at == events[0].created_at
        assert await event_repository.get_event(session, other.tenant_id, events[0].id) is None
