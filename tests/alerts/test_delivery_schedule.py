"""The pure delivery decisions: what each status means, Retry-After in both forms, and the schedule setting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from pydantic import ValidationError

from app.config.webhooks import DEFAULT_RETRY_SCHEDULE
from app.webhooks.schedule import Verdict, decide, parse_retry_after
from tests.conftest import make_settings

NOW = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)
SCHEDULE = DEFAULT_RETRY_SCHEDULE


def _decide(status: int | None, attempts: int = 1, retry_after: str | None = None) -> tuple[Verdict, float | None]:
    decision = decide(
        status_code=status,
        retry_after=retry_after,
        attempts=attempts,
        schedule=SCHEDULE,
        retry_after_max_seconds=36_000,
        now=NOW,
    )
    wait = None if decision.next_attempt_at is None else (decision.next_attempt_at - NOW).total_seconds()
    return decision.verdict, wait


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_any_2xx_is_a_delivery(status: int) -> None:
    assert _decide(status) == (Verdict.DELIVERED, None)


@pytest.mark.parametrize("status", [None, 301, 400, 401, 404, 408, 429, 500, 502, 503, 504])
def test_everything_else_but_410_is_retried_on_the_schedule(status: int | None) -> None:
    assert [_decide(status, attempts=n) for n in range(1, 9)] == [
        *((Verdict.RETRY, delay) for delay in SCHEDULE[1:]),
        (Verdict.FAILED, None),
    ]


def test_410_is_gone_at_any_attempt() -> None:
    assert {_decide(410, attempts=n) for n in range(1, 9)} == {(Verdict.GONE, None)}


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120),
        (" 7 ", 7),
        (format_datetime(NOW + timedelta(hours=2), usegmt=True), 7200),
        (format_datetime(NOW - timedelta(hours=2), usegmt=True), 0),  # in the past: no wait
        ("Wed, 03 Dec 2026 13:00:00 GMT", 3600),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_reads_seconds_and_http_dates(header: str | None, expected: int | None) -> None:
    parsed = parse_retry_after(header, NOW)
    assert (None if parsed is None else parsed.total_seconds()) == expected


def test_retry_after_only_lengthens_and_is_bounded() -> None:
    assert _decide(429, retry_after="120") == (Verdict.RETRY, 120)
    assert _decide(503, retry_after="1") == (Verdict.RETRY, 5), "shorter than the schedule: the schedule wins"
    assert _decide(503, retry_after="999999999999") == (Verdict.RETRY, 36_000)
    assert _decide(500, retry_after="120") == (Verdict.RETRY, 5), "only 429 and 503 are asked to wait"
    assert _decide(429, attempts=8, retry_after="5") == (Verdict.FAILED, None), "the schedule still ends"


def test_the_schedule_setting_takes_comma_separated_seconds_and_starts_at_zero() -> None:
    assert make_settings(webhook_retry_schedule_seconds="0, 1,2.5").webhook_retry_schedule_seconds == (0, 1, 2.5)
    for bad in ("5,10", "", "0,x", "0,-1", "0," + ",".join(["1"] * 50)):
        with pytest.raises(ValidationError):
            make_settings(webhook_retry_schedule_seconds=bad)
