"""Request ids in and out, and one structured access-log line per request."""

from __future__ import annotations

import orjson
import pytest
from httpx import AsyncClient


async def test_a_request_id_is_generated_when_none_is_sent(client: AsyncClient) -> None:
    first = await client.get("/healthz")
    second = await client.get("/healthz")
    assert len(first.headers["x-request-id"]) == 32
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_a_valid_client_request_id_is_echoed(client: AsyncClient) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": "lb-7f3a:42"})
    assert response.headers["x-request-id"] == "lb-7f3a:42"


@pytest.mark.parametrize("bad", ["has space", "x" * 129, "new\\nline", "ünïcode"])
async def test_an_unsafe_client_request_id_is_replaced(client: AsyncClient, bad: str) -> None:
    response = await client.get("/healthz", headers={b"X-Request-ID": bad.encode("utf-8")})
    assert response.headers["x-request-id"] != bad
    assert len(response.headers["x-request-id"]) == 32


async def test_access_log_is_one_json_line_with_the_request_facts(
    client: AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    response = await client.get("/nope", headers={"X-Request-ID": "trace-1"})
    lines = [orjson.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("event") == "http.request"]
    assert len(access) == 1
    entry = access[0]
    assert entry["method"] == "GET"
    assert entry["path"] == "/nope"
    assert entry["status"] == response.status_code == 404
    assert entry["request_id"] == "trace-1"
    assert entry["duration_ms"] >= 0
    assert entry["level"] == "info"
    assert "timestamp" in entry


async def test_responses_are_json_encoded_by_orjson(client: AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.headers["content-type"] == "application/json"
    assert response.content == b'{"status":"ok"}'
