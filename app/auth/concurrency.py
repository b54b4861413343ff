"""Per-tenant concurrency limit of one instance: how many of a tenant's requests it handles at once.

The rate limit bounds what a tenant may send per second; this bounds what it may have waiting inside one instance.
When a tenant sends more than the instance serves (a burst, a retry storm, a runaway poller), its excess gets a
429 at once — cheap, no Redis, no database — instead of a place in a queue that would grow for as long as the
overload lasts, hold Redis connections, and make every other tenant on the instance wait behind it. The count is per
instance on purpose: it protects what is finite per instance (its event loop, its Redis and database pools), needs
no round trip, and the load balancer spreads a tenant's requests over the instances. Stripe calls this a
"concurrent requests limiter" and answers it with 429 too: the client sent more than it may, so it slows down.
"""

from __future__ import annotations

import uuid

from app.core.errors import AppError


class ConcurrencyLimited(AppError):
    slug = "concurrency-limited"
    title = "Too many concurrent requests"
    status = 429
    description = (
        "Too many of the caller's requests were in progress at once: the tenant's on one instance "
        "(DELTAFLOW_TENANT_MAX_IN_FLIGHT), or the API key's at the nginx in front (nginx/nginx.conf, limit_conn). "
        "Nothing was done; retry after `Retry-After` seconds, or send fewer requests at once. `limit` is the bound."
    )


class TenantSlot:
    """One admitted request; `release` gives the slot back (only the first call counts)."""

    __slots__ = ("_limiter", "_tenant_id")

    def __init__(self, limiter: TenantConcurrency, tenant_id: uuid.UUID) -> None:
        self._limiter: TenantConcurrency | None = limiter
        self._tenant_id = tenant_id

    def release(self) -> None:
        if self._limiter is not None:
            self._limiter.leave(self._tenant_id)
            self._limiter = None


class TenantConcurrency:
    def __init__(self, max_in_flight: int, retry_after_seconds: int) -> None:
        self.max_in_flight = max_in_flight
        self._retry_after = str(retry_after_seconds)
        self._in_flight: dict[uuid.UUID, int] = {}  # only tenants with a request in progress: bounded by them

    def admit(self, tenant_id: uuid.UUID) -> TenantSlot:
        """A slot for one request of the tenant; raises `ConcurrencyLimited` when it holds them all."""
        held = self._in_flight.get(tenant_id, 0)
        if held >= self.max_in_flight:
            raise ConcurrencyLimited(
                f"{held} requests of this tenant are in progress on this instance, its limit; retry in "
                f"{self._retry_after} s.",
                extensions={"limit": self.max_in_flight},
                headers={"retry-after": self._retry_after},
            )
        self._in_flight[tenant_id] = held + 1
        return TenantSlot(self, tenant_id)

    def in_flight(self, tenant_id: uuid.UUID) -> int:
        return self._in_flight.get(tenant_id, 0)

    def leave(self, tenant_id: uuid.UUID) -> None:
        held = self._in_flight.get(tenant_id, 0) - 1
        if held > 0:
            self._in_flight[tenant_id] = held
        else:
            self._in_flight.pop(tenant_id, None)


def tenant_concurrency_from(max_in_flight: int, retry_after_seconds: int) -> TenantConcurrency | None:
    """The limiter, or None when the setting switches it off (0)."""
    return TenantConcurrency(max_in_flight, retry_after_seconds) if max_in_flight > 0 else None
