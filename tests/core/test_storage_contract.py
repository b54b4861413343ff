"""The same storage contract on both backends of each kind: Postgres and SQLite; Redis and `memory://`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from sqlalchemy import text

from app.core.db import create_engine, create_session_factory, current_revision, session_scope
from app.core.migrations import code_head, schema_state
from app.core.redis import RedisClient, create_redis
from tests.conftest import TEST_REDIS_URL, make_settings


@pytest.fixture(params=["postgres", "sqlite"])
def database_url(request: pytest.FixtureRequest) -> str:
    fixture = "postgres_url" if request.param == "postgres" else "sqlite_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture(params=["redis", "memory"])
def redis_url(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        request.getfixturevalue("redis_client")  # flushes the test index
        return TEST_REDIS_URL
    return f"memory://contract-{uuid.uuid4().hex}"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisClient]:
    url = redis_url
    client = create_redis(make_settings(redis_url=url))
    try:
        yield client
    finally:
        await client.aclose()


async def test_migrations_stamp_the_code_head(database_url: str) -> None:
    engine = create_engine(make_settings(database_url=database_url))
    try:
        revision = await current_revision(engine)
    finally:
        await engine.dispose()
    assert revision == code_head()
    assert schema_state(revision) == "current"


@pytest.mark.parametrize(("revision", "state"), [(None, "missing"), ("ffff-from-the-future", "ahead")])
def test_schema_state_classifies_revisions(revision: str | None, state: str) -> None:
    assert schema_state(revision) == state


async def test_session_scope_commits_on_success_and_rolls_back_on_error(database_url: str) -> None:
    engine = create_engine(make_settings(database_url=database_url))
    factory = create_session_factory(engine)
    table = f"contract_{uuid.uuid4().hex[:8]}"
    try:
        async with engine.begin() as connection:
            await connection.execute(text(f"CREATE TABLE {table} (value INTEGER NOT NULL)"))

        async for session in session_scope(factory):
            await session.execute(text(f"INSERT INTO {table} (value) VALUES (1)"))

        async def failing_request() -> None:
            async for session in session_scope(factory):
                await session.execute(text(f"INSERT INTO {table} (value) VALUES (2)"))
                raise RuntimeError("handler failed")

        with pytest.raises(RuntimeError, match="handler failed"):
            await failing_request()

        async with engine.connect() as connection:
            values = (await connection.execute(text(f"SELECT value FROM {table}"))).scalars().all()
        assert values == [1], "the committed row stays, the failed request's row is gone"
    finally:
        async with engine.begin() as connection:
            await connection.execute(text(f"DROP TABLE IF EXISTS {table}"))
        await engine.dispose()


async def test_redis_values_expire(redis: Redis) -> None:
    await redis.set("contract:ttl", "1", px=50)
    assert await redis.get("contract:ttl") == b"1"
    assert 0 < await redis.pttl("contract:ttl") <= 50
    await asyncio.sleep(0.12)
    assert await redis.get("contract:ttl") is None


async def test_redis_pipeline_is_applied_in_order(redis: Redis) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.rpush("contract:list", "a", "b", "c")
        pipe.ltrim("contract:list", -2, -1)
        pipe.lrange("contract:list", 0, -1)
        results = await pipe.execute()
    assert results[-1] == [b"b", b"c"]


async def test_redis_runs_lua_scripts(redis: Redis) -> None:
    script = redis.register_script(
        "local v = redis.call('INCRBY', KEYS[1], ARGV[1]); redis.call('PEXPIRE', KEYS[1], ARGV[2]); return v"
    )
    assert await script(keys=["contract:counter"], args=[5, 10_000]) == 5
    assert await script(keys=["contract:counter"], args=[2, 10_000]) == 7
    assert await redis.pttl("contract:counter") > 0


async def test_redis_pubsub_delivers_to_subscribers(redis: Redis) -> None:
    pubsub = redis.pubsub()
    try:
        await pubsub.subscribe("contract:events")
        assert (await pubsub.get_message(timeout=1.0) or {}).get("type") == "subscribe"
        await redis.publish("contract:events", "hello")
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        assert message is not None
        assert message["data"] == b"hello"
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves PubSub.aclose unannotated


async def test_memory_urls_share_one_server_per_name() -> None:
    name = f"memory://shared-{uuid.uuid4().hex}"
    first = create_redis(make_settings(redis_url=name))
    second = create_redis(make_settings(redis_url=name))
    other = create_redis(make_settings(redis_url=f"memory://other-{uuid.uuid4().hex}"))
    try:
        await first.set("k", "v")
        assert await second.get("k") == b"v"
        assert await other.get("k") is None
    finally:
        await first.aclose()
        await second.aclose()
        await other.aclose()
