"""The parameter mirrors (`params_model`) state each dataclass's declared range in their JSON schema, and the
dataclass accepts exactly the values that schema allows: the OpenAPI document of POST /v1/analyze (and of
GET /v1/analysis, built from the same models) is what the server enforces."""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

import pytest
from httpx import AsyncClient
from hypothesis import given, settings
from hypothesis import strategies as st

from app.analytics import SignalWeights
from app.analytics.bounds import Bounds, ItemBounds, field_bounds
from app.trading.schemas import PARAM_DATACLASSES, params_model
from tests.trading.conftest import candle_rows

MIRRORED: dict[str, type[Any]] = {**PARAM_DATACLASSES, "signal.weights": SignalWeights}
# Values another field must take for a documented end to be reachable (rules across fields).
COMPANIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("indicators", "macd_fast"): {"macd_slow": 100_000},
    ("indicators", "macd_slow"): {"macd_fast": 2},
    ("signal", "account_equity"): {"risk_pct": 1.0},
    ("signal", "risk_pct"): {"account_equity": 10_000.0},
}
KEYWORDS = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum", "lt": "exclusiveMaximum"}


def numbers_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A property's schema without its `null` alternative."""
    options = [option for option in schema.get("anyOf", [schema]) if option.get("type") != "null"]
    assert len(options) == 1
    result: dict[str, Any] = options[0]
    return result


def numeric_properties() -> list[tuple[str, str, dict[str, Any]]]:
    rows = []
    for module, cls in MIRRORED.items():
        for name, schema in params_model(cls).model_json_schema()["properties"].items():
            target = numbers_schema(schema)
            if target.get("type") in {"integer", "number"} or target.get("items", {}).get("type") == "number":
                rows.append((module, name, target))
    return rows


NUMERIC = numeric_properties()
IDS = [f"{module}.{name}" for module, name, _ in NUMERIC]


def accepted(module: str, name: str, value: Any) -> bool:
    try:
        MIRRORED[module](**{**COMPANIONS.get((module, name), {}), name: value})
    except ValueError:
        return False
    return True


def expected_keywords(bounds: Bounds | ItemBounds) -> dict[str, Any]:
    if isinstance(bounds, ItemBounds):
        return {"minItems": bounds.min_length, "maxItems": bounds.max_length, "items": expected_keywords(bounds.items)}
    return {KEYWORDS[name]: value for name, value in bounds.limits().items()}


@pytest.mark.parametrize("module", MIRRORED)
def test_the_schema_states_every_declared_range(module: str) -> None:
    properties = params_model(MIRRORED[module]).model_json_schema()["properties"]
    for item in fields(MIRRORED[module]):
        bounds = field_bounds(item)
        if bounds is None:
            continue
        shown = numbers_schema(properties[item.name])
        expected = expected_keywords(bounds)
        stated = {key: shown[key] for key in expected if key != "items"}
        if "items" in expected:
            stated["items"] = {key: shown["items"].get(key) for key in expected["items"]}
        assert stated == expected, item.name


def schema_range(schema: dict[str, Any]) -> tuple[float, float, bool, bool]:
    """(low, high, low excluded, high excluded) as the schema states them; both ends must be stated."""
    low, high = (
        schema.get("minimum", schema.get("exclusiveMinimum")),
        schema.get("maximum", schema.get("exclusiveMaximum")),
    )
    assert low is not None, "a numeric parameter without a lower end in the document"
    assert high is not None, "a numeric parameter without an upper end in the document"
    return low, high, "exclusiveMinimum" in schema, "exclusiveMaximum" in schema


def inside(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    low, high, open_low, open_high = schema_range(schema)
    if schema["type"] == "integer":
        return st.integers(math.ceil(low) + open_low, math.floor(high) - open_high)
    return st.floats(low, high, exclude_min=open_low, exclude_max=open_high)


def just_outside(schema: dict[str, Any]) -> list[Any]:
    low, high, open_low, open_high = schema_range(schema)
    if schema["type"] == "integer":
        return [low - 1 + open_low, high + 1 - open_high]
    return [low if open_low else math.nextafter(low, -math.inf), high if open_high else math.nextafter(high, math.inf)]


@pytest.mark.parametrize(("module", "name", "schema"), NUMERIC, ids=IDS)
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_what_the_schema_allows_the_dataclass_accepts(
    module: str, name: str, schema: dict[str, Any], data: st.DataObject
) -> None:
    if schema["type"] == "array":
        # Ratios must also increase strictly, a rule across items that the schema cannot state.
        size = data.draw(st.integers(schema["minItems"], schema["maxItems"]))
        items = st.lists(inside(schema["items"]), min_size=size, max_size=size, unique=True)
        value: Any = sorted(data.draw(items))
    else:
        value = data.draw(inside(schema))
    assert accepted(module, name, value)


@pytest.mark.parametrize(("module", "name", "schema"), NUMERIC, ids=IDS)
def test_just_beyond_what_the_schema_allows_the_dataclass_refuses(
    module: str, name: str, schema: dict[str, Any]
) -> None:
    if schema["type"] == "array":
        _, high, _, _ = schema_range(schema["items"])
        count = schema["maxItems"] + 1
        too_many = [high / 2**k for k in range(count - 1, -1, -1)]  # increasing and each in range: only too many
        beyond = [[value] for value in just_outside(schema["items"])] + [[], too_many]
    else:
        beyond = just_outside(schema)
    assert [value for value in beyond if accepted(module, name, value)] == []


def body_property(schema: dict[str, Any], *path: str) -> dict[str, Any]:
    for name in path:
        schema = numbers_schema(schema["properties"][name])
    return schema


async def test_the_openapi_body_of_post_analyze_shows_the_ranges(signals_client: AsyncClient) -> None:
    document = (await signals_client.get("/openapi.json")).json()
    body = document["paths"]["/v1/analyze"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body_property(body, "params", "cvd", "swing_length") | {"default": 5} == {
        "type": "integer", "minimum": 1, "maximum": 500, "default": 5, "title": "Swing Length",
    }  # fmt: skip
    weight = body_property(body, "params", "signal", "weights", "smc")
    assert (weight["minimum"], weight["maximum"]) == (0, 1000)
    assert body_property(body, "params", "fibonacci", "retracements")["items"]["exclusiveMinimum"] == 0


@pytest.mark.parametrize(("value", "status"), [(500, 200), (501, 422)])
async def test_post_analyze_accepts_the_documented_maximum_and_refuses_one_more(
    signals_client: AsyncClient, value: int, status: int
) -> None:
    body = {"candles": candle_rows(3), "modules": ["cvd"], "params": {"cvd": {"swing_length": value}}}
    response = await signals_client.post("/v1/analyze", json=body)
    assert response.status_code == status, response.text
    if status == 422:
        (error,) = response.json()["errors"]
        assert error["pointer"] == "#/params/cvd/swing_length"
        assert error["detail"] == "Value error, swing_length must be an integer in [1, 500]"
