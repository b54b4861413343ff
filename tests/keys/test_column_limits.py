"""Every bounded string column a client can fill is bounded by its input schema, with the same limit, on both
backends: a value of exactly the limit is stored intact, one character more is a 422 pointing at the field (before,
Postgres answered 500 where SQLite silently stored the longer value). Columns only the server fills are listed
with the reason, so a new column cannot slip through unclassified."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import String, select

from app.auth.scopes import Role
from app.models import AlertRule, ApiKey, Base, Tenant, WebhookEndpoint
from tests.alerts.conftest import rule_body
from tests.keys.conftest import IssuedKey, MakeKey

Send = Callable[[AsyncClient, IssuedKey, str], Awaitable[Response]]


@dataclass(frozen=True)
class ClientColumn:
    send: Send
    pointer: str
    stored: Callable[[str], object]  # a select() that finds the stored value


async def _tenant(client: AsyncClient, key: IssuedKey, value: str) -> Response:
    return await client.post("/v1/tenants", json={"name": value}, headers=key.headers)


async def _key(client: AsyncClient, key: IssuedKey, value: str) -> Response:
    return await client.post("/v1/keys", json={"name": value}, headers=key.headers)


async def _webhook(client: AsyncClient, key: IssuedKey, value: str) -> Response:
    return await client.put("/v1/webhook", json={"url": value}, headers=key.headers)


async def _alert_name(client: AsyncClient, key: IssuedKey, value: str) -> Response:
    return await client.post("/v1/alerts", json=rule_body(name=value), headers=key.headers)


async def _alert_url(client: AsyncClient, key: IssuedKey, value: str) -> Response:
    body = rule_body(destination={"type": "url", "url": value})
    return await client.post("/v1/alerts", json=body, headers=key.headers)


def _url_of_length(length: int) -> str:
    base = "https://hooks.example.com/"
    return base + "a" * (length - len(base))


CLIENT_COLUMNS: dict[str, ClientColumn] = {
    "tenants.name": ClientColumn(_tenant, "#/name", lambda v: select(Tenant.name).where(Tenant.name == v)),
    "api_keys.name": ClientColumn(_key, "#/name", lambda v: select(ApiKey.name).where(ApiKey.name == v)),
    "webhook_endpoints.url": ClientColumn(
        _webhook, "#/url", lambda v: select(WebhookEndpoint.url).where(WebhookEndpoint.url == v)
    ),
    "alert_rules.name": ClientColumn(
        _alert_name, "#/name", lambda v: select(AlertRule.name).where(AlertRule.name == v)
    ),
    "alert_rules.destination_url": ClientColumn(
        _alert_url,
        "#/destination/url",
        lambda v: select(AlertRule.destination_url).where(AlertRule.destination_url == v),
    ),
}
SERVER_FILLED = {
    "api_keys.prefix": "derived from the generated secret",
    "api_keys.last_four": "derived from the generated secret",
    "api_keys.secret_hash": "HMAC-SHA256 hex of the secret",
    "api_keys.role": "an enum value validated by the schema",
    "audit_events.action": "a constant of the service that writes the event",
    "audit_events.target": "built from a resource kind and a UUID",
    "audit_events.request_id": "our own id, or an X-Request-ID the middleware accepts only up to 128 safe chars",
    "usage_counts.route": "a route template of the app (or a fixed placeholder for unmatched paths)",
    "webhook_deliveries.event": "a constant event name",
    "webhook_deliveries.status": "pending | delivered | failed",
    "api_calls.method": "the request's method, cut to the column by the metering middleware",
    "api_calls.route": "a route template of the app (or a fixed placeholder)",
    "api_calls.client_address": "the connection's address, cut to the column",
    "api_calls.request_id": "our own id, or an X-Request-ID the middleware accepts only up to 128 safe chars",
    "api_calls.user_agent": "cut to the column by the metering middleware",
    "api_calls.cache": "hit | miss, from our own X-Cache header",
    "users.email": "set by `deltaflow users create` only, bounded by normalise_email (tests/console/test_users.py)",
    "users.password_hash": "an argon2 hash (~100 characters)",
    "users.role": "a ConsoleRole value",
    "alert_rules.venue": "the schema's max length, then it must name a configured feed's venue (else 422)",
    "alert_rules.symbol": "the schema's max length, then it must name a configured feed's symbol (else 422)",
    "alert_rules.timeframe": "one of the supported timeframes (an enum in the schema)",
    "alert_rules.frequency": "a Frequency value",
    "alert_rules.destination_type": "webhook | url | none (the destination's discriminator)",
    "alert_events.rule_name": "copied from the rule (alert_rules.name, bounded)",
    "alert_events.venue": "copied from the rule",
    "alert_events.symbol": "copied from the rule",
    "alert_events.timeframe": "copied from the rule",
    "alert_market_cursors.venue": "copied from the market's rules",
    "alert_market_cursors.symbol": "copied from the market's rules",
    "alert_market_cursors.timeframe": "copied from the market's rules",
    "webhook_deliveries.message_id": "msg_ + 32 hex characters, generated",
    "webhook_deliveries.url": "copied from the rule's destination URL (bounded by the rule's schema)",
}


def _bounded_string_columns() -> dict[str, int]:
    return {
        f"{table.name}.{column.name}": column.type.length
        for table in Base.metadata.sorted_tables
        for column in table.columns
        if isinstance(column.type, String) and column.type.length is not None
    }


def test_every_bounded_string_column_is_classified() -> None:
    columns = set(_bounded_string_columns())
    assert columns == set(CLIENT_COLUMNS) | set(SERVER_FILLED), "classify the new column here"


def _value(column: str, length: int) -> str:
    return _url_of_length(length) if column.endswith("url") else "n" * length


@pytest.mark.parametrize("column", sorted(CLIENT_COLUMNS))
async def test_a_value_at_the_column_limit_is_stored_and_one_more_character_is_a_422(
    backend: tuple[FastAPI, AsyncClient], make_backend_key: MakeKey, column: str
) -> None:
    app, client = backend
    operator = await make_backend_key(Role.OPERATOR)
    limit = _bounded_string_columns()[column]
    spec = CLIENT_COLUMNS[column]

    too_long = await spec.send(client, operator, _value(column, limit + 1))
    assert too_long.status_code == 422, too_long.text
    assert too_long.json()["errors"][0]["pointer"] == spec.pointer

    at_limit = _value(column, limit)
    accepted = await spec.send(client, operator, at_limit)
    assert accepted.status_code in {200, 201}, accepted.text
    async with app.state.session_factory() as session:
        assert (await session.execute(spec.stored(at_limit))).scalar_one() == at_limit
