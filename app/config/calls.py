"""Settings of the call log (`app/usage/calls`: every authenticated `/v1` request, searchable by its tenant) and of
monthly quotas (`app/auth/quota.py`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings


class CallLogSettings(BaseSettings):
    call_log_enabled: bool = True
    # Requests wait on nothing: each is appended to an in-process buffer of at most this many calls (more are
    # dropped and counted), written in batches (COPY on PostgreSQL) every flush period.
    call_log_max_pending: Annotated[int, Field(ge=1, le=10_000_000)] = 100_000
    call_log_flush_seconds: Annotated[float, Field(gt=0, le=60)] = 1.0
    # Days of calls kept (whole daily partitions dropped on PostgreSQL); partitions created this many days ahead.
    call_log_retention_days: Annotated[int, Field(ge=1, le=3650)] = 30
    call_log_partitions_ahead_days: Annotated[int, Field(ge=1, le=60)] = 3
    call_log_page_max: Annotated[int, Field(ge=1, le=10_000)] = 200
    call_log_export_max_rows: Annotated[int, Field(ge=1, le=100_000_000)] = 1_000_000
    # Monthly quotas: an instance reserves at most this many requests of a tenant's month at a time (a tenth of what
    # is left when less; unspent ones go back at shutdown), and notices go out as each fraction is crossed.
    quota_lease_size: Annotated[int, Field(ge=1, le=100_000)] = 100
    quota_notice_thresholds: tuple[Annotated[float, Field(gt=0, le=1)], ...] = (0.8, 1.0)
