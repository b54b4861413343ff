"""Console sessions without a transaction across a session and its user's index (they sit in different Redis Cluster
slots): the order of the writes keeps every live session in the index, so "sign out everywhere" finds it."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from app.console.sessions import SESSION_PREFIX, USER_SESSIONS_PREFIX, SessionStore
from tests.conftest import TEST_REDIS_URL, make_settings


def _store(redis: Redis) -> SessionStore:
    return SessionStore(redis, make_settings(redis_url=TEST_REDIS_URL))


async def _create(store: SessionStore, user: uuid.UUID) -> str:
    _, session = await store.create(
        user_id=user, tenant_id=uuid.uuid4(), email="ada@example.com", role="admin", address=None, user_agent="t"
    )
    return session.id_hash


async def _members(redis: Redis, index: str) -> list[str]:
    return [m.decode() if isinstance(m, bytes) else str(m) for m in await redis.zrange(index, 0, -1)]


async def _fail(*_args: Any, **_kwargs: Any) -> Any:
    raise RedisConnectionError("Redis went away between the two writes")


async def test_a_sign_in_cut_off_between_its_writes_leaves_an_index_entry_and_no_session(
    redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, user = _store(redis_client), uuid.uuid4()
    monkeypatch.setattr(redis_client, "set", _fail)
    with pytest.raises(RedisConnectionError):
        await _create(store, user)
    monkeypatch.undo()
    (entry,) = await _members(redis_client, USER_SESSIONS_PREFIX + str(user))
    assert await redis_client.get(SESSION_PREFIX + entry) is None


async def test_a_sign_out_cut_off_between_its_writes_leaves_no_live_session_behind(
    redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, user = _store(redis_client), uuid.uuid4()
    hashes = [await _create(store, user) for _ in range(2)]
    monkeypatch.setattr(redis_client, "zrem", _fail)
    with pytest.raises(RedisConnectionError):
        await store.destroy_all_for_user(user)
    monkeypatch.undo()
    assert [await redis_client.get(SESSION_PREFIX + h) for h in hashes] == [None, None]
    assert await store.list_for_user(user) == []


async def test_a_missing_session_is_pruned_from_the_index_only_once_its_sign_in_must_have_finished(
    redis_client: Redis,
) -> None:
    store, user = _store(redis_client), uuid.uuid4()
    index = USER_SESSIONS_PREFIX + str(user)
    live = await _create(store, user)
    now_ms = time.time() * 1000
    await redis_client.zadd(index, {"signing-in": now_ms, "abandoned": now_ms - 31_000})
    assert [session.id_hash for session in await store.list_for_user(user)] == [live]
    assert set(await _members(redis_client, index)) == {live, "signing-in"}, (
        "a sign-in still writing its session must stay in the index"
    )
