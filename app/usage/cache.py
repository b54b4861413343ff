"""Usage reports cached in Redis, dropped whenever new counts of their tenant are flushed.

A report is an aggregate over up to a year of `usage_counts` rows, and dashboards ask for the same few ranges
over and over; the counts only change when an instance flushes (every DELTAFLOW_USAGE_FLUSH_SECONDS). So:

- reports of a tenant live in one hash `usage:{<tenant>}:reports` (field = the query), read in the same round trip
  as the tenant's generation `usage:{<tenant>}:gen` (the braces keep both in one Redis Cluster slot);
- a flush, once committed, increments the generation of every tenant it counted and deletes their hashes;
- a report computed from the database is stored only if the generation is still the one read before the query
  (a Lua check-and-set), so a flush that lands while the query runs can never leave a stale report behind;
- every hash expires after DELTAFLOW_USAGE_CACHE_TTL_SECONDS, which bounds what retention pruning (deleting old
  days, with no flush) can leave visible.

Redis trouble never fails a report: the cache is skipped (logged) and the database answers.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable

from redis.exceptions import RedisError

from app.core.logging import get_logger
from app.core.redis import RedisClient
from app.usage.schemas import UsageReport

log = get_logger(__name__)

USAGE_CACHE_STATE = "usage_report_cache"  # app.state attribute, None where no Redis was given

# KEYS: reports hash, generation; ARGV: field, report JSON, generation read before the query ("" = none), TTL.
_STORE_IF_CURRENT = """
local current = redis.call('GET', KEYS[2]) or ''
if current ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return 1
"""


def _keys(tenant_id: uuid.UUID) -> tuple[str, str]:
    return f"usage:{{{tenant_id}}}:reports", f"usage:{{{tenant_id}}}:gen"


class UsageReportCache:
    def __init__(self, redis: RedisClient, ttl_seconds: float) -> None:
        self.redis = redis
        self.ttl = max(1, int(ttl_seconds))
        self._store = redis.register_script(_STORE_IF_CURRENT)

    async def get_or_compute(
        self, tenant_id: uuid.UUID, query: str, compute: Callable[[], Awaitable[UsageReport]]
    ) -> tuple[UsageReport, bool]:
        """The cached report for `query` or a freshly computed (and stored) one; the flag says it was cached."""
        reports, generation_key = _keys(tenant_id)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hget(reports, query)
                pipe.get(generation_key)
                cached, generation = await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("usage.cache_unavailable", error=type(exc).__name__)
            return await compute(), False
        if cached is not None:
            return UsageReport.model_validate_json(cached), True
        report = await compute()
        seen = generation.decode() if isinstance(generation, bytes) else (generation or "")
        try:
            await self._store(
                keys=[reports, generation_key], args=[query, report.model_dump_json(by_alias=True), seen, self.ttl]
            )
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("usage.cache_unavailable", error=type(exc).__name__)
        return report, False

    async def invalidate(self, tenant_ids: Iterable[uuid.UUID]) -> None:
        """After a flush committed: new generations, no cached reports, for these tenants."""
        tenants = set(tenant_ids)
        if not tenants:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for tenant_id in tenants:
                    reports, generation_key = _keys(tenant_id)
                    pipe.incr(generation_key)
                    pipe.expire(generation_key, self.ttl * 2)
                    pipe.delete(reports)
                await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            # The reports then live until their TTL: logged, as the stale window is longer than promised.
            log.warning("usage.cache_invalidation_failed", error=type(exc).__name__, tenants=len(tenants))
