"""Per-tenant rate limits: one token bucket per tenant in Redis, shared by every API instance, spent locally.

A Redis round trip per request would halve the throughput of a cached signal (STYLE.md: ~0.5x measured), so an
instance *leases* tokens from the tenant's shared bucket (one Lua call, atomic) and spends them in-process, with
no I/O, until they run out or the lease lapses. Guarantees:
- Redis grants only tokens the bucket holds. Tokens an instance leased just before a refill can still be spent
  after it, so an instant burst may exceed the bucket by one lease per instance (at most `rate x lease_seconds`);
  a lapsed lease's unspent tokens are dropped, not returned (the conservative side).
- Leases adapt to demand: the first lease of a tenant is one token (a slow client costs one Redis call per request
  and strands nothing); a lease spent before it lapses doubles the next one, up to `rate x lease_seconds` tokens;
  one that lapses unspent halves it. So a busy tenant costs one Redis call per many requests, and tokens stranded
  on other instances stay below `instances x rate x lease_seconds`.
- A refusal is remembered until the bucket can grant again (the script says when), so a client hammering past its
  limit is refused in-process and never turns into a Redis load.
- Redis unreachable: each instance enforces the same policy on its own (a local bucket), for
  `REDIS_RETRY_SECONDS`, then tries Redis again. Requests keep flowing; the limit is per instance meanwhile.
The bucket's clock is Redis's own (`TIME`), so instances with skewed clocks share one notion of refill.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from app.auth.errors import RateLimited
from app.config import Settings
from app.core.logging import get_logger
from app.core.redis import RedisClient

log = get_logger(__name__)

REDIS_RETRY_SECONDS = 1.0  # after a Redis failure, limit locally this long before asking Redis again
POLICY_NAME = "tenant"
MAX_LEASE_ROUNDS = 1000
SWEEP_INTERVAL_SECONDS = 1.0  # how often a full tenant table may be swept for idle entries


def bucket_key(tenant_id: uuid.UUID) -> str:
    """Hash {tokens, at_ms}; expires once a full refill has passed (an idle bucket is a full one)."""
    return f"ratelimit:tenant:{tenant_id}"


# KEYS[1] bucket; ARGV: rate per second, burst, tokens wanted, tokens needed (fewer → grant none).
# Returns {granted, tokens left (floor), ms until `needed` tokens will be there (0 when granted)}.
_LEASE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local need = tonumber(ARGV[4])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
if now > at then tokens = tokens + (now - at) * rate / 1000 end
tokens = math.min(burst, tokens)  -- also when an operator lowered the burst
local granted = 0
local wait = 0
if tokens >= need then
  granted = math.min(want, math.floor(tokens))
  tokens = tokens - granted
else
  wait = math.ceil((need - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {granted, math.floor(tokens), wait}
"""


@dataclass(frozen=True, slots=True)
class RateLimitPolicy:
    """A tenant's budget: `burst` requests at once, refilled at `per_second`. The service default comes from the
    settings; a tenant's own (set by an operator) travels with its keys' cached verification."""

    per_second: float
    burst: int
    # `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers): `burst` requests per refill window, encoded once.
    header: bytes = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "header", f'"{POLICY_NAME}";q={self.burst};w={self.window_seconds}'.encode())

    @property
    def window_seconds(self) -> int:
        """Time for an empty bucket to fill: the `w` of `RateLimit-Policy`."""
        return max(1, math.ceil(self.burst / self.per_second))


class _Allowance:
    """One tenant's state in this process."""

    __slots__ = (
        "expires", "lease", "local_at", "local_tokens", "max_lease", "next_lease", "policy", "remaining", "retry_at",
        "retry_cost", "tokens", "waiting"
    )  # fmt: skip

    def __init__(self, policy: RateLimitPolicy, max_lease: int) -> None:
        self.policy = policy
        self.max_lease = max_lease  # at most rate x lease_seconds tokens per lease
        self.tokens = 0  # leased, not yet spent
        self.expires = 0.0  # monotonic time the lease lapses
        self.remaining = 0  # the shared bucket's level after our last lease (for the RateLimit header)
        self.retry_at = 0.0  # requests of `retry_cost` tokens or more are refused without asking Redis until then
        self.retry_cost = 1
        self.next_lease = 1  # adaptive lease size
        self.waiting = 0  # requests waiting on the lease in flight
        self.lease: asyncio.Task[None] | None = None
        self.local_tokens = -1.0  # the fallback bucket while Redis is down (-1: not started)
        self.local_at = 0.0


class RateLimiter:
    def __init__(
        self,
        redis: RedisClient,
        default_policy: RateLimitPolicy | None,
        *,
        lease_seconds: float,
        redis_timeout_seconds: float,
        max_tenants: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.default_policy = default_policy  # None: only tenants with a policy of their own are limited
        self._redis_timeout = redis_timeout_seconds
        self._lease_seconds = lease_seconds
        self._max_tenants = max_tenants
        self._clock = clock
        self._allowances: dict[uuid.UUID, _Allowance] = {}
        self._script = redis.register_script(_LEASE)
        self._redis_down_until = 0.0
        self._swept_at = float("-inf")

    async def acquire(self, tenant_id: uuid.UUID, cost: int = 1, policy: RateLimitPolicy | None = None) -> int:
        """Spend `cost` tokens of the tenant's bucket under `policy` (default: the service's), capped at its burst
        (a request larger than the bucket could never pass); returns the tokens left. Raises `RateLimited` with
        the seconds to wait."""
        policy = policy or self.default_policy
        if policy is None:
            raise ValueError("no rate-limit policy: neither the tenant's nor a default")
        cost = min(max(cost, 1), policy.burst)
        allowance = self._allowances.get(tenant_id)
        now = self._clock()
        if allowance is not None and allowance.tokens >= cost and now < allowance.expires:
            allowance.tokens -= cost  # the hot path: no I/O, no allocation
            return allowance.tokens + allowance.remaining
        if allowance is None:
            allowance = self._new_allowance(tenant_id, now, policy)
        elif allowance.policy != policy:  # an operator changed the tenant's budget: it applies from this lease on
            allowance.policy, allowance.max_lease = policy, self._max_lease(policy)
            allowance.next_lease = min(allowance.next_lease, allowance.max_lease)
            # A refusal under the old budget may not hold under the new one: ask again. The fallback bucket keeps
            # its level (clamped), so keys straddling the change cannot refill it by alternating policies.
            allowance.retry_at = 0.0
            allowance.local_tokens = min(allowance.local_tokens, float(policy.burst))
        if now >= allowance.expires and allowance.tokens:
            allowance.tokens = 0  # lapsed unspent: drop them (they are not returned); the next lease is smaller
            allowance.next_lease = max(1, allowance.next_lease // 2)
        # Waiters that joined a lease too small for all of them lease again. Each round either grants a token,
        # records a refusal or marks Redis down, so the loop ends; the bound only guards against a bug.
        for _ in range(MAX_LEASE_ROUNDS):
            if allowance.tokens >= cost:  # a lease this request waited for is spent even if it lapsed meanwhile
                allowance.tokens -= cost
                return allowance.tokens + allowance.remaining
            if now < allowance.retry_at and cost >= allowance.retry_cost:
                # The remembered wait was for `retry_cost` tokens; a costlier request waits for its extra ones too.
                extra = (cost - allowance.retry_cost) / policy.per_second
                raise _refusal(policy, allowance.retry_at - now + extra)
            if now < self._redis_down_until:
                return self._spend_locally(allowance, cost, now)
            if allowance.lease is None:
                allowance.lease = asyncio.create_task(self._lease(tenant_id, allowance, cost), name="rate-lease")
            # Shielded: a client that disconnects does not cancel the lease other requests wait for.
            allowance.waiting += 1
            try:
                await asyncio.shield(allowance.lease)
            finally:
                allowance.waiting -= 1
            now = self._clock()
        raise _refusal(policy, max(allowance.retry_at - now, 1 / policy.per_second))

    async def _lease(self, tenant_id: uuid.UUID, allowance: _Allowance, cost: int) -> None:
        try:
            # Enough for every request waiting on this lease (a burst of a new tenant), within the lease bound.
            want = max(cost, min(max(allowance.next_lease, allowance.waiting), allowance.max_lease))
            unspent = allowance.tokens
            try:
                async with asyncio.timeout(self._redis_timeout):
                    granted, left, wait_ms = await self._script(
                        keys=[bucket_key(tenant_id)],
                        args=[allowance.policy.per_second, allowance.policy.burst, want, max(cost - unspent, 1)],
                    )
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("ratelimit.redis_unavailable", error=type(exc).__name__)
                self._redis_down_until = self._clock() + REDIS_RETRY_SECONDS
                return
            now = self._clock()
            if allowance.tokens == 0 and now < allowance.expires:
                allowance.next_lease = min(allowance.next_lease * 2, allowance.max_lease)  # spent before it lapsed
            allowance.tokens += int(granted)
            allowance.remaining = int(left)
            allowance.expires = now + self._lease_seconds
            allowance.retry_at = now + int(wait_ms) / 1000 if not granted else 0.0
            allowance.retry_cost = max(cost - unspent, 1)  # a refused batch must not block single requests
        finally:
            allowance.lease = None

    def _spend_locally(self, allowance: _Allowance, cost: int, now: float) -> int:
        """The per-instance bucket used while Redis is unreachable."""
        policy = allowance.policy
        if allowance.local_tokens < 0:
            allowance.local_tokens, allowance.local_at = float(policy.burst), now
        level = min(policy.burst, allowance.local_tokens + (now - allowance.local_at) * policy.per_second)
        allowance.local_at = now
        if level < cost:
            allowance.local_tokens = level
            raise _refusal(policy, (cost - level) / policy.per_second)
        allowance.local_tokens = level - cost
        return int(allowance.local_tokens)

    def _max_lease(self, policy: RateLimitPolicy) -> int:
        return max(1, min(policy.burst, math.floor(policy.per_second * self._lease_seconds)))

    def _new_allowance(self, tenant_id: uuid.UUID, now: float, policy: RateLimitPolicy) -> _Allowance:
        if len(self._allowances) >= self._max_tenants and now - self._swept_at >= SWEEP_INTERVAL_SECONDS:
            # Forget idle tenants (nothing leased, nothing refused, no lease in flight); their buckets live on in
            # Redis, so forgetting costs one extra lease, never a looser limit. At most one sweep a second: with
            # every tracked tenant busy, a sweep per request would cost a scan of the whole table each time.
            self._swept_at = now
            for key, idle in list(self._allowances.items()):
                if idle.lease is None and (idle.tokens == 0 or now >= idle.expires) and now >= idle.retry_at:
                    del self._allowances[key]
        if len(self._allowances) >= self._max_tenants:
            # Still full (every tracked tenant busy): forget the longest-tracked one without a lease in flight.
            # Every tenant stays tracked, so none loses its refusal memory or, with Redis down, its local bucket
            # for good; the evicted one at worst costs a lease and its unspent tokens (the conservative side).
            victim = next((key for key, entry in self._allowances.items() if entry.lease is None), None)
            if victim is not None:
                del self._allowances[victim]
        allowance = _Allowance(policy, self._max_lease(policy))
        self._allowances[tenant_id] = allowance  # at most max_tenants + leases in flight
        return allowance


def _refusal(policy: RateLimitPolicy, wait_seconds: float) -> RateLimited:
    retry_after = max(1, math.ceil(wait_seconds))
    return RateLimited(
        f"Rate limit exceeded: {policy.burst} requests in a burst, refilled at {policy.per_second:g} per second,"
        f" shared by every key of the tenant. Retry in {retry_after} s.",
        extensions={
            "retry_after_seconds": retry_after,
            "limit": {"per_second": policy.per_second, "burst": policy.burst},
        },
        headers={
            "retry-after": str(retry_after),
            "ratelimit": f'"{POLICY_NAME}";r=0;t={retry_after}',
            "ratelimit-policy": policy.header.decode(),
        },
    )


def rate_limiter_from_settings(settings: Settings, redis: RedisClient) -> RateLimiter:
    """`rate_limit_per_second` = 0: no default budget (tenants with their own are still limited)."""
    default = None
    if settings.rate_limit_per_second > 0:
        default = RateLimitPolicy(settings.rate_limit_per_second, settings.rate_limit_burst)
    return RateLimiter(
        redis,
        default,
        lease_seconds=settings.rate_limit_lease_seconds,
        redis_timeout_seconds=settings.auth_redis_timeout_seconds,
        max_tenants=settings.rate_limit_max_tenants,
    )
