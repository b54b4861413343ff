"""The OpenAPI document is a contract: every operation documents its errors as problem+json, its inputs, and an
example of its success response. A route added without them fails here."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from app.core.errors import PROBLEM_MEDIA_TYPE
from app.core.openapi import HTTP_METHODS
from app.main import create_app
from app.signals.compute import iso
from app.signals.schemas import BATCH_EXAMPLE, SIGNAL_EXAMPLE, BatchResponse, SignalResponse
from app.trading.examples import ANALYZE_EXAMPLE
from app.trading.schemas import AnalyzeResponse
from tests.conftest import make_settings

PROBLEM_REF = "#/components/schemas/Problem"


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    spec: dict[str, Any] = create_app(make_settings()).openapi()
    return spec


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        node = schema["components"]["schemas"][name]
    return node


def test_every_error_response_is_a_documented_problem(schema: dict[str, Any]) -> None:
    missing = []
    for method, path, operation in operations(schema):
        responses = operation["responses"]
        errors = {code: r for code, r in responses.items() if code[0] in "45"}
        if "500" not in errors:
            missing.append(f"{method} {path}: no 500")
        for code, response in errors.items():
            content = response.get("content", {})
            if content.get(PROBLEM_MEDIA_TYPE, {}).get("schema", {}).get("$ref") != PROBLEM_REF:
                missing.append(f"{method} {path} {code}: not problem+json")
        if (operation.get("parameters") or operation.get("requestBody")) and "422" not in errors:
            missing.append(f"{method} {path}: takes input but documents no 422")
        if operation.get("requestBody") and not {"400", "413"} <= set(errors):
            missing.append(f"{method} {path}: takes a body but documents no 400/413")
        if path.startswith("/v1/") and not {"401", "403", "503"} <= set(errors):
            missing.append(f"{method} {path}: authenticated but documents no 401/403/503")
        if any(p["in"] == "path" for p in operation.get("parameters", [])) and not {"404", "422"} & set(errors):
            missing.append(f"{method} {path}: addresses a resource but documents neither 404 nor 422")
    assert missing == []


def test_no_parameter_is_documented_as_accepting_null(schema: dict[str, Any]) -> None:
    """Optional parameters are omitted; `?bars=null` or `Last-Event-ID: null` would be refused with 422."""
    nullable = [
        f"{method} {path} {parameter['name']}"
        for method, path, operation in operations(schema)
        for parameter in operation.get("parameters", [])
        if "'null'" in repr(parameter.get("schema", {}))
    ]
    assert nullable == []


def test_every_v1_operation_declares_its_security_and_scopes(schema: dict[str, Any]) -> None:
    for method, path, operation in operations(schema):
        if path.startswith("/v1/"):
            security = operation.get("security")
            assert security, f"{method} {path}"
            assert {frozenset(req) for req in security} == {frozenset({"ApiKeyHeader"}), frozenset({"BearerAuth"})}
            # Every route names its scopes except /v1/me, which any valid key may call.
            assert path == "/v1/me" or all(scopes for req in security for scopes in req.values()), path


def test_every_v1_operation_documents_the_rate_limit_refusal(schema: dict[str, Any]) -> None:
    for method, path, operation in operations(schema):
        if path.startswith("/v1/"):
            refused = operation["responses"].get("429")
            assert refused is not None, f"{method} {path}"
            assert PROBLEM_MEDIA_TYPE in refused["content"]
            assert {"Retry-After", "RateLimit", "RateLimit-Policy"} <= set(refused.get("headers", {})), path


def test_every_success_response_has_a_schema_and_an_example(schema: dict[str, Any]) -> None:
    missing = []
    for method, path, operation in operations(schema):
        for code, response in operation["responses"].items():
            if not code.startswith("2"):
                continue
            for media, content in response.get("content", {}).items():
                has_schema = "schema" in content or media == "text/event-stream"
                example = "example" in content or "examples" in content
                if not example and "schema" in content:
                    resolved = resolve(schema, content["schema"])
                    items = resolved.get("items")
                    example = "examples" in resolved or (
                        isinstance(items, dict) and "examples" in resolve(schema, items)
                    )
                if not (has_schema and example):
                    missing.append(f"{method} {path} {code} {media}")
    assert missing == []


def test_every_operation_and_parameter_is_described(schema: dict[str, Any]) -> None:
    missing = []
    for method, path, operation in operations(schema):
        if not operation.get("summary"):
            missing.append(f"{method} {path}: no summary")
        for parameter in operation.get("parameters", []):
            described = parameter.get("description") or parameter.get("schema", {}).get("description")
            if not described:
                missing.append(f"{method} {path}: parameter {parameter['name']} has no description")
    assert missing == []


async def test_docs_and_the_document_are_served_without_a_key(client: AsyncClient, app: FastAPI) -> None:
    document = await client.get("/openapi.json")
    assert document.status_code == 200
    assert document.json()["paths"].keys() == app.openapi()["paths"].keys()
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "/openapi.json" in docs.text


def test_response_examples_are_valid_responses() -> None:
    AnalyzeResponse.model_validate(ANALYZE_EXAMPLE, strict=True)
    SignalResponse.model_validate(SIGNAL_EXAMPLE)
    BatchResponse.model_validate(BATCH_EXAMPLE)
    assert SIGNAL_EXAMPLE["as_of_iso"] == iso(SIGNAL_EXAMPLE["as_of"])


async def test_docs_assets_are_served_locally(client: AsyncClient) -> None:
    page = (await client.get("/docs")).text
    assert "cdn.jsdelivr.net" not in page
    for asset in ("/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"):
        assert asset in page
        response = await client.get(asset)
        assert response.status_code == 200
        assert len(response.content) > 10_000
