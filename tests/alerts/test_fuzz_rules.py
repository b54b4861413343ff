"""No rule body yields a 500: hypothesis draws bodies (valid-looking rules with random condition trees, random
member values, unknown members) for POST and PATCH against the real app on Postgres; each answer is a 201/200 whose
condition reads back, or a 4xx problem."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient, Response
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.auth.scopes import Role
from tests.alerts.conftest import rule_body
from tests.alerts.test_conditions import json_values, trees
from tests.keys.conftest import MakeKey

MEMBERS = ("name", "venue", "symbol", "timeframe", "condition", "frequency", "cooldown_bars", "expires_at",
           "enabled", "destination")  # fmt: skip
member_values = {
    "name": st.text(max_size=210) | json_values,
    "venue": st.sampled_from(["binance", "sim", "kraken", ""]) | json_values,
    "symbol": st.sampled_from(["BTCUSDT", "ETHUSDT", "x" * 70]) | json_values,
    "timeframe": st.sampled_from(["1m", "5m", "1d", "2m"]) | json_values,
    "condition": trees,
    "frequency": st.sampled_from(["once", "once_per_bar", "on_change", "never"]) | json_values,
    "cooldown_bars": st.integers(-5, 2_000_000) | json_values,
    "expires_at": st.sampled_from(
        [
            "2999-01-01T00:00:00Z",
            "2000-01-01T00:00:00Z",
            "2999-01-01T00:00:00",
            "not a time",
            "9999-12-31T23:59:59-14:00",
        ]
    )
    | json_values,
    "enabled": st.booleans() | json_values,
    "destination": st.sampled_from(
        [
            {"type": "webhook"},
            {"type": "none"},
            {"type": "url", "url": "https://a.example"},
            {"type": "url", "url": "http://10.0.0.1/"},
            {"type": "url"},
            {"type": "fax"},
        ]
    )
    | json_values,
}


@st.composite
def bodies(draw: st.DrawFn, *, partial: bool) -> Any:
    if draw(st.integers(0, 20)) == 0:
        return draw(json_values)  # not even an object
    base: dict[str, Any] = {} if partial else rule_body()
    for name in draw(st.lists(st.sampled_from(MEMBERS), unique=True, max_size=len(MEMBERS))):
        base[name] = draw(member_values[name])
    if draw(st.integers(0, 10)) == 0:
        base[draw(st.text(min_size=1, max_size=5))] = draw(json_values)
    return base


def _check(response: Response, failures: list[str], body: Any) -> None:
    if response.status_code >= 500:
        failures.append(f"{response.status_code} for {body!r}: {response.text[:300]}")
    elif response.status_code >= 400 and response.headers["content-type"] != "application/problem+json":
        failures.append(f"{response.status_code} without a problem for {body!r}")


async def test_no_rule_body_is_a_server_error(client: AsyncClient, app: FastAPI, make_key: MakeKey) -> None:
    admin = await make_key(Role.ADMIN)
    existing = (await client.post("/v1/alerts", json=rule_body(), headers=admin.headers)).json()
    loop = asyncio.get_running_loop()
    failures: list[str] = []
    created = 0

    def call(method: str, path: str, body: Any) -> Response:
        request = client.request(method, path, json=body, headers=admin.headers)
        return asyncio.run_coroutine_threadsafe(request, loop).result(timeout=60)

    @settings(
        max_examples=150, deadline=None, database=None, derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )  # fmt: skip
    @given(create=bodies(partial=False), patch=bodies(partial=True))
    def fuzz(create: Any, patch: Any) -> None:
        nonlocal created
        response = call("POST", "/v1/alerts", create)
        _check(response, failures, create)
        if response.status_code == 201:
            created += 1
            call("DELETE", f"/v1/alerts/{response.json()['id']}", None)  # stays under the tenant's limit
        _check(call("PATCH", f"/v1/alerts/{existing['id']}", patch), failures, patch)

    # Hypothesis drives a synchronous function: it runs in a thread and sends each request to this loop.
    await asyncio.to_thread(fuzz)
    assert failures == [], "\n".join(failures[:10])
    assert created > 0, "the generator never produced a valid rule: the fuzz would only exercise refusals"
    final = await client.get(f"/v1/alerts/{existing['id']}", headers=admin.headers)
    assert final.status_code == 200
