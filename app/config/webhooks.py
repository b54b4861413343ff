"""Settings of outgoing webhooks (`app/webhooks`): the Svix retry schedule, attempt bounds, disabling, replay."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode

# Svix's schedule: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (8 attempts over ~27.6 h).
DEFAULT_RETRY_SCHEDULE = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


class WebhookSettings(BaseSettings):
    # How often each instance looks for due deliveries (every instance does; claims keep them apart), how many
    # rows one look takes, and how many of them are attempted at once (an attempt may take the whole timeout).
    webhook_poll_seconds: Annotated[float, Field(gt=0)] = 5.0
    webhook_batch_size: Annotated[int, Field(ge=1, le=1000)] = 50
    webhook_concurrency: Annotated[int, Field(ge=1, le=256)] = 10
    # A 2xx within this many seconds (connect to last response header) is a delivery; anything else is retried.
    webhook_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 15.0
    # The delay before each attempt, from the previous one (the first from when the message was queued, so it must
    # be 0: writers queue messages due at once). Its length is the number of attempts. Comma-separated seconds.
    webhook_retry_schedule_seconds: Annotated[tuple[float, ...], NoDecode] = DEFAULT_RETRY_SCHEDULE
    # A 429/503 `Retry-After` makes the next attempt wait at least that long, but never longer than this.
    webhook_retry_after_max_seconds: Annotated[float, Field(ge=0, le=7 * 86_400)] = 36_000.0
    # A destination failing without a single success for this long is disabled (and the tenant told in the audit
    # trail); `PUT /v1/webhook` or a rule's new destination re-enables it.
    webhook_disable_after_days: Annotated[float, Field(gt=0, le=365)] = 5.0
    # `POST /v1/webhook/recover?since=` reaches back at most this far.
    webhook_recover_max_age_days: Annotated[int, Field(ge=1, le=365)] = 14
    # Webhooks go to public addresses only (no loopback, private, link-local or reserved: see app.tenants.egress);
    # true for receivers on the operator's own private network.
    webhook_allow_private_destinations: bool = False

    @field_validator("webhook_retry_schedule_seconds", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return tuple(float(part) for part in value.split(",") if part.strip())
            except ValueError:
                raise ValueError("comma-separated seconds, e.g. 0,5,300,1800") from None
        return value

    @field_validator("webhook_retry_schedule_seconds")
    @classmethod
    def _starts_immediately(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not 1 <= len(value) <= 50:
            raise ValueError("1 to 50 attempts")
        if value[0] != 0:
            raise ValueError("the first attempt is immediate: the schedule starts with 0")
        if any(not 0 <= delay <= 7 * 86_400 for delay in value):
            raise ValueError("each delay is 0 to 604800 seconds")
        return value
