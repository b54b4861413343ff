"""The Redis pool queues a burst: with every connection busy, a command waits for one (up to the pool timeout)
instead of failing, and fails with a clear error only once that wait is over."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from app.core.redis import RedisClient, create_redis
from tests.conftest import TEST_REDIS_URL, make_settings


async def _hold_the_connection(redis: RedisClient, seconds: float) -> None:
    assert isinstance(redis, Redis)
    pool = redis.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await asyncio.sleep(seconds)
    finally:
        await pool.release(connection)


async def test_a_command_waits_for_a_busy_pool_longer_than_the_socket_timeout() -> None:
    # One connection, held for 0.6 s: longer than the 0.3 s socket timeout the pool wait used to be bounded by,
    # shorter than the 2 s pool timeout.
    redis = create_redis(
        make_settings(
            redis_url=TEST_REDIS_URL,
            redis_max_connections=1,
            redis_socket_timeout_seconds=0.3,
            redis_pool_timeout_seconds=2.0,
        )
    )
    key = f"test:pool:{uuid.uuid4().hex}"
    try:
        holder = asyncio.create_task(_hold_the_connection(redis, seconds=0.6))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        assert await redis.set(key, "1", ex=10)
        waited = time.monotonic() - started
        await holder
        assert 0.3 < waited < 2.0, waited
    finally:
        await redis.aclose()


async def test_the_pool_wait_is_bounded() -> None:
    redis = create_redis(
        make_settings(redis_url=TEST_REDIS_URL, redis_max_connections=1, redis_pool_timeout_seconds=0.2)
    )
    key = f"test:pool:{uuid.uuid4().hex}"
    try:
        holder = asyncio.create_task(_hold_the_connection(redis, seconds=1.0))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(RedisConnectionError, match="No connection available"):
            await redis.get(key)
        assert time.monotonic() - started < 0.9
        await holder
    finally:
        await redis.aclose()


async def _kill_pooled_connections(redis: RedisClient, key: str) -> None:
    """Open a pooled connection with a command, then have the server close it, as a Redis restart does."""
    assert await redis.set(key, "1", ex=10)
    name = f"pooled-{uuid.uuid4().hex}"
    assert await redis.client_setname(name)
    killer = Redis.from_url(TEST_REDIS_URL)
    try:
        clients = await killer.client_list()
        killed = [c["id"] for c in clients if c.get("name") == name]
        assert killed, clients
        for client_id in killed:
            await killer.client_kill_filter(_id=client_id)
    finally:
        await killer.aclose()


async def test_a_dead_pooled_connection_is_replaced_without_failing_the_command() -> None:
    key = f"test:pool:{uuid.uuid4().hex}"
    redis = create_redis(make_settings(redis_url=TEST_REDIS_URL, redis_max_connections=1))
    try:
        await _kill_pooled_connections(redis, key)
        assert await redis.get(key) == b"1"  # reconnected and sent again
    finally:
        await redis.delete(key)
        await redis.aclose()


async def test_without_reconnect_retries_the_dead_connection_fails_one_command() -> None:
    key = f"test:pool:{uuid.uuid4().hex}"
    redis = create_redis(make_settings(redis_url=TEST_REDIS_URL, redis_max_connections=1, redis_reconnect_retries=0))
    try:
        await _kill_pooled_connections(redis, key)
        with pytest.raises(RedisConnectionError):
            await redis.get(key)
        assert await redis.get(key) == b"1"  # the next command opens a new connection
    finally:
        await redis.delete(key)
        await redis.aclose()
