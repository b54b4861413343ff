"""Settings of the alert read side (`app/alerts`): the event history, the alert stream and backtesting a rule."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings


class AlertReadSettings(BaseSettings):
    # GET /v1/alerts/events: the largest page (the `limit` parameter is capped by it).
    alert_event_page_max: Annotated[int, Field(ge=1, le=10_000)] = 200
    # GET /v1/alerts/stream: the reconnection delay sent as `retry:`, a `: keep-alive` comment after this long
    # without anything sent (proxies close idle connections), and the longest a stream lives before it ends (the
    # client reconnects with Last-Event-ID and misses nothing).
    alert_stream_retry_ms: Annotated[int, Field(ge=100, le=600_000)] = 3000
    alert_stream_heartbeat_seconds: Annotated[float, Field(gt=0, le=3600)] = 15.0
    alert_stream_max_seconds: Annotated[float, Field(gt=0, le=7 * 86_400)] = 3600.0
    # Open alert streams per process (503 past it) and per tenant on one process (429 past it).
    alert_stream_max_per_process: Annotated[int, Field(ge=1, le=100_000)] = 1000
    alert_stream_max_per_tenant: Annotated[int, Field(ge=1, le=100_000)] = 20
    # Events read from the table per query when a stream catches up (a resume, a lost pub/sub message).
    alert_stream_catch_up_page: Annotated[int, Field(ge=1, le=10_000)] = 500
    # Events announced but not yet written to a slow client, per stream; past it the stream drops them and reads
    # the table instead (nothing is lost, memory stays bounded).
    alert_stream_buffer: Annotated[int, Field(ge=1, le=100_000)] = 1000
    # Events are ordered by their creation time, but two instances may commit in the other order: a catch-up
    # re-reads this far back before the last event sent (and skips what it sent), so a late commit is not lost.
    # After a reconnect the client may get an event of this window twice (same id: deduplicate by id).
    alert_stream_overlap_seconds: Annotated[float, Field(ge=0, le=600)] = 5.0
    # How often the stream hub's pub/sub reader notices a drain or its last stream leaving; reconnect backoff.
    alert_stream_poll_seconds: Annotated[float, Field(gt=0, le=60)] = 1.0
    alert_stream_reconnect_base_seconds: Annotated[float, Field(gt=0, le=60)] = 0.5
    alert_stream_reconnect_cap_seconds: Annotated[float, Field(gt=0, le=600)] = 15.0
    # POST /v1/alerts/test and `deltaflow alerts test`: closed bars replayed (default and most), and the bars
    # before them that only warm the analysis up (indicators, swings) and are never evaluated.
    alert_test_default_bars: Annotated[int, Field(ge=1, le=100_000)] = 1000
    alert_test_max_bars: Annotated[int, Field(ge=1, le=100_000)] = 5000
    alert_test_warmup_bars: Annotated[int, Field(ge=0, le=100_000)] = 200
