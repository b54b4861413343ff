"""GET /v1/analysis/{venue}/{symbol}/{module} over bars stored the way the ingestors store them."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from redis.asyncio import Redis

from app.signals.analysis_params import _model, openapi_parameters
from app.signals.analysis_schemas import AnalysisResponse
from app.signals.analysis_service import AnalysisService
from app.trading.schemas import PARAM_DATACLASSES
from tests.signals.test_signals import close_bar, seed_walk
from tests.trading.conftest import MINUTE_MS, START_MS
from tests.trading.test_markets import seed_feed

BASE = "/v1/analysis/binance/BTCUSDT"
BASE_TEMPLATE = "/v1/analysis/{venue}/{symbol}"
MODULES = ("cvd", "orderflow", "smc", "fibonacci", "indicators")

# Non-default parameters per module, so equality with POST /v1/analyze also proves they were applied.
PARAMS: dict[str, dict[str, Any]] = {
    "cvd": {"anchor": "day", "estimate_method": "clv", "swing_length": 3},
    "orderflow": {"imbalance_ratio": 2.5, "profile_rows": 24, "value_area_method": "single_row", "atr_period": 10},
    "smc": {"swing_length": 3, "fvg_min_size_atr": 0.1, "liquidity_atr_multiple": 0.2},
    "fibonacci": {"swing_length": 4, "retracements": [0.382, 0.5, 0.618], "extensions": [1.618]},
    "indicators": {"sma_period": 10, "rsi_period": 7, "macd_fast": 5, "macd_slow": 13, "vwap_anchor": "none"},
}


def service_of(app: FastAPI) -> AnalysisService:
    service: AnalysisService = app.state.analysis_service
    return service


@pytest.mark.parametrize("include_series", [False, True])
@pytest.mark.parametrize("module", MODULES)
async def test_each_module_equals_post_analyze_on_the_same_stored_candles(
    signals_client: AsyncClient, redis_client: Redis, module: str, include_series: bool
) -> None:
    rows = await seed_walk(redis_client)
    closed = rows[:-1]
    params = PARAMS[module]
    posted = await signals_client.post(
        "/v1/analyze",
        json={"candles": closed, "modules": [module], "params": {module: params}, "include_series": include_series},
    )
    assert posted.status_code == 200, posted.text
    expected = posted.json()

    query = {**params, "timeframe": "1m", "include_series": str(include_series).lower()}
    response = await signals_client.get(f"{BASE}/{module}", params=query)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body[module] == expected[module]
    assert {key: body[module]["params"][key] for key in params} == {
        key: list(value) if isinstance(value, list) else value for key, value in params.items()
    }
    assert (body["venue"], body["symbol"], body["timeframe"], body["module"]) == ("binance", "BTCUSDT", "1m", module)
    assert body["as_of"] == expected["last_close_time"] == START_MS + 60 * MINUTE_MS
    assert body["bar_count"] == expected["bar_count"] == 60
    assert body["forming"] is False
    assert body["include_series"] is include_series
    assert body["feed"] == {"state": "no_ingestor", "connected": False, "last_message_age_s": None}
    assert set(body) - {"feed"} == {
        "venue", "symbol", "timeframe", "module", "as_of", "as_of_iso", "forming", "bar_count",
        "include_series", "inputs", module,
    }  # fmt: skip
    AnalysisResponse.model_validate(body)


@pytest.mark.parametrize("module", ["cvd", "orderflow"])
async def test_taker_side_inputs_are_exact_kline_volume(
    signals_client: AsyncClient, redis_client: Redis, module: str
) -> None:
    await seed_walk(redis_client)
    body = (await signals_client.get(f"{BASE}/{module}")).json()
    assert body["inputs"] == {module: {"side_source": "kline_taker_volume", "exact": True}}
    assert body[module]["side_source"] == "kline_taker_volume"


async def test_price_only_modules_report_no_taker_side_inputs(signals_client: AsyncClient, redis_client: Redis) -> None:
    await seed_walk(redis_client)
    assert (await signals_client.get(f"{BASE}/smc")).json()["inputs"] == {}


async def test_list_parameters_may_be_repeated_or_comma_separated(
    signals_client: AsyncClient, redis_client: Redis
) -> None:
    await seed_walk(redis_client)
    repeated = await signals_client.get(f"{BASE}/fibonacci", params={"retracements": ["0.382", "0.618"]})
    commas = await signals_client.get(f"{BASE}/fibonacci?retracements=0.382,0.618")
    mixed = await signals_client.get(f"{BASE}/fibonacci?retracements=0.382&retracements=0.618")
    assert repeated.status_code == commas.status_code == mixed.status_code == 200
    assert repeated.json()["fibonacci"]["params"]["retracements"] == [0.382, 0.618]
    assert commas.json() == repeated.json() == mixed.json()
    assert (commas.headers["x-cache"], mixed.headers["x-cache"]) == ("hit", "hit")


async def test_bars_limits_the_analysis_to_the_newest_closed_bars(
    signals_client: AsyncClient, redis_client: Redis
) -> None:
    rows = await seed_walk(redis_client)
    newest = rows[-31:-1]
    posted = await signals_client.post("/v1/analyze", json={"candles": newest, "modules": ["smc"]})
    body = (await signals_client.get(f"{BASE}/smc", params={"bars": 30})).json()
    assert body["bar_count"] == 30
    assert body["smc"] == posted.json()["smc"]


@pytest.mark.parametrize(
    ("module", "query", "parameter", "code"),
    [
        ("smc", "anchor=day", "anchor", "extra_forbidden"),  # another module's parameter
        ("cvd", "swing_lenght=3", "swing_lenght", "extra_forbidden"),  # a typo is not silently ignored
        ("smc", "swing_length=3&swing_length=4", "swing_length", "repeated"),
        ("smc", "swing_length=0", "swing_length", "value_error"),
        ("smc", "swing_length=2.5", "swing_length", "int_parsing"),
        ("indicators", "sma_period=ten", "sma_period", "int_parsing"),
        ("indicators", "macd_fast=30&macd_slow=26", "macd_fast", "value_error"),
        ("indicators", "vwap_anchor=month", "vwap_anchor", "literal_error"),
        ("orderflow", "imbalance_ratio=nan", "imbalance_ratio", "finite_number"),
        ("orderflow", "tick=inf", "tick", "finite_number"),
        ("orderflow", "value_area_pct=1.5", "value_area_pct", "value_error"),
        ("fibonacci", "retracements=0.618,0.382", "retracements", "value_error"),
        ("fibonacci", "retracements=0.5,x", "retracements.1", "float_parsing"),
        ("cvd", "bars=0", "bars", "greater_than_equal"),
        ("cvd", "bars=1001", "bars", "less_than_equal"),  # above DELTAFLOW_SIGNAL_BARS (default 1000)
    ],
)
async def test_invalid_parameters_are_422_naming_the_parameter(
    signals_client: AsyncClient, redis_client: Redis, module: str, query: str, parameter: str, code: str
) -> None:
    await seed_walk(redis_client)
    response = await signals_client.get(f"{BASE}/{module}?{query}")
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["type"] == "/problems/validation-failed"
    assert [(error["parameter"], error["in"], error["code"]) for error in body["errors"]] == [
        (parameter, "query", code)
    ]


async def test_a_range_error_reads_as_it_does_in_post_analyze(signals_client: AsyncClient, redis_client: Redis) -> None:
    rows = await seed_walk(redis_client)
    got = await signals_client.get(f"{BASE}/smc", params={"liquidity_atr_multiple": 11})
    params = {"smc": {"liquidity_atr_multiple": 11}}
    posted = await signals_client.post("/v1/analyze", json={"candles": rows[:-1], "modules": ["smc"], "params": params})
    assert got.status_code == posted.status_code == 422
    (error,) = got.json()["errors"]
    (body_error,) = posted.json()["errors"]
    assert body_error["pointer"] == "#/params/smc/liquidity_atr_multiple"
    assert error["detail"] == body_error["detail"] == "Value error, liquidity_atr_multiple must be in (0, 10]"


@pytest.mark.parametrize(
    ("path", "params", "status", "slug", "valid"),
    [
        (f"{BASE}/vwap", {}, 404, "analysis-module-not-found", MODULES),
        ("/v1/analysis/kraken/BTCUSDT/smc", {}, 404, "venue-not-found", ("binance",)),
        ("/v1/analysis/binance/DOGEUSDT/smc", {}, 404, "symbol-not-found", ("BTCUSDT",)),
        (f"{BASE}/smc", {"timeframe": "7m"}, 422, "timeframe-invalid", ("1m", "5m", "15m", "1h", "4h", "1d")),
    ],
)
async def test_unknown_module_venue_symbol_or_timeframe_lists_the_valid_values(
    signals_client: AsyncClient,
    redis_client: Redis,
    path: str,
    params: dict[str, str],
    status: int,
    slug: str,
    valid: tuple[str, ...],
) -> None:
    await seed_feed(redis_client)
    response = await signals_client.get(path, params=params)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == f"/problems/{slug}"
    assert set(valid) <= set(body["valid"])


async def test_a_configured_feed_without_data_is_503_with_its_status(signals_client: AsyncClient) -> None:
    response = await signals_client.get("/v1/analysis/binance/ETHUSDT/cvd")  # in the default DELTAFLOW_FEEDS
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    body = response.json()
    assert body["type"] == "/problems/market-data-unavailable"
    assert body["feed"]["state"] == "no_ingestor"


async def test_a_repeated_request_is_a_cache_hit_until_a_new_bar_closes(
    signals_client: AsyncClient, redis_client: Redis, app: FastAPI
) -> None:
    rows = await seed_walk(redis_client)
    first = await signals_client.get(f"{BASE}/smc")
    second = await signals_client.get(f"{BASE}/smc")
    # Parameters are canonical: the defaults spelled out share the entry of no parameters at all.
    spelled = await signals_client.get(f"{BASE}/smc", params={"swing_length": 5, "atr_period": 14})
    assert [r.headers["x-cache"] for r in (first, second, spelled)] == ["miss", "hit", "hit"]
    assert second.content == first.content == spelled.content
    assert second.headers["etag"] == first.headers["etag"]
    assert service_of(app).computed == 1

    other = [
        await signals_client.get(f"{BASE}/smc", params={"swing_length": 3}),
        await signals_client.get(f"{BASE}/smc", params={"bars": 50}),
        await signals_client.get(f"{BASE}/smc", params={"include_series": "true"}),
        await signals_client.get(f"{BASE}/fibonacci"),
    ]
    assert [r.headers["x-cache"] for r in other] == ["miss"] * 4
    assert service_of(app).computed == 5

    await close_bar(redis_client, rows[-1])
    after = await signals_client.get(f"{BASE}/smc")
    assert after.headers["x-cache"] == "miss"
    assert after.json()["as_of"] == first.json()["as_of"] + MINUTE_MS
    assert after.headers["etag"] != first.headers["etag"]


async def test_concurrent_requests_for_a_missing_entry_compute_it_once(
    signals_client: AsyncClient, redis_client: Redis, app: FastAPI
) -> None:
    await seed_walk(redis_client)
    responses = await asyncio.gather(*(signals_client.get(f"{BASE}/orderflow") for _ in range(6)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    assert sorted(r.headers["x-cache"] for r in responses) == ["hit"] * 5 + ["miss"]
    assert service_of(app).computed == 1


async def test_if_none_match_with_the_current_etag_is_304(signals_client: AsyncClient, redis_client: Redis) -> None:
    await seed_walk(redis_client)
    first = await signals_client.get(f"{BASE}/indicators")
    tag = first.headers["etag"]
    again = await signals_client.get(f"{BASE}/indicators", headers={"if-none-match": tag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == tag
    other = await signals_client.get(f"{BASE}/indicators", headers={"if-none-match": 'W/"stale"'})
    assert other.status_code == 200
    # The ETag names the parameters too: another parameter set is another document.
    changed = await signals_client.get(f"{BASE}/indicators?rsi_period=7", headers={"if-none-match": tag})
    assert changed.status_code == 200


async def test_include_forming_analyses_the_forming_bar_and_is_never_cached(
    signals_client: AsyncClient, redis_client: Redis
) -> None:
    rows = await seed_walk(redis_client)
    posted = await signals_client.post("/v1/analyze", json={"candles": rows, "modules": ["cvd"]})
    first = await signals_client.get(f"{BASE}/cvd", params={"include_forming": "true"})
    second = await signals_client.get(f"{BASE}/cvd", params={"include_forming": "true"})
    body = first.json()
    assert (body["forming"], body["bar_count"], body["as_of"]) == (True, 61, START_MS + 61 * MINUTE_MS)
    assert body["cvd"] == posted.json()["cvd"]
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "miss")


SHARED = {"venue", "symbol", "timeframe", "bars", "include_forming", "include_series", "if-none-match"}
# A value another parameter must allow for a bound to be reachable (macd_fast < macd_slow).
COMPANIONS = {("indicators", "macd_fast"): {"macd_slow": 100_000}, ("indicators", "macd_slow"): {"macd_fast": 2}}


@pytest.mark.parametrize("module", MODULES)
def test_openapi_has_one_operation_per_module_documenting_only_its_parameters(app: FastAPI, module: str) -> None:
    paths = app.openapi()["paths"]
    operation = paths[f"{BASE_TEMPLATE}/{module}"]["get"]
    parameters = {parameter["name"]: parameter for parameter in operation["parameters"]}
    assert set(parameters) == SHARED | set(_model(module).model_fields)
    assert {"401", "403", "404", "422", "503"} <= set(operation["responses"])
    assert f"`{module}`" in operation["summary"]
    examples = operation["responses"]["200"]["content"]["application/json"]["examples"]
    assert set(examples) == {module}
    document = AnalysisResponse.model_validate(examples[module]["value"])
    assert (document.module, getattr(document, module) is not None) == (module, True)


def test_openapi_has_no_operation_over_an_arbitrary_module(app: FastAPI) -> None:
    documented = {path for path in app.openapi()["paths"] if path.startswith(BASE_TEMPLATE)}
    assert documented == {f"{BASE_TEMPLATE}/{module}" for module in MODULES}


def test_a_parameter_of_another_module_is_neither_documented_nor_accepted(app: FastAPI) -> None:
    operation = app.openapi()["paths"][f"{BASE_TEMPLATE}/indicators"]["get"]
    assert "anchor" not in {parameter["name"] for parameter in operation["parameters"]}
    assert "anchor" in {name for name, _ in _documented("cvd")}


def _documented(module: str) -> list[tuple[str, dict[str, Any]]]:
    return [(parameter["name"], parameter["schema"]) for parameter in openapi_parameters(module)]


def _numeric(schema: dict[str, Any]) -> dict[str, Any] | None:
    """The schema holding a numeric parameter's bounds (its items' for a list), None if not numeric."""
    target = schema.get("items", schema)
    return target if target.get("type") in {"integer", "number"} else None


def _accepts(module: str, name: str, value: float, schema: dict[str, Any]) -> bool:
    value = int(value) if schema.get("type") == "integer" else value
    arguments = {**COMPANIONS.get((module, name), {}), name: [value] if "items" in schema else value}
    try:
        PARAM_DATACLASSES[module](**arguments)
    except ValueError:
        return False
    return True


def _step(value: float, direction: int, integer: bool) -> float:
    """The next value past a bound: the next integer, or the next representable float (a fixed step such as
    1e-9 vanishes next to 1e12)."""
    return value + direction if integer else math.nextafter(value, direction * math.inf)


@pytest.mark.parametrize("module", MODULES)
def test_every_documented_range_is_the_range_the_module_enforces(module: str) -> None:
    numeric = [(name, schema) for name, schema in _documented(module) if _numeric(schema) is not None]
    assert numeric
    wrong = []
    for name, schema in numeric:
        bounds = _numeric(schema) or {}
        integer = bounds["type"] == "integer"
        low, open_low, high = bounds.get("minimum"), bounds.get("exclusiveMinimum"), bounds.get("maximum")
        # (value, accepted?) at and just beyond each documented bound
        cases = []
        if low is not None:
            cases += [(low, True), (_step(low, -1, integer), False)]
        if open_low is not None:
            cases += [(open_low, False), (_step(open_low, 1, integer), True)]
        if high is not None:
            cases += [(high, True), (_step(high, 1, integer), False)]
        if low is None and open_low is None:
            wrong.append(f"{name}: no lower bound documented")
        wrong += [
            f"{name}={value}: accepted {not accepted}"
            for value, accepted in cases
            if _accepts(module, name, value, schema) != accepted
        ]
    assert wrong == []


async def test_documented_extremes_are_accepted_by_the_route(signals_client: AsyncClient, redis_client: Redis) -> None:
    await seed_walk(redis_client)
    response = await signals_client.get(
        f"{BASE}/indicators", params={"macd_fast": 99_999, "macd_slow": 100_000, "bollinger_stddev": 10}
    )
    assert response.status_code == 200, response.text
