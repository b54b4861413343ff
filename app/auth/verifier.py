"""API-key verification: format check, in-process cache, Redis cache, database — in that order.

Consistency rules (what the caches guarantee):
- Expiry and revocation are evaluated on every request from the cached record, so a cache hit never extends a
  key's life.
- Revoke, rotate and create call `KeyCacheInvalidator.invalidate` after their transaction commits: it bumps a
  per-key generation counter, deletes the Redis entry and publishes the key hash on `auth:invalidate`; every
  instance drops its in-process entry on receipt (well under 1 s).
- A verification that read the database before such a change cannot re-cache the old state: it writes the Redis
  entry with a Lua compare-and-set on the generation it saw before reading, and skips the in-process cache if an
  invalidation for that key arrived meanwhile.
- If pub/sub is lost, entries still expire `auth_cache_ttl_seconds` (5 s) after they were read from the database.
- Redis down → the database answers; database and Redis both down → 503, never a misleading 401.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.errors import ApiKeyExpired, ApiKeyInvalid, ApiKeyRevoked, AuthUnavailable
from app.auth.principal import Principal
from app.auth.ratelimit import RateLimitPolicy
from app.auth.scopes import Role, Scope
from app.core.logging import get_logger
from app.core.metrics import cache_counters
from app.core.redis import RedisClient
from app.core.security import KEY_LENGTH, hash_api_key, is_well_formed
from app.keys.repository import find_key_by_hash

log = get_logger(__name__)
MALFORMED = "The API key is malformed or fails its checksum."
_KEY_CACHE_HIT, _KEY_CACHE_MISS = cache_counters("api_key_local")
_KEY_REDIS_HIT, _KEY_REDIS_MISS = cache_counters("api_key_redis")

INVALIDATION_CHANNEL = "auth:invalidate"
GENERATION_TTL_SECONDS = 3600  # longer than any request could hold an observed generation


# The braces are a Redis Cluster hash tag: a key's entry and its generation share a slot, as the compare-and-set
# script and the invalidation script take both. (Renamed from `auth:key:<hash>` for the cluster: cache data, at
# most `auth_cache_ttl_seconds` old, so an upgrade only costs one database read per key.)
def cache_key(key_hash: str) -> str:
    return f"auth:key:{{{key_hash}}}"


def generation_key(key_hash: str) -> str:
    return f"auth:gen:{{{key_hash}}}"


# SET the cache entry only if the generation is still the one observed before the database read.
_SET_IF_GENERATION = """
local current = redis.call('GET', KEYS[2])
if (current or '') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""

# KEYS: cache entry, generation (one slot); ARGV: generation TTL, channel, key hash. One key's invalidation is
# atomic and sent with EVAL, which a pipeline may carry on a Redis Cluster (MULTI across keys of several slots and
# PUBLISH in a pipeline are refused there); the publish inside reaches every node's subscribers.
_INVALIDATE = """
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"""


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What the caches hold for a key hash. `key_id is None` means "no such key" (negative cache)."""

    key_id: uuid.UUID | None
    tenant_id: uuid.UUID | None = None
    name: str = ""
    role: str = ""
    scopes: tuple[str, ...] = ()
    expires_at: float = 0.0
    revoked_at: float | None = None
    rotated_at: float | None = None
    cached_at: float = 0.0
    rate_per_second: float | None = None  # the tenant's own rate limit, if it has one
    rate_burst: int | None = None
    monthly_quota: int | None = None  # the tenant's monthly request quota, if it has one

    def encode(self) -> bytes:
        if self.key_id is None:
            return orjson.dumps({"unknown": True, "cached_at": self.cached_at})
        return orjson.dumps(
            {
                "key_id": str(self.key_id),
                "tenant_id": str(self.tenant_id),
                "name": self.name,
                "role": self.role,
                "scopes": list(self.scopes),
                "expires_at": self.expires_at,
                "revoked_at": self.revoked_at,
                "rotated_at": self.rotated_at,
                "cached_at": self.cached_at,
                "rate_per_second": self.rate_per_second,
                "rate_burst": self.rate_burst,
                "monthly_quota": self.monthly_quota,
            }
        )

    @classmethod
    def decode(cls, raw: bytes) -> KeyRecord:
        data = orjson.loads(raw)
        if data.get("unknown"):
            return cls(key_id=None, cached_at=float(data["cached_at"]))
        return cls(
            key_id=uuid.UUID(data["key_id"]),
            tenant_id=uuid.UUID(data["tenant_id"]),
            name=data["name"],
            role=data["role"],
            scopes=tuple(data["scopes"]),
            expires_at=float(data["expires_at"]),
            revoked_at=data["revoked_at"],
            rotated_at=data["rotated_at"],
            cached_at=float(data["cached_at"]),
            rate_per_second=data.get("rate_per_second"),  # absent in entries cached by an older release
            rate_burst=data.get("rate_burst"),
            monthly_quota=data.get("monthly_quota"),
        )


class KeyVerifier:
    def __init__(
        self,
        *,
        pepper: str,
        redis: RedisClient,
        session_factory: async_sessionmaker[AsyncSession],
        cache_ttl_seconds: float,
        local_cache_size: int,
        redis_timeout_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._pepper = pepper
        self._redis = redis
        self._sessions = session_factory
        self._ttl = cache_ttl_seconds
        self._local_size = local_cache_size
        self._redis_timeout = redis_timeout_seconds
        self._clock = clock
        self._local: OrderedDict[str, KeyRecord] = OrderedDict()
        self._principals: dict[str, tuple[KeyRecord, Principal]] = {}
        # Invalidation epochs: a verification started before an invalidation of the same key must not cache.
        self._epoch = 0
        self._invalidated_at: OrderedDict[str, int] = OrderedDict()
        self._set_if_generation = redis.register_script(_SET_IF_GENERATION)
        self._loads: dict[str, tuple[int, asyncio.Task[KeyRecord]]] = {}  # key hash → (epoch at start, load)
        self.used_key_ids: set[uuid.UUID] = set()
        self.max_pending_used = 10_000

    def hash(self, raw_key: str) -> str:
        return hash_api_key(raw_key, self._pepper)

    async def verify(self, raw_key: str) -> Principal:
        # A key found in the local cache was well formed when it was cached, and the cache is keyed by its exact
        # hash: the shape and checksum test (~8 µs of a ~125 µs cached signal) runs only on a miss. The length test
        # stays first, so no oversized header is ever hashed.
        if len(raw_key) != KEY_LENGTH:
            raise ApiKeyInvalid(MALFORMED)
        key_hash = self.hash(raw_key)
        now = self._clock()
        record = self._local_get(key_hash, now)
        (_KEY_CACHE_HIT if record is not None else _KEY_CACHE_MISS).inc()
        if record is None:
            if not is_well_formed(raw_key):
                raise ApiKeyInvalid(MALFORMED)
            record = await self._shared_load(key_hash, now)
        self._check_usable(record, now)  # on every request, cache hit or not
        built = self._principals.get(key_hash)
        if built is not None and built[0] is record:
            principal = built[1]
        else:
            # Building the Principal (enum and datetime conversions) is most of a cache hit's cost: memoise it
            # per cached record; a new record (reload, invalidation) gets a new one.
            principal = self._principal(record)
            if len(self._principals) >= max(self._local_size, 1) * 2:
                self._principals.clear()
            self._principals[key_hash] = (record, principal)
        if len(self.used_key_ids) < self.max_pending_used and principal.key_id is not None:
            self.used_key_ids.add(principal.key_id)
        return principal

    def invalidate_local(self, key_hash: str | None = None) -> None:
        """Drop one key (or, with None, everything: e.g. after a pub/sub reconnect may have missed messages)."""
        self._epoch += 1
        if key_hash is None:
            self._local.clear()
            self._invalidated_at.clear()
            self._wiped_at = self._epoch
            return
        self._local.pop(key_hash, None)
        self._invalidated_at[key_hash] = self._epoch
        self._invalidated_at.move_to_end(key_hash)
        while len(self._invalidated_at) > max(self._local_size, 1024):
            self._invalidated_at.popitem(last=False)

    _wiped_at = 0

    def _local_get(self, key_hash: str, now: float) -> KeyRecord | None:
        record = self._local.get(key_hash)
        if record is None:
            return None
        if now - record.cached_at >= self._ttl:
            del self._local[key_hash]
            return None
        return record

    def _local_put(self, key_hash: str, record: KeyRecord, started_epoch: int) -> None:
        if self._local_size == 0:
            return
        if self._invalidated_at.get(key_hash, 0) > started_epoch or self._wiped_at > started_epoch:
            return  # an invalidation for this key arrived while we were reading: do not resurrect old state
        self._local[key_hash] = record
        self._local.move_to_end(key_hash)
        while len(self._local) > self._local_size:
            self._local.popitem(last=False)

    async def _shared_load(self, key_hash: str, now: float) -> KeyRecord:
        """One load per key at a time in this process. Every in-process entry of a busy key expires at one instant
        (its TTL runs from the database read), and without this each request in flight at that instant went to
        Redis and then, the Redis entry expiring with it, to the database: measured at 200 connections, a ~1 s
        stall every TTL. A request joins a load only if no invalidation arrived since the load started (the epoch
        is unchanged), so joining never returns a state older than a revocation it could have seen."""
        flight = self._loads.get(key_hash)
        if flight is None or flight[0] != self._epoch:
            task = asyncio.create_task(self._load(key_hash, now), name="auth-key-load")
            flight = (self._epoch, task)
            self._loads[key_hash] = flight
            task.add_done_callback(self._landed(key_hash, task))
        # Shielded: a client that disconnects does not cancel the load the other requests wait for.
        return await asyncio.shield(flight[1])

    def _landed(self, key_hash: str, task: asyncio.Task[KeyRecord]) -> Callable[[asyncio.Task[KeyRecord]], None]:
        def done(_: asyncio.Task[KeyRecord]) -> None:
            current = self._loads.get(key_hash)
            if current is not None and current[1] is task:
                del self._loads[key_hash]
            if not task.cancelled():
                task.exception()  # retrieved: every waiter may have gone away

        return done

    async def _load(self, key_hash: str, now: float) -> KeyRecord:
        started_epoch = self._epoch
        generation: bytes | None = None
        redis_ok = True
        try:
            async with asyncio.timeout(self._redis_timeout):
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.get(cache_key(key_hash))
                    pipe.get(generation_key(key_hash))
                    cached, generation = await pipe.execute()
            if cached is not None:
                record = KeyRecord.decode(cached)
                if now - record.cached_at < self._ttl:
                    _KEY_REDIS_HIT.inc()
                    self._local_put(key_hash, record, started_epoch)
                    return record
            _KEY_REDIS_MISS.inc()
        except (RedisError, OSError, TimeoutError):
            redis_ok = False
        record = await self._from_database(key_hash, now, redis_ok)
        if redis_ok:
            stored = await self._store_in_redis(key_hash, record, generation)
            if stored:
                self._local_put(key_hash, record, started_epoch)
        else:
            self._local_put(key_hash, record, started_epoch)
        return record

    async def _from_database(self, key_hash: str, now: float, redis_ok: bool) -> KeyRecord:
        try:
            async with self._sessions() as session:
                found = await find_key_by_hash(session, key_hash)
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            log.warning("auth.database_unavailable", redis_ok=redis_ok, error=type(exc).__name__)
            raise AuthUnavailable(
                "API keys cannot be verified right now: the key store is unreachable.",
                headers={"retry-after": "1"},
            ) from exc
        if found is None:
            return KeyRecord(key_id=None, cached_at=now)
        row, tenant = found
        return KeyRecord(
            key_id=row.id,
            tenant_id=row.tenant_id,
            name=row.name,
            role=row.role,
            scopes=tuple(row.scopes),
            expires_at=row.expires_at.timestamp(),
            revoked_at=None if row.revoked_at is None else row.revoked_at.timestamp(),
            rotated_at=None if row.rotated_at is None else row.rotated_at.timestamp(),
            cached_at=now,
            rate_per_second=tenant.rate_limit_per_second,
            rate_burst=tenant.rate_limit_burst,
            monthly_quota=tenant.monthly_quota,
        )

    async def _store_in_redis(self, key_hash: str, record: KeyRecord, generation: bytes | None) -> bool:
        try:
            async with asyncio.timeout(self._redis_timeout):
                result = await self._set_if_generation(
                    keys=[cache_key(key_hash), generation_key(key_hash)],
                    args=[(generation or b"").decode(), record.encode(), int(self._ttl * 1000)],
                )
        except (RedisError, OSError, TimeoutError):
            return False
        return bool(result)

    def _check_usable(self, record: KeyRecord, now: float) -> None:
        if record.key_id is None or record.tenant_id is None:
            raise ApiKeyInvalid("The API key is not known to this service.")
        if record.revoked_at is not None:
            raise ApiKeyRevoked(f"The API key was revoked at {_iso(record.revoked_at)}.")
        if now >= record.expires_at:
            if record.rotated_at is not None:
                raise ApiKeyExpired(
                    f"The API key was rotated at {_iso(record.rotated_at)}; its grace period ended at "
                    f"{_iso(record.expires_at)}. Use its successor."
                )
            raise ApiKeyExpired(f"The API key expired at {_iso(record.expires_at)}.")

    def _principal(self, record: KeyRecord) -> Principal:
        assert record.key_id is not None  # noqa: S101 - _check_usable ran first
        assert record.tenant_id is not None  # noqa: S101
        return Principal(
            key_id=record.key_id,
            tenant_id=record.tenant_id,
            role=Role(record.role),
            scopes=frozenset(Scope(scope) for scope in record.scopes),
            expires_at=datetime.fromtimestamp(record.expires_at, UTC),
            name=record.name,
            rate_limit=(
                None
                if record.rate_per_second is None or record.rate_burst is None
                else RateLimitPolicy(record.rate_per_second, record.rate_burst)
            ),
            monthly_quota=record.monthly_quota,
        )


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


class KeyCacheInvalidator:
    """Called after a key change commits: bump the generation, drop the Redis entry, tell every instance."""

    def __init__(self, redis: RedisClient, verifier: KeyVerifier) -> None:
        self._redis = redis
        self._verifier = verifier

    async def invalidate(self, key_hash: str) -> None:
        await self.invalidate_many([key_hash])

    async def invalidate_many(self, key_hashes: Sequence[str]) -> None:
        """Every key of a list in one round trip (a tenant's budget change touches all its keys)."""
        for key_hash in key_hashes:
            self._verifier.invalidate_local(key_hash)
        if not key_hashes:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key_hash in key_hashes:
                    pipe.eval(
                        _INVALIDATE,
                        2,
                        cache_key(key_hash),
                        generation_key(key_hash),
                        GENERATION_TTL_SECONDS,
                        INVALIDATION_CHANNEL,
                        key_hash,
                    )
                await pipe.execute()
        except (RedisError, OSError) as exc:
            # The change is committed; other instances converge when their entries expire (cache TTL).
            log.warning("auth.invalidation_failed", error=type(exc).__name__)
