"""Every write is committed — and its post-commit hooks (cache invalidation) have run — before the status line is
sent, on both backends; a commit that fails is a problem response; concurrent writes to one resource never both win.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.auth.scopes import Role
from app.config import Settings
from app.main import create_app
from app.models import ApiKey, AuditEvent, Tenant
from tests.helpers import asgi_call, running
from tests.keys.conftest import IssuedKey, MakeKey, key_maker


async def _count(app: FastAPI, statement: Any) -> int:
    """Counted on a connection of its own (what another request, or another instance, would see)."""
    engine = create_async_engine(app.state.settings.database_url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return int((await connection.execute(statement)).scalar_one())
    finally:
        await engine.dispose()


def _json(body: bytes) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(body)
    return parsed


async def test_a_created_key_is_stored_and_usable_when_the_status_line_is_sent(
    backend: tuple[FastAPI, AsyncClient], make_backend_key: MakeKey
) -> None:
    app, client = backend
    admin = await make_backend_key(Role.ADMIN)
    seen: list[int] = []

    async def at_status_line() -> None:
        seen.append(await _count(app, select(func.count()).select_from(ApiKey).where(ApiKey.name == "probe")))

    status, body = await asgi_call(
        app, "POST", "/v1/keys", headers=admin.headers, body=b'{"name": "probe"}', on_response_start=at_status_line
    )
    assert status == 201, body
    assert seen == [1], "the 201 was sent before the key was committed"
    used = await client.get("/v1/me", headers={"Authorization": f"Bearer {_json(body)['secret']}"})
    assert used.status_code == 200


async def test_a_revoked_key_is_refused_by_this_instance_when_the_status_line_is_sent(
    backend: tuple[FastAPI, AsyncClient], make_backend_key: MakeKey
) -> None:
    app, client = backend
    admin = await make_backend_key(Role.ADMIN)
    victim = await make_backend_key(Role.READER)
    assert (await client.get("/v1/me", headers=victim.headers)).status_code == 200  # cached in-process now
    during: list[int] = []

    async def at_status_line() -> None:
        during.append((await client.get("/v1/me", headers=victim.headers)).status_code)

    status, _ = await asgi_call(
        app, "POST", f"/v1/keys/{victim.key_id}/revoke", headers=admin.headers, on_response_start=at_status_line
    )
    assert status == 200
    assert during == [401], "the revocation was answered while this instance still accepted the key"


async def test_a_rotation_successor_works_and_is_stored_when_the_status_line_is_sent(
    backend: tuple[FastAPI, AsyncClient], make_backend_key: MakeKey
) -> None:
    app, client = backend
    admin = await make_backend_key(Role.ADMIN)
    old = await make_backend_key(Role.READER)
    seen: list[int] = []

    async def at_status_line() -> None:
        seen.append(await _count(app, select(func.count()).where(ApiKey.rotated_from_id == old.key_id)))

    status, body = await asgi_call(
        app,
        "POST",
        f"/v1/keys/{old.key_id}/rotate",
        headers=admin.headers,
        body=b"{}",
        on_response_start=at_status_line,
    )
    assert status == 201, body
    assert seen == [1]
    assert (await client.get("/v1/me", headers={"X-API-Key": _json(body)["secret"]})).status_code == 200


async def test_concurrent_rotations_of_one_key_have_exactly_one_winner(
    backend: tuple[FastAPI, AsyncClient], make_backend_key: MakeKey
) -> None:
    app, client = backend
    admin = await make_backend_key(Role.ADMIN)
    old = await make_backend_key(Role.READER)
    answers = await asyncio.gather(
        *(client.post(f"/v1/keys/{old.key_id}/rotate", json={}, headers=admin.headers) for _ in range(10))
    )
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [201] + [409] * 9, statuses
    assert {a.json()["type"] for a in answers if a.status_code == 409} == {"/problems/api-key-not-active"}
    assert await _count(app, select(func.count()).where(ApiKey.rotated_from_id == old.key_id)) == 1
    rotated_audits = select(func.count()).where(AuditEvent.action == "key.rotated")
    assert await _count(app, rotated_audits) == 1


async def test_concurrent_revocations_audit_once_and_agree_on_the_time(
    backend: tuple[FastAPI, AsyncClient], make_backend_key: MakeKey
) -> None:
    app, client = backend
    admin = await make_backend_key(Role.ADMIN)
    victim = await make_backend_key(Role.READER)
    answers = await asyncio.gather(
        *(client.post(f"/v1/keys/{victim.key_id}/revoke", headers=admin.headers) for _ in range(8))
    )
    assert {answer.status_code for answer in answers} == {200}
    assert len({answer.json()["revoked_at"] for answer in answers}) == 1
    assert await _count(app, select(func.count()).where(AuditEvent.action == "key.revoked")) == 1


async def test_concurrent_tenants_with_one_name_are_one_201_and_409s(
    backend: tuple[FastAPI, AsyncClient], make_backend_key: MakeKey
) -> None:
    app, client = backend
    operator = await make_backend_key(Role.OPERATOR)
    answers = await asyncio.gather(
        *(client.post("/v1/tenants", json={"name": "twin"}, headers=operator.headers) for _ in range(10))
    )
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [201] + [409] * 9, statuses
    assert {a.json()["type"] for a in answers if a.status_code == 409} == {"/problems/tenant-name-taken"}
    assert all(a.headers["content-type"] == "application/problem+json" for a in answers if a.status_code == 409)
    assert await _count(app, select(func.count()).where(Tenant.name == "twin")) == 1


async def test_concurrent_webhook_puts_all_succeed_and_every_secret_rotation_counts(
    backend: tuple[FastAPI, AsyncClient], make_backend_key: MakeKey
) -> None:
    _, client = backend
    admin = await make_backend_key(Role.ADMIN)
    url = {"url": "https://hooks.example.com/deltaflow"}
    first = await asyncio.gather(*(client.put("/v1/webhook", json=url, headers=admin.headers) for _ in range(6)))
    assert {answer.status_code for answer in first} == {200}, [a.text for a in first]
    assert {answer.json()["secret_version"] for answer in first} == {1}
    rotations = await asyncio.gather(
        *(client.put("/v1/webhook", json={**url, "rotate_secret": True}, headers=admin.headers) for _ in range(5))
    )
    assert sorted(answer.json()["secret_version"] for answer in rotations) == [2, 3, 4, 5, 6]


# --- commits that fail or take long (Postgres: a deferred constraint trigger fires at COMMIT) -----------------

_COMMIT_TRIGGER = (
    """
CREATE FUNCTION test_commit_time_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.name LIKE 'doomed%' THEN
        RAISE EXCEPTION 'refused at commit' USING ERRCODE = 'unique_violation';
    END IF;
    IF NEW.name LIKE 'slow%' THEN
        PERFORM pg_sleep(0.3);
    END IF;
    RETURN NEW;
END $$
""",
    """
CREATE CONSTRAINT TRIGGER test_commit_time_check AFTER INSERT ON tenants
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_commit_time_check()
""",
)


@pytest.fixture
async def commit_time_trigger(settings: Settings) -> AsyncIterator[None]:
    engine = create_async_engine(settings.database_url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            for statement in _COMMIT_TRIGGER:
                await connection.execute(text(statement))
        yield
    finally:
        async with engine.begin() as connection:
            await connection.execute(text("DROP TRIGGER IF EXISTS test_commit_time_check ON tenants"))
            await connection.execute(text("DROP FUNCTION IF EXISTS test_commit_time_check()"))
        await engine.dispose()


async def test_a_commit_that_fails_is_a_problem_and_stores_nothing(
    app: FastAPI, client: AsyncClient, make_key: MakeKey, commit_time_trigger: None
) -> None:
    operator: IssuedKey = await make_key(Role.OPERATOR)
    response = await client.post("/v1/tenants", json={"name": "doomed-1"}, headers=operator.headers)
    assert response.status_code == 409, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/conflict"
    assert "refused at commit" not in response.text  # the database's own words stay in the log
    assert await _count(app, select(func.count()).where(Tenant.name == "doomed-1")) == 0
    assert await _count(app, select(func.count()).where(AuditEvent.action == "tenant.created")) == 0


async def test_a_slow_commit_holds_the_response_until_it_is_durable(
    app: FastAPI, client: AsyncClient, make_key: MakeKey, commit_time_trigger: None
) -> None:
    operator = await make_key(Role.OPERATOR)
    visible: list[int] = []

    async def at_status_line() -> None:
        visible.append(await _count(app, select(func.count()).where(Tenant.name == "slow-1")))

    started = time.monotonic()
    status, body = await asgi_call(
        app, "POST", "/v1/tenants", headers=operator.headers, body=b'{"name": "slow-1"}',
        on_response_start=at_status_line,
    )  # fmt: skip
    assert status == 201, body
    assert time.monotonic() - started >= 0.3
    assert visible == [1]
    assert uuid.UUID(_json(body)["id"])
    assert datetime.fromisoformat(_json(body)["created_at"]) <= datetime.now(UTC)


async def test_a_statement_past_the_timeout_is_a_503_and_stores_nothing(settings: Settings) -> None:
    """A query that runs away (here: a trigger sleeping in an INSERT) is cancelled by the statement timeout."""
    slow = settings.model_copy(update={"db_statement_timeout_seconds": 0.2})
    engine = create_async_engine(settings.database_url, poolclass=NullPool)
    statements = (
        "CREATE FUNCTION test_sleepy() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(2); "
        "RETURN NEW; END $$",
        "CREATE TRIGGER test_sleepy BEFORE INSERT ON tenants FOR EACH ROW EXECUTE FUNCTION test_sleepy()",
    )
    app = create_app(slow)
    try:
        async with running(app) as client:
            operator = await key_maker(app, slow)(Role.OPERATOR, tenant="ops-existing")
            async with engine.begin() as connection:
                for statement in statements:
                    await connection.execute(text(statement))
            started = time.monotonic()
            response = await client.post("/v1/tenants", json={"name": "sleepy"}, headers=operator.headers)
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "2"
            assert time.monotonic() - started < 1.5
            assert await _count(app, select(func.count()).where(Tenant.name == "sleepy")) == 0
    finally:
        async with engine.begin() as connection:
            await connection.execute(text("DROP TRIGGER IF EXISTS test_sleepy ON tenants"))
            await connection.execute(text("DROP FUNCTION IF EXISTS test_sleepy()"))
        await engine.dispose()
