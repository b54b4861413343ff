"""What one attempt's outcome means for its delivery: pure functions of the response, the schedule and the time.

Svix's rules: a 2xx is a delivery; 410 Gone means the receiver wants no more (the destination is disabled at once);
429 and 503 may say when to come back (`Retry-After`, seconds or an HTTP date), which is honoured up to a bound;
anything else (another status, a network error, the timeout) is retried on the schedule until it runs out.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

RETRY_AFTER_STATUSES = frozenset({429, 503})
GONE = 410


class Verdict(enum.StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"  # the schedule ran out, or the destination cannot be reached any more
    GONE = "gone"  # 410: fail the row and disable its destination


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    next_attempt_at: datetime | None = None  # set for RETRY


def parse_retry_after(value: str | None, now: datetime) -> timedelta | None:
    """RFC 9110 `Retry-After`: delay-seconds or an HTTP date (a date in the past is no wait). None if absent or
    unreadable (then the schedule alone decides)."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return timedelta(seconds=int(text[:12]))  # 12 digits are ~31 700 years: the bound below applies anyway
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT by definition
        return None
    return max(when - now, timedelta(0))


def decide(
    *,
    status_code: int | None,
    retry_after: str | None,
    attempts: int,
    schedule: Sequence[float],
    retry_after_max_seconds: float,
    now: datetime,
) -> Decision:
    """The verdict on attempt number `attempts` (1-based, this one included) that ended with `status_code` (None:
    a network error or the timeout)."""
    if status_code is not None and 200 <= status_code < 300:
        return Decision(Verdict.DELIVERED)
    if status_code == GONE:
        return Decision(Verdict.GONE)
    if attempts >= len(schedule):
        return Decision(Verdict.FAILED)
    delay = timedelta(seconds=schedule[attempts])
    if status_code in RETRY_AFTER_STATUSES:
        asked = parse_retry_after(retry_after, now)
        if asked is not None:
            delay = max(delay, min(asked, timedelta(seconds=retry_after_max_seconds)))
    return Decision(Verdict.RETRY, now + delay)
