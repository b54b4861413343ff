"""The role x route matrix, generated from the compiled policy: every /v1 route, every role, own tenant and
(for routes that address a resource) another tenant. A /v1 route missing from REQUESTS fails the suite."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from app.auth.policy import compile_policy
from app.auth.scopes import ROLE_SCOPES, Role
from tests.alerts.conftest import insert_rule, rule_body
from tests.alerts.history_fixtures import insert_event
from tests.alerts.outbox import add_event
from tests.keys.conftest import IssuedKey, MakeKey
from tests.trading.test_markets import seed_feed


@dataclass
class Call:
    path: str
    json: Any = None


Factory = Callable[[MakeKey, IssuedKey, str], Awaitable[Call]]
# The app under test, for factories whose resource is not a key (an alert rule is inserted into its database).
APP_UNDER_TEST: list[FastAPI] = []


async def _target_key(make_key: MakeKey, caller: IssuedKey, tenant: str) -> uuid.UUID:
    return (await make_key(Role.READER, tenant=tenant)).key_id


def _candles() -> list[dict[str, float]]:
    return [
        {"t": 1_700_000_000_000 + i * 60_000, "o": 100 + i, "h": 102 + i, "l": 99 + i, "c": 101 + i, "v": 10}
        for i in range(30)
    ]


async def _me(make_key: MakeKey, caller: IssuedKey, tenant: str) -> Call:
    return Call("/v1/me")


async def _create_key(make_key: MakeKey, caller: IssuedKey, tenant: str) -> Call:
    return Call("/v1/keys", {"name": "matrix", "role": "reader", "scopes": ["market:read"]})


async def _list_keys(make_key: MakeKey, caller: IssuedKey, tenant: str) -> Call:
    return Call("/v1/keys")


async def _get_key(make_key: MakeKey, caller: IssuedKey, tenant: str) -> Call:
    return Call(f"/v1/keys/{await _target_key(make_key, caller, tenant)}")


async def _rotate_key(make_key: MakeKey, caller: IssuedKey, tenant: str) -> Call:
    return Call(f"/v1/keys/{await _target_key(make_key, caller, tenant)}/rotate", {"grace_seconds": 0})


async def _revoke_key(make_key: MakeKey, caller: IssuedKey, tenant: str) -> Call:
    return Call(f"/v1/keys/{await _target_key(make_key, caller, tenant)}/revoke")


async def _create_tenant(make_key: MakeKey, caller: IssuedKey, tenant: str) -> Call:
    return Call("/v1/tenants", {"name": f"t-{uuid.uuid4().hex[:8]}"})


async def _list_tenants(make_key: MakeKey, caller: IssuedKey, tenant: str) -> Call:
    return Call("/v1/tenants")


async def _tenant_rate_limit(make_key: MakeKey, caller: IssuedKey, tenant: str) -> Call:
    target = await make_key(Role.READER, tenant=tenant)
    # Generous: the matrix's own tenant keeps making requests after an operator sets this.
    return Call(f"/v1/tenants/{target.tenant_id}/rate-limit", {"per_second": 1000, "burst": 100_000})


async def _tenant_quota(make_key: MakeKey, caller: IssuedKey, tenant: str) -> Call:
    target = await make_key(Role.READER, tenant=tenant)
    return Call(f"/v1/tenants/{target.tenant_id}/quota", {"monthly_requests": 100_000_000})  # never reached here


def _calls(suffix: str, query: str = "") -> Factory:
    async def factory(make_key: MakeKey, caller: IssuedKey, tenant: str) -> Call:
        target = await make_key(Role.READER, tenant=tenant)
        return Call(f"/v1/usage/calls{suffix}?tenant_id={target.tenant_id}{query}")

    return factory


async def _put_webhook(make_key: MakeKey, caller: IssuedKey, tenant: str) -> Call:
    return Call("/v1/webhook", {"url": "https://hooks.example/matrix"})


async def _audit(make_key: MakeKey, caller: IssuedKey, tenant: str) -> Call:
    return Call("/v1/audit")


async def _usage(make_key: MakeKey, caller: IssuedKey, tenant: str) -> Call:
    target = await make_key(Role.READER, tenant=tenant)
    return Call(f"/v1/usage?tenant_id={target.tenant_id}&group_by=key")


async def _analyze(make_key: MakeKey, caller: IssuedKey, tenant: str) -> Call:
    return Call("/v1/analyze", {"candles": _candles(), "modules": ["cvd"]})


async def _markets(make_key: MakeKey, caller: IssuedKey, tenant: str) -> Call:
    return Call("/v1/markets")


async def _candles_route(make_key: MakeKey, caller: IssuedKey, tenant: str) -> Call:
    return Call("/v1/candles/binance/BTCUSDT?timeframe=1m&limit=2")


async def _orderbook(make_key: MakeKey, caller: IssuedKey, tenant: str) -> Call:
    return Call("/v1/orderbook/binance/BTCUSDT?depth=1")


async def _signals(make_key: MakeKey, caller: IssuedKey, tenant: str) -> Call:
    return Call("/v1/signals/binance/BTCUSDT?timeframe=1m")


async def _signal_stream(make_key: MakeKey, caller: IssuedKey, tenant: str) -> Call:
    return Call("/v1/signals/binance/BTCUSDT/stream?timeframe=1m&max_events=1")  # ends after the current signal


async def _signals_batch(make_key: MakeKey, caller: IssuedKey, tenant: str) -> Call:
    return Call("/v1/signals/batch", {"items": [{"venue": "binance", "symbol": "BTCUSDT", "timeframe": "1m"}]})


async def _create_alert(make_key: MakeKey, caller: IssuedKey, tenant: str) -> Call:
    return Call("/v1/alerts", rule_body())


async def _list_alerts(make_key: MakeKey, caller: IssuedKey, tenant: str) -> Call:
    return Call("/v1/alerts")


def _alert(json: Any = None) -> Factory:
    async def factory(make_key: MakeKey, caller: IssuedKey, tenant: str) -> Call:
        owner = await make_key(Role.READER, tenant=tenant)
        return Call(f"/v1/alerts/{await insert_rule(APP_UNDER_TEST[0], owner.tenant_id)}", json)

    return factory


async def _redeliver(make_key: MakeKey, caller: IssuedKey, tenant: str) -> Call:
    owner = await make_key(Role.READER, tenant=tenant)
    event_id, _ = await add_event(APP_UNDER_TEST[0], owner.tenant_id)
    return Call(f"/v1/alerts/events/{event_id}/redeliver")


async def _recover(make_key: MakeKey, caller: IssuedKey, tenant: str) -> Call:
    since = (datetime.now(UTC) - timedelta(days=1)).isoformat().replace("+00:00", "Z")
    return Call(f"/v1/webhook/recover?since={since}")


async def _list_alert_events(make_key: MakeKey, caller: IssuedKey, tenant: str) -> Call:
    return Call("/v1/alerts/events")


async def _alert_event(make_key: MakeKey, caller: IssuedKey, tenant: str) -> Call:
    owner = await make_key(Role.READER, tenant=tenant)
    event = await insert_event(APP_UNDER_TEST[0], owner.tenant_id, created_at=datetime.now(UTC))
    return Call(f"/v1/alerts/events/{event.id}")


async def _alert_stream(make_key: MakeKey, caller: IssuedKey, tenant: str) -> Call:
    # Resumed after an event with one more recorded: the stream sends that one and ends (max_events=1).
    now = datetime.now(UTC)
    seen = await insert_event(APP_UNDER_TEST[0], caller.tenant_id, created_at=now - timedelta(minutes=1))
    await insert_event(APP_UNDER_TEST[0], caller.tenant_id, created_at=now)
    return Call(f"/v1/alerts/stream?last_event_id={seen.id}&max_events=1")


async def _alert_test(make_key: MakeKey, caller: IssuedKey, tenant: str) -> Call:
    return Call("/v1/alerts/test", rule_body(timeframe="1m"))


async def _track_record(make_key: MakeKey, caller: IssuedKey, tenant: str) -> Call:
    return Call("/v1/signals/binance/BTCUSDT/track-record?timeframe=1m&horizon=4")


def _analysis(module: str, query: str = "") -> Factory:
    async def factory(make_key: MakeKey, caller: IssuedKey, tenant: str) -> Call:
        return Call(f"/v1/analysis/binance/BTCUSDT/{module}?timeframe=1m{query}")

    return factory


# (method, path template) → (factory, addresses a tenant-owned resource)
REQUESTS: dict[tuple[str, str], tuple[Factory, bool]] = {
    ("GET", "/v1/me"): (_me, False),
    ("POST", "/v1/keys"): (_create_key, False),
    ("GET", "/v1/keys"): (_list_keys, False),
    ("GET", "/v1/keys/{key_id}"): (_get_key, True),
    ("POST", "/v1/keys/{key_id}/rotate"): (_rotate_key, True),
    ("POST", "/v1/keys/{key_id}/revoke"): (_revoke_key, True),
    ("POST", "/v1/tenants"): (_create_tenant, False),
    ("GET", "/v1/tenants"): (_list_tenants, False),
    ("PUT", "/v1/tenants/{tenant_id}/rate-limit"): (_tenant_rate_limit, True),
    ("DELETE", "/v1/tenants/{tenant_id}/rate-limit"): (_tenant_rate_limit, True),
    ("PUT", "/v1/webhook"): (_put_webhook, False),
    ("GET", "/v1/audit"): (_audit, False),
    ("GET", "/v1/usage"): (_usage, True),
    ("PUT", "/v1/tenants/{tenant_id}/quota"): (_tenant_quota, True),
    ("DELETE", "/v1/tenants/{tenant_id}/quota"): (_tenant_quota, True),
    ("GET", "/v1/usage/calls"): (_calls(""), True),
    ("GET", "/v1/usage/calls/export"): (_calls("/export", "&format=csv"), True),
    ("GET", "/v1/usage/calls/{request_id}"): (_calls("/no-such-request"), True),
    ("POST", "/v1/analyze"): (_analyze, False),
    ("GET", "/v1/markets"): (_markets, False),
    ("GET", "/v1/candles/{venue}/{symbol}"): (_candles_route, False),
    ("GET", "/v1/orderbook/{venue}/{symbol}"): (_orderbook, False),
    ("GET", "/v1/signals/{venue}/{symbol}"): (_signals, False),
    ("POST", "/v1/signals/batch"): (_signals_batch, False),
    ("GET", "/v1/signals/{venue}/{symbol}/stream"): (_signal_stream, False),
    ("GET", "/v1/signals/{venue}/{symbol}/track-record"): (_track_record, False),
    **{
        ("GET", f"/v1/analysis/{{venue}}/{{symbol}}/{module}"): (_analysis(module, "&swing_length=2"), False)
        for module in ("cvd", "smc", "fibonacci")
    },
    ("GET", "/v1/analysis/{venue}/{symbol}/orderflow"): (_analysis("orderflow", "&profile_rows=10"), False),
    ("GET", "/v1/analysis/{venue}/{symbol}/indicators"): (_analysis("indicators", "&rsi_period=7"), False),
    ("GET", "/v1/analysis/{venue}/{symbol}/{module}"): (_analysis("vwap"), False),
    ("POST", "/v1/alerts"): (_create_alert, False),
    ("GET", "/v1/alerts"): (_list_alerts, False),
    ("GET", "/v1/alerts/{rule_id}"): (_alert(), True),
    ("PATCH", "/v1/alerts/{rule_id}"): (_alert({"enabled": False}), True),
    ("DELETE", "/v1/alerts/{rule_id}"): (_alert(), True),
    ("GET", "/v1/alerts/events"): (_list_alert_events, False),
    ("GET", "/v1/alerts/events/{event_id}"): (_alert_event, True),
    ("GET", "/v1/alerts/stream"): (_alert_stream, False),
    ("POST", "/v1/alerts/test"): (_alert_test, False),
    ("POST", "/v1/alerts/events/{event_id}/redeliver"): (_redeliver, True),
    ("POST", "/v1/webhook/recover"): (_recover, False),
}
# Routes whose success for a role holding the scopes is not a 2xx: the catch-all after the five analysis modules
# only ever answers an unknown module.
# The call behind a request id nobody made is a 404 even for whoever may read it.
SUCCESS: dict[tuple[str, str], str] = {
    ("GET", "/v1/analysis/{venue}/{symbol}/{module}"): "404",
    ("GET", "/v1/usage/calls/{request_id}"): "404",
}


def _expected(role: Role, required: frozenset[Any], cross_tenant: bool, success: str = "2xx") -> str:
    if not required <= ROLE_SCOPES[role]:
        return "403"
    if cross_tenant and role is not Role.OPERATOR:
        return "404"
    return success


def _outcome(status: int) -> str:
    return "2xx" if 200 <= status < 300 else str(status)


def test_every_v1_route_is_in_the_matrix(app: FastAPI) -> None:
    declared = {(method, rule.path) for rule in compile_policy(app.routes) for method in rule.methods}
    assert declared == set(REQUESTS), "add new /v1 routes to REQUESTS (and decide their expected outcomes)"


@pytest.mark.parametrize("role", list(Role))
async def test_role_route_matrix(client: AsyncClient, app: FastAPI, make_key: MakeKey, role: Role) -> None:
    rules = {(method, rule.path): rule for rule in compile_policy(app.routes) for method in rule.methods}
    APP_UNDER_TEST[:] = [app]
    await seed_feed(app.state.redis)
    mismatches: list[str] = []
    for (method, path), (factory, tenant_owned) in REQUESTS.items():
        for cross_tenant in (False, True) if tenant_owned else (False,):
            caller = await make_key(role, tenant="matrix-own")
            call = await factory(make_key, caller, "matrix-other" if cross_tenant else "matrix-own")
            response = await client.request(method, call.path, json=call.json, headers=caller.headers)
            success = SUCCESS.get((method, path), "2xx")
            expected = _expected(role, rules[(method, path)].scopes, cross_tenant, success)
            if _outcome(response.status_code) != expected:
                where = "other tenant" if cross_tenant else "own tenant"
                mismatches.append(
                    f"{role.value} {method} {path} ({where}): {response.status_code}, expected {expected}"
                )
    assert mismatches == []
