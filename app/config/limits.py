"""Settings of the per-tenant limits every authenticated `/v1` request passes (`app/auth/metering.py`): the rate
limit (a token bucket shared by the tenant's keys across instances) and the concurrency limit (requests of one
tenant being handled at once by one instance)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings

# The slowest refill a rate limit may have (one request per 1 000 s): slower ones overflow the bucket arithmetic.
MIN_RATE_LIMIT_PER_SECOND = 0.001


class TenantLimitSettings(BaseSettings):
    # Rate limit per tenant (all its keys share one token bucket in Redis; see app/auth/ratelimit.py): `burst`
    # requests at once, refilled at `per_second`. 0 per second switches limiting off. A batch item costs a token.
    rate_limit_per_second: Annotated[float, Field(ge=0, le=1_000_000)] = 20.0
    rate_limit_burst: Annotated[int, Field(ge=1, le=10_000_000)] = 100
    # An instance leases at most `per_second x lease_seconds` tokens at a time, and drops them unspent after this.
    rate_limit_lease_seconds: Annotated[float, Field(gt=0, le=60)] = 0.5
    rate_limit_max_tenants: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000  # tenants tracked per instance
    # Requests of one tenant an instance (one worker process) handles at once; event streams count only until their
    # headers are sent (they have their own per-tenant bound). More get a 429 `concurrency-limited` at once rather
    # than a place in a queue. A polling client at a few ms per request holds well under one slot, so only a tenant
    # sending far more than the instance serves meets it: its requests then wait at most about `limit / throughput`
    # inside the app (256 / ~400 per second ~ 0.6 s on this project's 2-core benchmark machine) instead of queueing
    # for as long as the overload lasts in front of every other tenant's. The shipped nginx refuses a key's 257th
    # request in progress before any instance sees it (cheaper); this bound holds for whatever is in front. 0: off.
    tenant_max_in_flight: Annotated[int, Field(ge=0, le=1_000_000)] = 256
    tenant_concurrency_retry_after_seconds: Annotated[int, Field(ge=1, le=3600)] = 1

    @field_validator("rate_limit_per_second")
    @classmethod
    def _rate_or_off(cls, value: float) -> float:
        if 0 < value < MIN_RATE_LIMIT_PER_SECOND:
            raise ValueError(f"must be 0 (no default limit) or at least {MIN_RATE_LIMIT_PER_SECOND}")
        return value
