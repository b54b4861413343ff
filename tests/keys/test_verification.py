"""Verification caching and failure modes: invalidation, the in-flight race, Redis down, everything down."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from redis.asyncio import Redis

from app.auth.scopes import Role
from app.auth.verifier import KeyRecord, KeyVerifier, cache_key, generation_key
from app.config import Settings
from app.core.security import generate_api_key
from app.keys.admin import ensure_tenant, issue_key
from app.keys.jobs import flush_last_used
from app.main import create_app
from tests.conftest import make_settings
from tests.helpers import free_port, running
from tests.keys.conftest import IssuedKey, MakeKey

REDIS_SERVER = shutil.which("redis-server")


async def test_verification_is_cached_in_redis_and_in_process(
    client: AsyncClient, app: FastAPI, make_key: MakeKey, redis_client: Redis
) -> None:
    key = await make_key(Role.READER)
    key_hash = app.state.key_verifier.hash(key.secret)
    # Creating the key published its invalidation, which this instance also receives, later, and which drops the
    # entry a first request may already have cached. Once that message is in, an entry stays.
    for _ in range(100):
        assert (await client.get("/v1/me", headers=key.headers)).status_code == 200
        if key_hash in app.state.key_verifier._local:
            break
        await asyncio.sleep(0.05)
    cached = await redis_client.get(cache_key(key_hash))
    assert isinstance(cached, bytes)
    assert KeyRecord.decode(cached).key_id == key.key_id
    assert 0 < await redis_client.pttl(cache_key(key_hash)) <= 5000
    assert key_hash in app.state.key_verifier._local


async def test_a_cached_unknown_key_is_cleared_when_that_key_is_created(client: AsyncClient, make_key: MakeKey) -> None:
    secret = generate_api_key()
    first = await client.get("/v1/me", headers={"X-API-Key": secret})
    assert first.status_code == 401  # now cached as unknown, locally and in Redis
    await make_key(Role.READER, secret=secret)
    assert (await client.get("/v1/me", headers={"X-API-Key": secret})).status_code == 200


async def test_a_stale_read_cannot_recache_a_key_just_revoked(
    client: AsyncClient, app: FastAPI, make_key: MakeKey, redis_client: Redis
) -> None:
    """The in-flight race: a verification read the key as valid, then the key was revoked, then the
    verification tries to cache what it read. The generation compare-and-set must refuse."""
    admin = await make_key(Role.ADMIN)
    reader = await make_key(Role.READER)
    verifier = app.state.key_verifier
    key_hash = verifier.hash(reader.secret)
    generation_seen = await redis_client.get(generation_key(key_hash))
    stale_record = await verifier._from_database(key_hash, 1e12, True)  # read while still valid
    assert (await client.post(f"/v1/keys/{reader.key_id}/revoke", headers=admin.headers)).status_code == 200
    stored = await verifier._store_in_redis(key_hash, stale_record, generation_seen)
    assert stored is False
    assert await redis_client.get(cache_key(key_hash)) is None
    started_epoch = verifier._epoch - 1  # the revocation's local invalidation came after the read started
    verifier._local_put(key_hash, stale_record, started_epoch)
    assert key_hash not in verifier._local
    response = await client.get("/v1/me", headers=reader.headers)
    assert response.json()["type"] == "/problems/api-key-revoked"


async def test_concurrent_requests_for_an_expired_entry_read_the_database_once(
    client: AsyncClient, app: FastAPI, make_key: MakeKey, redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = await make_key(Role.READER)
    verifier: KeyVerifier = app.state.key_verifier
    key_hash = verifier.hash(key.secret)
    assert (await client.get("/v1/me", headers=key.headers)).status_code == 200
    # Both cache levels expire together (the TTL runs from the database read).
    verifier._local.clear()
    await redis_client.delete(cache_key(key_hash))
    gate, reading = asyncio.Event(), asyncio.Event()
    reads = 0
    read = verifier._from_database

    async def counted(key_hash: str, now: float, redis_ok: bool) -> KeyRecord:
        nonlocal reads
        reads += 1
        reading.set()
        await gate.wait()  # hold the first load until every request has arrived
        return await read(key_hash, now, redis_ok)

    monkeypatch.setattr(verifier, "_from_database", counted)
    requests = [asyncio.create_task(client.get("/v1/me", headers=key.headers)) for _ in range(20)]
    await asyncio.wait_for(reading.wait(), timeout=10)
    await asyncio.sleep(0.05)  # the other requests reach the verifier and join the load
    gate.set()
    assert [r.status_code for r in await asyncio.gather(*requests)] == [200] * 20
    assert reads == 1


async def test_a_request_never_joins_a_load_that_started_before_an_invalidation(
    client: AsyncClient, app: FastAPI, make_key: MakeKey, redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = await make_key(Role.READER)
    verifier: KeyVerifier = app.state.key_verifier
    key_hash = verifier.hash(key.secret)
    gate, reading = asyncio.Event(), asyncio.Event()
    reads = 0
    read = verifier._from_database

    async def counted(key_hash: str, now: float, redis_ok: bool) -> KeyRecord:
        nonlocal reads
        reads += 1
        reading.set()
        if reads == 1:
            await gate.wait()
        return await read(key_hash, now, redis_ok)

    monkeypatch.setattr(verifier, "_from_database", counted)
    first = asyncio.create_task(client.get("/v1/me", headers=key.headers))
    await asyncio.wait_for(reading.wait(), timeout=10)
    verifier.invalidate_local(key_hash)  # e.g. a revocation heard while the first load reads
    second = await client.get("/v1/me", headers=key.headers)  # does not wait for the first load: its own read
    assert second.status_code == 200
    assert reads == 2
    gate.set()
    assert (await first).status_code == 200


async def test_invalidation_reaches_another_instance_over_pubsub(
    settings: Settings, make_key: MakeKey, client: AsyncClient
) -> None:
    admin = await make_key(Role.ADMIN)
    reader = await make_key(Role.READER)
    other = create_app(settings)
    async with running(other) as other_client:
        await asyncio.sleep(0.3)  # let its listener subscribe
        assert (await other_client.get("/v1/me", headers=reader.headers)).status_code == 200  # cached there
        await client.post(f"/v1/keys/{reader.key_id}/revoke", headers=admin.headers)
        for _ in range(20):
            if (await other_client.get("/v1/me", headers=reader.headers)).status_code == 401:
                break
            await asyncio.sleep(0.05)
        response = await other_client.get("/v1/me", headers=reader.headers)
    assert response.json()["type"] == "/problems/api-key-revoked"


@asynccontextmanager
async def own_redis_server() -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """A private redis-server the test can stop (the shared one must keep running for other tests)."""
    assert REDIS_SERVER is not None
    port = free_port()
    process = subprocess.Popen(  # noqa: ASYNC220 - a real server process
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    client = Redis(port=port)
    try:
        for _ in range(100):
            try:
                await client.ping()
                break
            except OSError:
                await asyncio.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", process
    finally:
        await client.aclose()
        process.kill()
        process.wait()


@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")
async def test_valid_keys_keep_working_when_redis_stops(postgres_url: str, settings: Settings) -> None:
    async with own_redis_server() as (redis_url, process):
        app = create_app(make_settings(database_url=postgres_url, redis_url=redis_url, background_jobs=False))
        async with running(app) as client:
            issued: list[IssuedKey] = []
            for _ in range(2):
                async with app.state.session_factory() as session:
                    tenant = await ensure_tenant(session, "acme")
                    key, secret = await issue_key(session, settings, tenant_id=tenant.id, name="r", role=Role.READER)
                    await session.commit()
                issued.append(IssuedKey(secret, key.id, tenant.id, Role.READER))
            assert (await client.get("/v1/me", headers=issued[0].headers)).status_code == 200
            process.terminate()
            process.wait()
            # A key never seen before: no cache anywhere, so this proves the database fallback.
            fresh = await client.get("/v1/me", headers=issued[1].headers)
            again = await client.get("/v1/me", headers=issued[0].headers)
    assert fresh.status_code == 200
    assert again.status_code == 200


async def test_database_and_redis_both_down_is_503_not_401() -> None:
    settings = make_settings(
        database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/x",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        background_jobs=False,
    )
    async with running(create_app(settings)) as client:
        response = await client.get("/v1/me", headers={"X-API-Key": generate_api_key()})
    assert response.status_code == 503
    assert response.json()["type"] == "/problems/auth-unavailable"
    assert response.headers["retry-after"] == "1"


async def test_last_used_is_written_off_the_request_path(client: AsyncClient, app: FastAPI, make_key: MakeKey) -> None:
    admin = await make_key(Role.ADMIN)
    reader = await make_key(Role.READER)
    await client.get("/v1/me", headers=reader.headers)
    before = (await client.get(f"/v1/keys/{reader.key_id}", headers=admin.headers)).json()
    assert before["last_used_at"] is None, "not written during the request"
    assert await flush_last_used(app.state.key_verifier, app.state.session_factory) >= 1
    after = (await client.get(f"/v1/keys/{reader.key_id}", headers=admin.headers)).json()
    assert after["last_used_at"] is not None
