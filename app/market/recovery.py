"""Reconnect backoff and the REST circuit breaker.

Both take an injectable clock (and the backoff a random source) so tests can assert exact delays and breaker
windows without sleeping. The clock is monotonic seconds.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from enum import Enum

Clock = Callable[[], float]
RandomSource = Callable[[], float]

DEFAULT_BACKOFF_BASE_S = 0.5
DEFAULT_BACKOFF_CAP_S = 60.0
DEFAULT_STABLE_AFTER_S = 30.0
DEFAULT_FAILURE_THRESHOLD = 5
DEFAULT_MIN_OPEN_S = 30.0
# Binance answers 429 when a client exceeds a rate limit and 418 once it has kept going after 429s (an IP
# ban): either means "stop now", not "count towards the threshold".
BAN_STATUSES = frozenset({418, 429})


class Backoff:
    """Full-jitter exponential backoff: the n-th consecutive retry waits uniform(0, min(cap, base·2ⁿ)).

    Full jitter spreads a fleet of clients that lost the same server; the cap keeps a long outage from
    turning into hour-long waits. The attempt counter is reset only when a connection has stayed up for
    ``stable_after_s`` seconds, so a server that accepts and immediately drops connections still backs off.
    """

    def __init__(
        self,
        *,
        base_s: float = DEFAULT_BACKOFF_BASE_S,
        cap_s: float = DEFAULT_BACKOFF_CAP_S,
        stable_after_s: float = DEFAULT_STABLE_AFTER_S,
        clock: Clock = time.monotonic,
        rng: RandomSource = random.random,
    ) -> None:
        if base_s <= 0 or cap_s < base_s:
            raise ValueError("need 0 < base_s <= cap_s")
        self.base_s = base_s
        self.cap_s = cap_s
        self.stable_after_s = stable_after_s
        self._clock = clock
        self._rng = rng
        self.attempt = 0
        self._connected_at: float | None = None

    def on_connected(self) -> None:
        self._connected_at = self._clock()

    def on_disconnected(self) -> None:
        if self._connected_at is not None and self._clock() - self._connected_at >= self.stable_after_s:
            self.attempt = 0
        self._connected_at = None

    def ceiling(self, attempt: int) -> float:
        # min() before the power would overflow: 2**1100 is fine for ints but not floats.
        return min(self.cap_s, self.base_s * 2.0 ** min(attempt, 64))

    def next_delay(self) -> float:
        """The delay before the next attempt; counts the attempt."""
        delay = self._rng() * self.ceiling(self.attempt)
        self.attempt += 1
        return delay


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Stops REST calls to a venue that is failing or rate-limiting us.

    Opens after ``failure_threshold`` consecutive failures, or at once on 429/418; stays open for
    max(``min_open_s``, Retry-After); then lets exactly one probe through (half-open): its success closes the
    breaker, its failure re-opens it.

    It also holds the venue's request budget: with ``budget_per_minute`` a token bucket of that many requests
    (the burst), refilled evenly over a minute; a call is allowed only with a token left, and :meth:`retry_in`
    says when the next one comes. So a storm of resyncs (every symbol of a flapping connection) is spread out
    before the venue has to answer it with a 429, and every REST caller already waits on ``retry_in``.
    """

    def __init__(
        self,
        *,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        min_open_s: float = DEFAULT_MIN_OPEN_S,
        budget_per_minute: int | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.min_open_s = min_open_s
        self._clock = clock
        self._state = BreakerState.CLOSED
        self.failures = 0
        self.opened = 0
        self._open_until = 0.0
        self.budget = budget_per_minute
        self._tokens = float(budget_per_minute or 0)
        self._refilled_at = clock()
        self.budget_refusals = 0  # calls held back by the budget (the feed status shows them)

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() >= self._open_until:
            # Reported as half-open once the window has passed, but the probe slot is taken only by allow().
            return BreakerState.HALF_OPEN
        return self._state

    def retry_in(self) -> float:
        """Seconds until a call may be allowed (0 when one is allowed now)."""
        if self._state is BreakerState.OPEN:
            return max(0.0, self._open_until - self._clock())
        if self.budget is not None and self._refill() < 1:
            return (1 - self._tokens) * 60.0 / self.budget
        return 0.0

    def allow(self) -> bool:
        """Whether a call may be made now; in half-open state only one caller gets True until it reports."""
        if self._state is BreakerState.HALF_OPEN:
            return False
        if self._state is BreakerState.OPEN and self._clock() < self._open_until:
            return False
        if self.budget is not None:
            if self._refill() < 1:
                self.budget_refusals += 1
                return False
            self._tokens -= 1
        if self._state is BreakerState.OPEN:
            self._state = BreakerState.HALF_OPEN  # this call is the probe
        return True

    def _refill(self) -> float:
        budget = self.budget or 0
        now = self._clock()
        self._tokens = min(float(budget), self._tokens + (now - self._refilled_at) * budget / 60.0)
        self._refilled_at = now
        return self._tokens

    def abandon_probe(self) -> None:
        """The half-open probe was cancelled before it got an answer: let the next caller probe instead."""
        if self._state is BreakerState.HALF_OPEN:
            self._state = BreakerState.OPEN
            self._open_until = self._clock()

    def record_success(self) -> None:
        self._state = BreakerState.CLOSED
        self.failures = 0

    def record_failure(self, status: int | None = None, retry_after_s: float | None = None) -> None:
        self.failures += 1
        if status in BAN_STATUSES or self._state is BreakerState.HALF_OPEN or self.failures >= self.failure_threshold:
            self._open(retry_after_s)

    def _open(self, retry_after_s: float | None) -> None:
        self._state = BreakerState.OPEN
        self.opened += 1
        self._open_until = self._clock() + max(self.min_open_s, retry_after_s or 0.0)


def parse_retry_after(value: str | None, now_epoch_s: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); ``None`` if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = time.time() if now_epoch_s is None else now_epoch_s
    return max(0.0, when.timestamp() - now)
