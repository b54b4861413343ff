"""Settings of the Prometheus metrics (`app/core/metrics.py`), served on their own listener, never the API's port."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings


class MetricsSettings(BaseSettings):
    # The port of the separate `/metrics` listener `deltaflow serve` (and `ingest`) opens; None: no metrics at all
    # (nor their per-request cost). A listener of its own, not a route of the API, so the public nginx (which
    # proxies the API port only) can never expose it. 9464 (OpenTelemetry's Prometheus port), not 9100: that is
    # node_exporter's, usually already bound on the same host.
    metrics_port: Annotated[int | None, Field(ge=1, le=65535)] = None
    # Loopback by default: a scraper on another host needs an explicit address (0.0.0.0 in a container).
    metrics_host: str = "127.0.0.1"
    # Where the worker processes write their metric files (prometheus_client's multiprocess mode). None: a fresh
    # temporary directory per `serve`, removed at exit; a configured one (a tmpfs, say) is emptied at each start.
    metrics_dir: Path | None = None
    # What every request counts is added up in process memory and written to the metric files this often (a file
    # write per count cost several µs: app/core/tally.py). Well below any scrape interval.
    metrics_flush_seconds: Annotated[float, Field(gt=0, le=60)] = 1.0

    @field_validator("metrics_port", "metrics_dir", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if value == "" else value  # DELTAFLOW_METRICS_PORT= (empty) switches metrics off
