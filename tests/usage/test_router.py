"""GET /v1/usage through HTTP: grouping, the range rules, scopes, tenant isolation and operators."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient, Response

from app.auth.scopes import Role
from app.core.errors import PROBLEM_MEDIA_TYPE
from app.usage.schemas import USAGE_EXAMPLE, UsageReport
from tests.keys.conftest import IssuedKey, MakeKey
from tests.usage.conftest import seed

SIGNAL = "GET /v1/signals/{venue}/{symbol}"
CANDLES = "GET /v1/candles/{venue}/{symbol}"


def today() -> date:
    return datetime.now(UTC).date()


async def record_today(app: FastAPI, key: IssuedKey, route: str, status: int, requests: int = 1) -> None:
    for _ in range(requests):
        app.state.usage_meter.record(key.tenant_id, key.key_id, route, status)
    await app.state.usage_meter.flush(app.state.session_factory)


async def record_on(app: FastAPI, day: date, key: IssuedKey, route: str, status: int, requests: int = 1) -> None:
    await seed(app.state.session_factory, day, [(key.tenant_id, key.key_id, route, status, requests)])


async def usage(client: AsyncClient, key: IssuedKey, **params: Any) -> Response:
    return await client.get("/v1/usage", params=params, headers=key.headers)


def problem(response: Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body: dict[str, Any] = response.json()
    assert body["type"] == f"/problems/{slug}"
    return body


def counts(item: dict[str, Any]) -> tuple[int, int, int, int, int]:
    return item["requests"], item["2xx"], item["3xx"], item["4xx"], item["5xx"]


async def test_usage_by_day_lists_every_day_of_the_range_with_totals_by_status_class(
    client: AsyncClient, app: FastAPI, make_key: MakeKey
) -> None:
    admin = await make_key(Role.ADMIN)
    now = today()
    await record_on(app, now - timedelta(days=4), admin, SIGNAL, 200, 50)  # before the range
    await record_on(app, now - timedelta(days=2), admin, SIGNAL, 200, 3)
    await record_on(app, now - timedelta(days=2), admin, SIGNAL, 404, 1)
    await record_today(app, admin, SIGNAL, 200, 2)
    await record_today(app, admin, CANDLES, 304)
    await record_today(app, admin, CANDLES, 503)

    response = await usage(client, admin, **{"from": str(now - timedelta(days=3)), "to": str(now)})
    assert response.status_code == 200
    body = response.json()
    assert (body["from"], body["to"], body["group_by"]) == (str(now - timedelta(days=3)), str(now), "day")
    assert body["tenant_id"] == str(admin.tenant_id)
    assert body["key_id"] is None
    assert body["flushed_every_seconds"] == 3600.0  # the setting, so clients know how stale today may be
    assert counts(body["totals"]) == (8, 5, 1, 1, 1)
    assert [(item["day"], counts(item)) for item in body["items"]] == [
        (str(now - timedelta(days=3)), (0, 0, 0, 0, 0)),
        (str(now - timedelta(days=2)), (4, 3, 0, 1, 0)),
        (str(now - timedelta(days=1)), (0, 0, 0, 0, 0)),
        (str(now), (4, 2, 1, 0, 1)),
    ]
    UsageReport.model_validate(body)


async def test_the_default_range_is_the_30_days_ending_today(
    client: AsyncClient, app: FastAPI, make_key: MakeKey
) -> None:
    admin = await make_key(Role.ADMIN)
    now = today()
    await record_on(app, now - timedelta(days=30), admin, SIGNAL, 200, 7)  # one day too old
    await record_on(app, now - timedelta(days=29), admin, SIGNAL, 200, 2)

    body = (await usage(client, admin)).json()
    assert (body["from"], body["to"]) == (str(now - timedelta(days=29)), str(now))
    assert len(body["items"]) == 30
    assert body["totals"]["requests"] == 2

    only_to = (await usage(client, admin, to=str(now - timedelta(days=1)))).json()
    assert (only_to["from"], only_to["to"]) == (str(now - timedelta(days=30)), str(now - timedelta(days=1)))
    assert only_to["totals"]["requests"] == 9


async def test_usage_by_key_names_each_key_by_name_and_prefix_and_never_its_secret(
    client: AsyncClient, app: FastAPI, make_key: MakeKey
) -> None:
    admin = await make_key(Role.ADMIN)
    reader = await make_key(Role.READER)
    await record_today(app, admin, SIGNAL, 200, 1)
    await record_today(app, reader, SIGNAL, 200, 3)
    await record_today(app, reader, SIGNAL, 429, 2)

    response = await usage(client, admin, group_by="key")
    assert response.status_code == 200
    assert admin.secret not in response.text
    assert reader.secret not in response.text
    items = response.json()["items"]
    assert [(item["key_id"], item["key_name"], item["key_prefix"], counts(item)) for item in items] == [
        (str(reader.key_id), "reader-key", reader.secret[:8], (5, 3, 0, 2, 0)),
        (str(admin.key_id), "admin-key", admin.secret[:8], (1, 1, 0, 0, 0)),
    ]
    assert all(item["day"] is None and item["route"] is None for item in items)


async def test_usage_by_route_lists_route_templates_busiest_first(
    client: AsyncClient, app: FastAPI, make_key: MakeKey
) -> None:
    admin = await make_key(Role.ADMIN)
    await record_today(app, admin, CANDLES, 200, 2)
    await record_today(app, admin, SIGNAL, 200, 4)
    await record_today(app, admin, "unmatched", 404, 1)

    items = (await usage(client, admin, group_by="route")).json()["items"]
    assert [(item["route"], counts(item)) for item in items] == [
        (SIGNAL, (4, 4, 0, 0, 0)),
        (CANDLES, (2, 2, 0, 0, 0)),
        ("unmatched", (1, 0, 0, 1, 0)),
    ]


async def test_the_key_filter_counts_only_that_key_and_another_tenants_key_is_not_found(
    client: AsyncClient, app: FastAPI, make_key: MakeKey
) -> None:
    admin = await make_key(Role.ADMIN)
    reader = await make_key(Role.READER)
    outsider = await make_key(Role.READER, tenant="globex")
    await record_today(app, admin, SIGNAL, 200, 1)
    await record_today(app, reader, SIGNAL, 200, 3)

    body = (await usage(client, admin, key_id=str(reader.key_id))).json()
    assert body["key_id"] == str(reader.key_id)
    assert body["totals"]["requests"] == 3
    problem(await usage(client, admin, key_id=str(outsider.key_id)), 404, "api-key-not-found")
    problem(await usage(client, admin, key_id=str(uuid.uuid4())), 404, "api-key-not-found")


async def test_to_before_from_is_a_422_problem_naming_the_parameter(client: AsyncClient, make_key: MakeKey) -> None:
    admin = await make_key(Role.ADMIN)
    body = problem(await usage(client, admin, **{"from": "2026-11-10", "to": "2026-11-09"}), 422, "usage-range-invalid")
    assert body["errors"] == [{"parameter": "to", "in": "query", "detail": "must not be before from (2026-11-10)"}]


async def test_a_range_longer_than_the_limit_is_a_422_problem(client: AsyncClient, make_key: MakeKey) -> None:
    admin = await make_key(Role.ADMIN)
    longest = await usage(client, admin, **{"from": "2025-01-01", "to": "2026-01-01"})  # 366 days inclusive
    assert longest.status_code == 200
    assert len(longest.json()["items"]) == 366
    body = problem(await usage(client, admin, **{"from": "2025-01-01", "to": "2026-01-02"}), 422, "usage-range-invalid")
    assert "at most 366 days" in body["detail"]


async def test_an_unknown_grouping_or_a_malformed_date_is_a_422_problem(client: AsyncClient, make_key: MakeKey) -> None:
    admin = await make_key(Role.ADMIN)
    grouping = problem(await usage(client, admin, group_by="tenant"), 422, "validation-failed")
    assert grouping["errors"][0]["parameter"] == "group_by"
    assert all(f"'{valid}'" in grouping["errors"][0]["detail"] for valid in ("day", "key", "route"))
    malformed = problem(await usage(client, admin, **{"from": "28/11/2026"}), 422, "validation-failed")
    assert malformed["errors"][0]["parameter"] == "from"


async def test_dates_at_the_ends_of_the_calendar_are_answered(client: AsyncClient, make_key: MakeKey) -> None:
    admin = await make_key(Role.ADMIN)
    earliest = (await usage(client, admin, to="0001-01-05")).json()
    assert (earliest["from"], earliest["to"], len(earliest["items"])) == ("0001-01-01", "0001-01-05", 5)
    latest = (await usage(client, admin, **{"from": "9999-12-31"})).json()
    assert (latest["from"], latest["to"], latest["totals"]["requests"]) == ("9999-12-31", "9999-12-31", 0)


async def test_a_reader_key_is_refused_with_403(client: AsyncClient, make_key: MakeKey) -> None:
    reader = await make_key(Role.READER)
    body = problem(await usage(client, reader), 403, "insufficient-scope")
    assert "usage:read" in body["detail"]
    assert (await client.get("/v1/usage")).status_code == 401


async def test_a_tenant_never_sees_another_tenants_counts(client: AsyncClient, app: FastAPI, make_key: MakeKey) -> None:
    acme = await make_key(Role.ADMIN, tenant="acme")
    globex = await make_key(Role.ADMIN, tenant="globex")
    await record_today(app, acme, SIGNAL, 200, 2)
    await record_today(app, globex, SIGNAL, 200, 5)

    for key, expected in ((acme, 2), (globex, 5)):
        for group_by in ("day", "key", "route"):
            body = (await usage(client, key, group_by=group_by)).json()
            assert body["tenant_id"] == str(key.tenant_id)
            assert body["totals"]["requests"] == expected
            assert sum(item["requests"] for item in body["items"]) == expected
    problem(await usage(client, acme, tenant_id=str(globex.tenant_id)), 404, "tenant-not-found")
    problem(await usage(client, acme, key_id=str(globex.key_id)), 404, "api-key-not-found")


async def test_an_operator_reads_any_tenants_usage(client: AsyncClient, app: FastAPI, make_key: MakeKey) -> None:
    operator = await make_key(Role.OPERATOR, tenant="ops")
    acme = await make_key(Role.ADMIN, tenant="acme")
    await record_today(app, acme, SIGNAL, 200, 3)
    await record_today(app, operator, SIGNAL, 200, 1)

    other = (await usage(client, operator, tenant_id=str(acme.tenant_id), group_by="key")).json()
    assert other["tenant_id"] == str(acme.tenant_id)
    assert [(item["key_id"], item["requests"]) for item in other["items"]] == [(str(acme.key_id), 3)]
    own = (await usage(client, operator)).json()
    assert (own["tenant_id"], own["totals"]["requests"]) == (str(operator.tenant_id), 1)
    problem(await usage(client, operator, tenant_id=str(uuid.uuid4())), 404, "tenant-not-found")


async def test_authenticated_requests_are_counted_by_route_template(
    client: AsyncClient, app: FastAPI, make_key: MakeKey
) -> None:
    """Through the metering middleware: the route template (not the path) and the final status are counted."""
    admin = await make_key(Role.ADMIN)
    for _ in range(2):
        assert (await client.get("/v1/me", headers=admin.headers)).status_code == 200
    missing = await client.get(f"/v1/keys/{uuid.uuid4()}", headers=admin.headers)
    assert missing.status_code == 404
    await app.state.usage_meter.flush(app.state.session_factory)

    items = (await usage(client, admin, group_by="route")).json()["items"]
    assert {item["route"]: counts(item) for item in items} == {
        "GET /v1/me": (2, 2, 0, 0, 0),
        "GET /v1/keys/{key_id}": (1, 0, 0, 1, 0),
    }


def test_the_documented_example_is_a_valid_response() -> None:
    report = UsageReport.model_validate(USAGE_EXAMPLE)
    assert report.model_dump(mode="json", by_alias=True) == USAGE_EXAMPLE
    totals = report.totals
    assert totals.requests == sum(item.requests for item in report.items)
    assert totals.requests == totals.status_2xx + totals.status_3xx + totals.status_4xx + totals.status_5xx
