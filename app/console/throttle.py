"""Sign-in attempts per client address, counted in Redis across instances (the per-account lockout lives with
the user row: see `UserService.authenticate`).

Redis layout: `console:login-attempts:<address>` → attempt count; TTL = the failure window, set by the first
attempt of the window (a fixed window: simple, and an attacker gains at most one extra window's worth).
"""

from __future__ import annotations

from app.config import Settings
from app.core.redis import RedisClient

ATTEMPTS_PREFIX = "console:login-attempts:"


class AddressThrottle:
    def __init__(self, redis: RedisClient, settings: Settings) -> None:
        self.redis = redis
        self.limit = settings.console_login_max_attempts_per_address
        self.window = settings.console_login_failure_window_seconds

    async def attempt(self, address: str | None) -> int | None:
        """Count one attempt; None if allowed, else the seconds until the address may try again."""
        key = ATTEMPTS_PREFIX + (address or "unknown")
        async with self.redis.pipeline(transaction=True) as pipe:
            # SET NX EX starts the window (INCR keeps the TTL); EXPIRE … NX would need Redis 7.
            pipe.set(key, 0, ex=self.window, nx=True)
            pipe.incr(key)
            pipe.ttl(key)
            _, count, ttl = await pipe.execute()
        return None if int(count) <= self.limit else max(int(ttl), 1)
