"""Every error is RFC 9457 problem+json with the right status and a request id; nothing internal leaks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from pydantic import BaseModel, Field, ValidationError

from app.config import Settings
from app.core.errors import PROBLEM_MEDIA_TYPE, AppError, json_pointer, validation_errors
from app.main import create_app
from tests.helpers import running


class Level(BaseModel):
    price: float = Field(gt=0)
    qty: float = Field(ge=0)


class Book(BaseModel):
    symbol: str = Field(min_length=1)
    levels: list[Level]


class SymbolNotFound(AppError):
    slug = "test-symbol-not-found"
    title = "Symbol not found"
    status = 404
    description = "Raised by the test routes."


def _app_with_test_routes(settings: Settings) -> FastAPI:
    app = create_app(settings)

    @app.post("/test/books")
    async def create_book(book: Book) -> dict[str, Any]:
        return {"symbol": book.symbol, "levels": len(book.levels)}

    @app.get("/test/boom")
    async def boom() -> None:
        raise RuntimeError("secret connection string postgresql://admin:hunter2@db")

    @app.get("/test/domain")
    async def domain() -> None:
        raise SymbolNotFound("BTCUSDX is not listed.", extensions={"valid": ["BTCUSDT"]})

    @app.get("/test/limit")
    async def limit(n: int = 10) -> dict[str, int]:
        return {"n": n}

    return app


@pytest.fixture
async def test_client(settings: Settings) -> AsyncIterator[AsyncClient]:
    async with running(_app_with_test_routes(settings)) as client:
        yield client


def _assert_problem(response: Any, status: int, type_: str) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body: dict[str, Any] = response.json()
    assert body["type"] == type_
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert body["instance"] == response.request.url.path
    assert body["request_id"] == response.headers["x-request-id"]
    return body


async def test_unknown_route_is_a_404_problem(test_client: AsyncClient) -> None:
    response = await test_client.get("/nope")
    body = _assert_problem(response, 404, "/problems/not-found")
    assert "/nope" in body["detail"]


async def test_wrong_method_is_a_405_problem_with_allow(test_client: AsyncClient) -> None:
    response = await test_client.delete("/healthz")
    _assert_problem(response, 405, "/problems/method-not-allowed")
    assert response.headers["allow"] == "GET"


async def test_invalid_body_points_at_each_offending_field(test_client: AsyncClient) -> None:
    payload = {"symbol": "", "levels": [{"price": 1, "qty": 1}, {"price": -5, "qty": "lots"}]}
    response = await test_client.post("/test/books", json=payload)
    body = _assert_problem(response, 422, "/problems/validation-failed")
    pointers = {error["pointer"] for error in body["errors"]}
    assert pointers == {"#/symbol", "#/levels/1/price", "#/levels/1/qty"}
    assert all(error["detail"] and error["code"] for error in body["errors"])


async def test_missing_body_is_a_422_pointing_at_the_root(test_client: AsyncClient) -> None:
    response = await test_client.post("/test/books")
    body = _assert_problem(response, 422, "/problems/validation-failed")
    assert body["errors"][0]["pointer"] == "#"


async def test_invalid_query_parameter_names_the_parameter(test_client: AsyncClient) -> None:
    response = await test_client.get("/test/limit", params={"n": "ten"})
    body = _assert_problem(response, 422, "/problems/validation-failed")
    assert body["errors"] == [
        {"detail": body["errors"][0]["detail"], "code": "int_parsing", "parameter": "n", "in": "query"}
    ]


async def test_malformed_json_is_a_400_problem(test_client: AsyncClient) -> None:
    response = await test_client.post(
        "/test/books", content=b'{"symbol": "BTC", "levels": [', headers={"content-type": "application/json"}
    )
    _assert_problem(response, 400, "/problems/malformed-json")


async def test_oversized_body_is_refused_from_content_length(settings: Settings) -> None:
    small = settings.model_copy(update={"max_body_bytes": 64})
    async with running(_app_with_test_routes(small)) as client:
        response = await client.post("/test/books", json={"symbol": "X" * 100, "levels": []})
    body = _assert_problem(response, 413, "/problems/payload-too-large")
    assert "64 bytes" in body["detail"]


async def test_oversized_streamed_body_is_refused_before_it_is_read_in_full(settings: Settings) -> None:
    small = settings.model_copy(update={"max_body_bytes": 1024})
    chunks_sent = 0

    async def endless_body() -> AsyncIterator[bytes]:
        nonlocal chunks_sent
        for _ in range(10_000):  # 10 MB if it were all read
            chunks_sent += 1
            yield b" " * 1000

    async with running(_app_with_test_routes(small)) as client:
        response = await client.post(
            "/test/books", content=endless_body(), headers={"content-type": "application/json"}
        )
    _assert_problem(response, 413, "/problems/payload-too-large")
    assert chunks_sent < 10, "the server must stop reading once the limit is passed"


async def test_unhandled_exception_is_a_500_problem_without_internals(
    test_client: AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    response = await test_client.get("/test/boom")
    body = _assert_problem(response, 500, "/problems/internal-error")
    assert "hunter2" not in response.text
    assert "Traceback" not in response.text
    assert "RuntimeError" not in response.text
    logged = capsys.readouterr().out
    assert "http.unhandled_exception" in logged
    assert "Traceback" in logged  # the traceback goes to the log, with the request id
    assert body["request_id"] in logged


async def test_domain_error_carries_its_type_and_extensions(test_client: AsyncClient) -> None:
    response = await test_client.get("/test/domain")
    body = _assert_problem(response, 404, "/problems/test-symbol-not-found")
    assert body["valid"] == ["BTCUSDT"]
    documented = await test_client.get("/problems/test-symbol-not-found")
    assert documented.status_code == 200
    assert documented.json()["title"] == "Symbol not found"


async def test_problem_types_are_documented(test_client: AsyncClient) -> None:
    listed = (await test_client.get("/problems")).json()
    types = {entry["type"] for entry in listed}
    assert {"/problems/not-found", "/problems/validation-failed", "/problems/payload-too-large"} <= types
    missing = await test_client.get("/problems/no-such-thing")
    _assert_problem(missing, 404, "/problems/problem-type-not-found")


@pytest.mark.parametrize(
    ("path", "pointer"),
    [((), "#"), (("candles", 3, "h"), "#/candles/3/h"), (("a/b", "m~n"), "#/a~1b/m~0n")],
)
def test_json_pointer_escapes_per_rfc_6901(path: tuple[str | int, ...], pointer: str) -> None:
    assert json_pointer(path) == pointer


class _Url(BaseModel):
    type: Literal["url"]
    url: str = Field(max_length=5)


class _Webhook(BaseModel):
    type: Literal["webhook"]


class _Rule(BaseModel):
    destination: Annotated[_Url | _Webhook, Field(discriminator="type")]
    limits: list[int | None] = []


@pytest.mark.parametrize(
    ("body", "pointers"),
    [
        # The tag `url` and the member `url` share a name: the pointer names the member once.
        ({"destination": {"type": "url", "url": "toolong"}}, ["#/destination/url"]),
        ({"destination": {"type": "url"}}, ["#/destination/url"]),
        ({"destination": {"type": "url", "url": "ok"}, "limits": [1, "x"]}, ["#/limits/1"]),
        ({"destination": {"type": "ftp"}}, ["#/destination"]),
    ],
)
def test_pointers_leave_out_the_union_tags_pydantic_adds(body: dict[str, Any], pointers: list[str]) -> None:
    with pytest.raises(ValidationError) as raised:
        _Rule.model_validate(body)
    errors = [{**error, "loc": ("body", *error["loc"])} for error in raised.value.errors()]
    assert [entry["pointer"] for entry in validation_errors(errors, body)] == pointers
    if body["destination"] == {"type": "url", "url": "toolong"}:
        assert errors[0]["loc"] == ("body", "destination", "url", "url"), "pydantic's location carries the tag"
