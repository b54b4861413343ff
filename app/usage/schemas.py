"""HTTP shapes for GET /v1/usage."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.usage.repository import UsageGrouping

_NOT_GROUPED: dict[str, Any] = {"key_id": None, "key_name": None, "key_prefix": None, "route": None}

USAGE_EXAMPLE: dict[str, Any] = {
    "tenant_id": "5d2c7e91-8a4b-4f3c-b6e1-2a9d0c7f8e3b",
    "from": "2026-11-27",
    "to": "2026-11-28",
    "group_by": "day",
    "key_id": None,
    "flushed_every_seconds": 10.0,
    "totals": {"requests": 2010, "2xx": 1905, "3xx": 61, "4xx": 41, "5xx": 3},
    "items": [
        {"requests": 1250, "2xx": 1180, "3xx": 40, "4xx": 28, "5xx": 2, "day": "2026-11-27", **_NOT_GROUPED},
        {"requests": 760, "2xx": 725, "3xx": 21, "4xx": 13, "5xx": 1, "day": "2026-11-28", **_NOT_GROUPED},
    ],
}


class UsageCounts(BaseModel):
    """Requests, and the same requests split by status class (`2xx` … `5xx`; a throttled request is a 4xx)."""

    # Aliases because JSON names like `2xx` are not identifiers; by name too, so the service can build them.
    model_config = ConfigDict(populate_by_name=True)

    requests: int = Field(ge=0, description="All requests.")
    status_2xx: int = Field(default=0, ge=0, alias="2xx", description="Requests answered with a 2xx status.")
    status_3xx: int = Field(default=0, ge=0, alias="3xx", description="Requests answered with a 3xx status.")
    status_4xx: int = Field(default=0, ge=0, alias="4xx", description="Requests answered with a 4xx status.")
    status_5xx: int = Field(default=0, ge=0, alias="5xx", description="Requests answered with a 5xx status.")


class UsageItem(UsageCounts):
    """One group. Only the fields of the `group_by` dimension are set: `day`; `key_id`, `key_name` and
    `key_prefix`; or `route`."""

    day: date | None = Field(default=None, description="`group_by=day`: the UTC day.")
    key_id: uuid.UUID | None = Field(default=None, description="`group_by=key`: the key's id.")
    key_name: str | None = Field(default=None, description="`group_by=key`: the key's name.")
    key_prefix: str | None = Field(
        default=None, description="`group_by=key`: the first characters of the key (never the secret)."
    )
    route: str | None = Field(
        default=None,
        description="`group_by=route`: method and route template, e.g. `GET /v1/signals/{venue}/{symbol}` "
        "(`unmatched` for a path no route matched).",
    )


class UsageReport(BaseModel):
    """A tenant's requests over a range of UTC days.

    Counts reach the database in batches: each instance flushes every `flushed_every_seconds`, so the current
    day's numbers may lag by up to that long."""

    model_config = ConfigDict(populate_by_name=True, json_schema_extra={"examples": [USAGE_EXAMPLE]})

    tenant_id: uuid.UUID
    start: date = Field(alias="from", description="First UTC day of the range (inclusive).")
    end: date = Field(alias="to", description="Last UTC day of the range (inclusive).")
    group_by: UsageGrouping
    key_id: uuid.UUID | None = Field(description="The key the counts are filtered by, if any.")
    flushed_every_seconds: float = Field(
        description="Counts are written every this many seconds (DELTAFLOW_USAGE_FLUSH_SECONDS): the current "
        "day may lag by up to this long."
    )
    totals: UsageCounts
    items: list[UsageItem] = Field(
        description="`day`: every day of the range, oldest first, zero-filled; `key`: every key with requests, "
        "most requests first; `route`: every route with requests, most requests first."
    )
