"""Monthly request quotas, counted across every instance without a Redis round trip per request.

A tenant with a quota has one counter per calendar month (UTC) in Redis: `quota:<tenant>:<YYYYMM>` (TTL: the rest
of the month plus a week). An instance reserves a lease of requests from it with one atomic script and spends the
lease in process; the lease shrinks as the month's quota runs out (a tenth of what is left, at least one), so no
tenant can ever pass its quota, however many instances serve it. Leftover leases are given back at shutdown, so
the count is exact except for an instance that dies (it loses at most one lease, `DELTAFLOW_QUOTA_LEASE_SIZE`).

The script also says which notice thresholds (default 80 % and 100 %) the lease crossed: exactly one lease
crosses each, so exactly one instance sends each notice.
"""

from __future__ import annotations

import calendar
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from app.core.errors import AppError
from app.core.redis import RedisClient

QUOTA_PREFIX = "quota:"

# KEYS[1] counter; ARGV: quota, wanted, ttl seconds, thresholds (fractions) … → {granted, used after, crossed …}
_LEASE = """
local quota = tonumber(ARGV[1])
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local left = quota - used
if left <= 0 then return {0, used} end
local grant = math.min(tonumber(ARGV[2]), left)
local after = redis.call('INCRBY', KEYS[1], grant)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
local result = {grant, after}
for i = 4, #ARGV do
  local mark = math.ceil(quota * tonumber(ARGV[i]))
  if used < mark and after >= mark then table.insert(result, ARGV[i]) end
end
return result
"""


class QuotaExceeded(AppError):
    slug = "quota-exceeded"
    title = "Monthly quota exhausted"
    status = 429
    description = (
        "The tenant has used every request of its monthly quota; requests are refused until `reset` (the first "
        "day of the next month, UTC). An operator can raise the quota."
    )


@dataclass(frozen=True, slots=True)
class QuotaState:
    limit: int
    remaining: int
    reset: datetime

    @property
    def headers(self) -> tuple[tuple[bytes, bytes], ...]:
        return (
            (b"x-quota-limit", str(self.limit).encode()),
            (b"x-quota-remaining", str(self.remaining).encode()),
            (b"x-quota-reset", self.reset.strftime("%Y-%m-%dT%H:%M:%SZ").encode()),
        )


def month_window(now: datetime) -> tuple[str, datetime]:
    """(YYYYMM, start of the next month) in UTC."""
    days = calendar.monthrange(now.year, now.month)[1]
    start = datetime(now.year, now.month, 1, tzinfo=UTC)
    return f"{now:%Y%m}", start + timedelta(days=days)


@dataclass(slots=True)
class _Lease:
    month: str
    quota: int
    unspent: int = 0
    used_after: int = 0  # the month's count in Redis after our last lease (ours and everyone else's)


Notify = Callable[[uuid.UUID, int, str], None]  # tenant, quota, threshold ("0.8") crossed


class QuotaLedger:
    def __init__(
        self,
        redis: RedisClient,
        *,
        lease_size: int,
        thresholds: Sequence[float],
        notify: Notify | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.redis = redis
        self.lease_size = lease_size
        self.thresholds = [str(t) for t in thresholds]
        self.notify = notify
        self.clock = clock
        self._leases: dict[uuid.UUID, _Lease] = {}
        self._script = redis.register_script(_LEASE)

    async def spend(self, tenant_id: uuid.UUID, quota: int) -> QuotaState:
        """One request of the tenant's month; raises `QuotaExceeded` when none is left."""
        month, reset = month_window(self.clock())
        lease = self._leases.get(tenant_id)
        if lease is not None and lease.quota != quota:  # an operator changed it: what we hold goes back first
            await self._return(tenant_id, lease)
            lease = None
        if lease is None or lease.month != month:
            lease = self._leases[tenant_id] = _Lease(month, quota)
        if lease.unspent == 0:
            await self._lease(tenant_id, quota, lease, reset)
        if lease.unspent == 0:
            seconds = max(math.ceil((reset - self.clock()).total_seconds()), 1)
            raise QuotaExceeded(
                f"The monthly quota of {quota} requests is used up until {reset:%Y-%m-%d} (UTC).",
                extensions={"limit": quota, "reset": reset.isoformat().replace("+00:00", "Z")},
                headers={"retry-after": str(seconds), **{k.decode(): v.decode() for k, v in
                                                          QuotaState(quota, 0, reset).headers}},
            )  # fmt: skip
        lease.unspent -= 1
        return QuotaState(quota, max(quota - lease.used_after + lease.unspent, 0), reset)

    async def _lease(self, tenant_id: uuid.UUID, quota: int, lease: _Lease, reset: datetime) -> None:
        # A tenth of what is known to be left, at most a lease, at least one: small quotas are spent one request at
        # a time, so no instance sits on requests another one is refusing.
        wanted = max(1, min(self.lease_size, (quota - lease.used_after) // 10))
        ttl = int((reset - self.clock()).total_seconds()) + 7 * 86_400
        key = f"{QUOTA_PREFIX}{tenant_id}:{lease.month}"
        result = await self._script(keys=[key], args=[quota, wanted, ttl, *self.thresholds])
        granted, used_after, *crossed = result
        lease.unspent, lease.used_after = int(granted), int(used_after)
        if self.notify is not None:
            for threshold in crossed:
                self.notify(tenant_id, quota, threshold.decode() if isinstance(threshold, bytes) else str(threshold))

    async def give_back(self) -> None:
        """Return every unspent lease (shutdown): the counters then hold exactly what was served."""
        for tenant_id, lease in self._leases.items():
            await self._return(tenant_id, lease)

    async def _return(self, tenant_id: uuid.UUID, lease: _Lease) -> None:
        if lease.unspent:
            await self.redis.decrby(f"{QUOTA_PREFIX}{tenant_id}:{lease.month}", lease.unspent)
            lease.unspent = 0
