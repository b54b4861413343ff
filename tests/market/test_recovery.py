"""Full-jitter backoff and the REST circuit breaker, on an injected clock and random source."""

from __future__ import annotations

import pytest

from app.market.recovery import Backoff, BreakerState, CircuitBreaker, parse_retry_after


def _state(breaker: CircuitBreaker) -> BreakerState:
    return breaker.state  # a call, so mypy does not keep an earlier narrowing of the property


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_up_to_the_cap_at_full_jitter_ceiling() -> None:
    backoff = Backoff(base_s=0.5, cap_s=60.0, rng=lambda: 1.0)
    assert [backoff.next_delay() for _ in range(10)] == [0.5, 1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert backoff.attempt == 10


def test_backoff_jitter_is_uniform_below_the_ceiling() -> None:
    draws = iter([0.0, 0.25, 0.999])
    backoff = Backoff(base_s=1.0, cap_s=60.0, rng=lambda: next(draws))
    assert [backoff.next_delay() for _ in range(3)] == [0.0, 0.5, 0.999 * 4]


def test_backoff_never_overflows_after_many_attempts() -> None:
    backoff = Backoff(rng=lambda: 1.0)
    backoff.attempt = 5000
    assert backoff.next_delay() == 60.0


def test_attempts_reset_only_after_a_stable_connection() -> None:
    clock = Clock()
    backoff = Backoff(base_s=1.0, stable_after_s=30.0, clock=clock, rng=lambda: 1.0)
    backoff.next_delay()
    backoff.next_delay()
    backoff.on_connected()
    clock.now += 29.0
    backoff.on_disconnected()  # a short-lived connection does not reset the count
    assert backoff.next_delay() == 4.0
    backoff.on_connected()
    clock.now += 30.0
    backoff.on_disconnected()
    assert backoff.attempt == 0
    assert backoff.next_delay() == 1.0
    backoff.on_disconnected()  # a disconnect without a connect changes nothing
    assert backoff.attempt == 1


def test_backoff_rejects_nonsense_bounds() -> None:
    with pytest.raises(ValueError, match="base_s"):
        Backoff(base_s=2.0, cap_s=1.0)


def test_breaker_opens_after_five_consecutive_failures() -> None:
    clock = Clock()
    breaker = CircuitBreaker(clock=clock)
    for _ in range(4):
        breaker.record_failure(500)
        assert breaker.allow()
    breaker.record_failure(500)
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    assert breaker.retry_in() == 30.0


def test_the_request_budget_allows_a_burst_then_one_call_per_refill_interval() -> None:
    clock = Clock()
    breaker = CircuitBreaker(budget_per_minute=60, clock=clock)  # a burst of 60, then one per second
    assert all(breaker.allow() for _ in range(60))
    assert not breaker.allow()
    assert breaker.budget_refusals == 1
    assert breaker.retry_in() == pytest.approx(1.0)
    assert breaker.state is BreakerState.CLOSED  # holding back is not a failure of the venue
    clock.now = 0.5
    assert not breaker.allow()
    assert breaker.retry_in() == pytest.approx(0.5)
    clock.now = 1.0
    assert breaker.allow()
    assert not breaker.allow()
    clock.now = 1000.0  # refills up to the burst, never beyond
    assert sum(breaker.allow() for _ in range(100)) == 60


def test_an_open_breaker_spends_no_budget_and_its_probe_needs_a_token() -> None:
    clock = Clock()
    breaker = CircuitBreaker(budget_per_minute=2, clock=clock)
    breaker.record_failure(429)
    assert not breaker.allow()  # open: refused by the breaker, no token spent
    assert breaker.budget_refusals == 0
    clock.now = 30.0
    assert breaker.allow()  # the half-open probe, paid with a token
    assert _state(breaker) is BreakerState.HALF_OPEN
    assert not breaker.allow()  # one probe at a time
    breaker.record_success()
    assert breaker.allow()
    assert not breaker.allow()  # two tokens spent: wait for the refill
    assert breaker.retry_in() == pytest.approx(30.0)


def test_a_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(clock=Clock())
    for _ in range(4):
        breaker.record_failure()
    breaker.record_success()
    for _ in range(4):
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED


@pytest.mark.parametrize("status", [429, 418])
def test_rate_limit_opens_at_once_for_at_least_thirty_seconds(status: int) -> None:
    clock = Clock()
    breaker = CircuitBreaker(clock=clock)
    breaker.record_failure(status, retry_after_s=5.0)
    assert breaker.state is BreakerState.OPEN
    clock.now = 29.9
    assert not breaker.allow()
    clock.now = 30.0
    assert _state(breaker) is BreakerState.HALF_OPEN
    assert breaker.allow()


def test_retry_after_longer_than_the_minimum_is_honoured() -> None:
    clock = Clock()
    breaker = CircuitBreaker(clock=clock)
    breaker.record_failure(429, retry_after_s=120.0)
    clock.now = 119.0
    assert not breaker.allow()
    assert breaker.retry_in() == pytest.approx(1.0)
    clock.now = 120.0
    assert breaker.allow()


def test_half_open_lets_exactly_one_probe_through() -> None:
    clock = Clock()
    breaker = CircuitBreaker(clock=clock)
    breaker.record_failure(429)
    clock.now = 30.0
    assert breaker.allow()
    assert not breaker.allow()  # the probe is in flight
    assert breaker.retry_in() == 0.0
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()
    assert breaker.allow()


def test_failed_probe_reopens_the_breaker() -> None:
    clock = Clock()
    breaker = CircuitBreaker(clock=clock)
    breaker.record_failure(429)
    clock.now = 30.0
    assert breaker.allow()
    breaker.record_failure(503)
    assert breaker.state is BreakerState.OPEN
    assert breaker.opened == 2
    clock.now = 59.0
    assert not breaker.allow()


def test_abandoned_probe_frees_the_slot() -> None:
    clock = Clock()
    breaker = CircuitBreaker(clock=clock)
    breaker.abandon_probe()  # closed: nothing to do
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure(429)
    clock.now = 30.0
    assert breaker.allow()
    breaker.abandon_probe()
    assert breaker.allow()


def test_retry_after_parsing() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after(" 42 ") == 42.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now_epoch_s=1445412480.0) == 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now_epoch_s=1445412480.0 + 60) == 0.0
