"""Sign-in attempts per client address, shared by every instance through Redis."""

from __future__ import annotations

from redis.asyncio import Redis

from app.console.throttle import ATTEMPTS_PREFIX, AddressThrottle
from tests.conftest import make_settings


async def test_an_address_is_refused_past_its_attempts_until_the_window_ends(redis_client: Redis) -> None:
    settings = make_settings(console_login_max_attempts_per_address=3, console_login_failure_window_seconds=60)
    throttle = AddressThrottle(redis_client, settings)
    assert [await throttle.attempt("203.0.113.9") for _ in range(3)] == [None, None, None]
    wait = await throttle.attempt("203.0.113.9")
    assert wait is not None
    assert 0 < wait <= 60
    assert await throttle.attempt("198.51.100.1") is None  # another address has its own count
    assert 0 < await redis_client.ttl(ATTEMPTS_PREFIX + "203.0.113.9") <= 60
    await redis_client.delete(ATTEMPTS_PREFIX + "203.0.113.9")  # the window ended
    assert await throttle.attempt("203.0.113.9") is None
