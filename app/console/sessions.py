"""Console sessions, server-side in Redis (shared by every instance; nothing is cached in-process, so ending a
session in Redis ends it on every instance at once).

Redis layout (every key bounded by a TTL):
- `console:session:<sha256(id)>` → JSON of the session; TTL = the sooner of the idle and the absolute deadline,
  renewed as the session is used. Only the hash of the id is stored: a copy of Redis gives no usable session.
- `console:user-sessions:<user id>` → sorted set of that user's session hashes (score: creation time, ms), for
  "active sessions" and "sign out everywhere"; TTL = the absolute timeout, renewed at each login. Entries whose
  session expired are pruned when the set is read; at most `console_sessions_max_per_user` (the oldest ends).

Ids are 256 random bits (base64url); the cookie holds the id, the browser never sees the hash. Each session holds
its own CSRF secret (a synchronizer token: forms carry it in a hidden field, htmx in a header).

Redis Cluster: a session is found by its cookie alone, so its key cannot carry its user's hash tag, and a session
and its user's index live in different slots. No transaction spans both; instead the order of writes keeps the one
invariant that matters — a live session is always in its user's index, so "sign out everywhere" finds it: create
writes the index entry before the session, destroy deletes the sessions before their index entries. An interrupted
step leaves only an index entry without a session, which the next read prunes. The same code runs on one server.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import asdict, dataclass
from typing import cast

import orjson

from app.config import Settings
from app.core.redis import RedisClient

SESSION_PREFIX = "console:session:"
USER_SESSIONS_PREFIX = "console:user-sessions:"
# An index entry younger than this whose session is missing is a sign-in still writing it, not a stale entry.
_CREATE_GRACE_SECONDS = 30.0


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    id_hash: str
    user_id: str
    tenant_id: str
    email: str
    role: str
    csrf: str
    created: float  # epoch seconds
    last_seen: float
    address: str | None
    user_agent: str

    @property
    def user_uuid(self) -> uuid.UUID:
        return uuid.UUID(self.user_id)

    def absolute_deadline(self, settings: Settings) -> float:
        return self.created + settings.console_session_absolute_seconds

    def expired(self, settings: Settings, now: float) -> bool:
        return now >= self.absolute_deadline(settings) or now - self.last_seen >= settings.console_session_idle_seconds


class SessionStore:
    def __init__(self, redis: RedisClient, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings

    async def create(
        self, *, user_id: uuid.UUID, tenant_id: uuid.UUID, email: str, role: str, address: str | None, user_agent: str
    ) -> tuple[str, ConsoleSession]:
        """A new session (a fresh id, never one the client offered); returns the id for the cookie."""
        session_id = secrets.token_urlsafe(32)
        now = time.time()
        session = ConsoleSession(
            id_hash=_hash(session_id), user_id=str(user_id), tenant_id=str(tenant_id), email=email, role=role,
            csrf=secrets.token_urlsafe(32), created=now, last_seen=now, address=address, user_agent=user_agent[:200],
        )  # fmt: skip
        index = USER_SESSIONS_PREFIX + session.user_id
        async with self.redis.pipeline(transaction=True) as pipe:  # one key: one slot
            pipe.zadd(index, {session.id_hash: int(now * 1000)})
            pipe.expire(index, self.settings.console_session_absolute_seconds)
            pipe.zrange(index, 0, -1)
            *_, members = await pipe.execute()
        # Only once the index holds it (see the module docstring).
        await self.redis.set(
            SESSION_PREFIX + session.id_hash, orjson.dumps(asdict(session)), ex=self._ttl(session, now)
        )
        excess = len(members) - self.settings.console_sessions_max_per_user
        if excess > 0:  # the oldest sessions end
            await self._destroy_hashes(session.user_id, [_text(m) for m in members[:excess]])
        return session_id, session

    async def load(self, session_id: str) -> ConsoleSession | None:
        """The live session for a cookie value, its last-seen time renewed (at most once per
        DELTAFLOW_CONSOLE_SESSION_RENEW_SECONDS); None when unknown or expired."""
        if not session_id or len(session_id) > 128:
            return None
        id_hash = _hash(session_id)
        raw = await self.redis.get(SESSION_PREFIX + id_hash)
        if raw is None:
            return None
        session = ConsoleSession(**orjson.loads(raw))
        now = time.time()
        if session.expired(self.settings, now):
            await self._destroy_hashes(session.user_id, [id_hash])
            return None
        if now - session.last_seen < self.settings.console_session_renew_seconds:
            return session
        renewed = ConsoleSession(**{**asdict(session), "last_seen": now})
        await self.redis.set(SESSION_PREFIX + id_hash, orjson.dumps(asdict(renewed)), ex=self._ttl(renewed, now))
        return renewed

    async def destroy(self, session: ConsoleSession) -> None:
        await self._destroy_hashes(session.user_id, [session.id_hash])

    async def list_for_user(self, user_id: uuid.UUID) -> list[ConsoleSession]:
        """The user's live sessions, newest first (expired index entries pruned on the way)."""
        index = USER_SESSIONS_PREFIX + str(user_id)
        ranked = cast(list[tuple[bytes, float]], await self.redis.zrevrange(index, 0, -1, withscores=True))
        entries = [(_text(member), float(created_ms)) for member, created_ms in ranked]
        if not entries:
            return []
        hashes = [id_hash for id_hash, _ in entries]
        # One GET per session in one pipeline, not MGET: the sessions lie in many slots (on a cluster the pipeline
        # sends each node its share at once).
        async with self.redis.pipeline(transaction=False) as pipe:
            for id_hash in hashes:
                pipe.get(SESSION_PREFIX + id_hash)
            raws = await pipe.execute()
        now = time.time()
        live: list[ConsoleSession] = []
        gone: list[str] = []
        for (id_hash, created_ms), raw in zip(entries, raws, strict=True):
            session = None if raw is None else ConsoleSession(**orjson.loads(raw))
            if session is not None and not session.expired(self.settings, now):
                live.append(session)
            elif session is not None or now - created_ms / 1000 > _CREATE_GRACE_SECONDS:
                gone.append(id_hash)
            # else: a sign-in between its two writes (index, then session); pruning it now would leave its session
            # outside the index once written.
        if gone:
            await self._destroy_hashes(str(user_id), gone)
        return live

    async def destroy_by_hash(self, user_id: uuid.UUID, id_hash: str) -> bool:
        """End one of the user's own sessions (the id hash as listed); False if it is not theirs."""
        index = USER_SESSIONS_PREFIX + str(user_id)
        if await self.redis.zscore(index, id_hash) is None:
            return False
        await self._destroy_hashes(str(user_id), [id_hash])
        return True

    async def destroy_all_for_user(self, user_id: uuid.UUID, *, keep: ConsoleSession | None = None) -> int:
        """End every session of the user (but `keep`): a password change, a disabled account, "sign out everywhere"."""
        index = USER_SESSIONS_PREFIX + str(user_id)
        hashes = [_text(member) for member in await self.redis.zrange(index, 0, -1)]
        doomed = [h for h in hashes if keep is None or h != keep.id_hash]
        if doomed:
            await self._destroy_hashes(str(user_id), doomed)
        return len(doomed)

    async def _destroy_hashes(self, user_id: str, hashes: list[str]) -> None:
        # The sessions, then their index entries (see the module docstring). A cluster client splits the DEL by slot.
        await self.redis.delete(*(SESSION_PREFIX + h for h in hashes))
        await self.redis.zrem(USER_SESSIONS_PREFIX + user_id, *hashes)

    def _ttl(self, session: ConsoleSession, now: float) -> int:
        remaining = min(
            session.absolute_deadline(self.settings) - now, float(self.settings.console_session_idle_seconds)
        )
        return max(int(remaining) + 1, 1)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
