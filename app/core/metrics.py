"""Prometheus metrics: every metric the app exports, defined once, with the few helpers the call sites use.

Names follow Prometheus conventions (`deltaflow_` prefix, `_total` counters, base units: seconds) and every label
takes a bounded set of values (route *templates*, status classes, feed names from the configuration, error
types), so the number of series does not grow with traffic.

Under `deltaflow serve` the workers are separate processes: each writes its values to memory-mapped files in a
directory the serve command creates per start (prometheus_client's multiprocess mode, chosen by the
``PROMETHEUS_MULTIPROC_DIR`` environment variable it sets before any worker starts), and the supervisor's
listener (:mod:`app.core.metrics_server`) sums them at scrape time. A gauge says how it combines across processes:
``livesum`` (in-flight requests, open streams, pool connections), ``livemax`` (a feed is connected if its one
ingesting process is), ``livemostrecent`` (readiness: the latest check of any worker); "live" drops the values of
dead workers. In tests (no directory) the same objects live in the process's default registry. What is counted on
every request goes through :mod:`app.core.tally` (in memory, flushed each `metrics_flush_seconds`).
"""

from __future__ import annotations

import os

from prometheus_client import Counter, Gauge, Histogram

from app import __version__
from app.core.metrics_server import MULTIPROC_ENV
from app.core.tally import Tally

# Latency buckets (seconds): a cached signal is well under a millisecond in-process, an analysis up to seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
COMPUTE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# ---- HTTP (app.core.instrument) -------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "deltaflow_http_requests_total",
    "HTTP requests answered, by route template, method and status class.",
    ("route", "method", "status"),
)
HTTP_DURATION = Histogram(
    "deltaflow_http_request_duration_seconds",
    "Time from the request reaching the app to its last response byte, by route template, method, status class.",
    ("route", "method", "status"),
    buckets=LATENCY_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge(
    "deltaflow_http_requests_in_flight", "HTTP requests being handled now.", multiprocess_mode="livesum"
)

# ---- auth and limits ------------------------------------------------------------------------------------------
AUTH_FAILURES = Counter(
    "deltaflow_auth_failures_total", "Refused /v1 requests, by problem type (401/403/503 causes).", ("reason",)
)
RATE_LIMIT_REFUSALS = Counter(
    "deltaflow_rate_limit_refusals_total",
    "Requests refused by a tenant limit: rate, concurrency (both 429) or monthly quota.",
    ("limit",),
)
CACHE_LOOKUPS = Counter(
    "deltaflow_cache_lookups_total", "Cache lookups by cache and result (hit or miss).", ("cache", "result")
)

# ---- signals --------------------------------------------------------------------------------------------------
SIGNAL_COMPUTE = Histogram(
    "deltaflow_signal_compute_seconds",
    "Time to compute one signal document (read the bars, run the analytics), by timeframe.",
    ("timeframe",),
    buckets=COMPUTE_BUCKETS,
)
SIGNAL_STREAMS = Gauge(
    "deltaflow_signal_streams_open", "Open Server-Sent Events signal streams.", multiprocess_mode="livesum"
)

# ---- alerts (app.alerts.engine) -------------------------------------------------------------------------------
ALERT_EVALUATIONS = Counter(
    "deltaflow_alert_evaluations_total",
    "Alert rules at bar closes, by outcome: evaluated (the condition was checked), fired (an event committed).",
    ("outcome",),
)
ALERT_CLOSE_TO_COMMIT = Histogram(
    "deltaflow_alert_close_to_commit_seconds",
    "Time from a bar's close to the commit of its alert evaluation (events, outbox, fire state), per close.",
    buckets=LATENCY_BUCKETS,
)

# ---- market feeds (app.market.runtime, from each feed's status every market_status_interval_seconds) ----------
FEED_LABELS = ("venue", "symbol")
FEED_CONNECTED = Gauge(
    "deltaflow_feed_connected",
    "1 while a process streams the feed from its venue.",
    FEED_LABELS,
    multiprocess_mode="livemax",
)
FEED_LAST_MESSAGE = Gauge(
    "deltaflow_feed_last_message_timestamp_seconds",
    "Unix time of the feed's newest venue message (alert on time() minus this).",
    FEED_LABELS,
    multiprocess_mode="livemax",
)
FEED_QUEUE_DEPTH = Gauge(
    "deltaflow_feed_queue_depth", "Events queued in the feed's pipeline.", FEED_LABELS, multiprocess_mode="livesum"
)
FEED_RECONNECTS = Counter("deltaflow_feed_reconnects_total", "Venue stream reconnections.", FEED_LABELS)
FEED_COALESCED = Counter(
    "deltaflow_feed_coalesced_total", "Trades merged by the coalescer under backpressure.", FEED_LABELS
)
FEED_RESYNCS = Counter("deltaflow_feed_resyncs_total", "Order-book resynchronisations.", FEED_LABELS)
FEED_WRITE_ERRORS = Counter("deltaflow_feed_write_errors_total", "Failed pipeline writes to Redis.", FEED_LABELS)
FEED_REST_REFUSALS = Counter(
    "deltaflow_feed_rest_budget_refusals_total", "Venue REST calls held back by the request budget.", ("venue",)
)

# ---- background work and dependencies -------------------------------------------------------------------------
WEBHOOK_DELIVERIES = Counter(
    "deltaflow_webhook_delivery_attempts_total",
    "Webhook delivery attempts by outcome: delivered, retry (will be retried), failed (given up).",
    ("outcome",),
)
WEBHOOK_DESTINATIONS_DISABLED = Counter(
    "deltaflow_webhook_destinations_disabled_total",
    "Webhook destinations disabled by reason: gone (a 410), failing (no success for the disable period).",
    ("reason",),
)
DB_POOL_IN_USE = Gauge(
    "deltaflow_db_pool_connections_in_use", "Database connections checked out now.", multiprocess_mode="livesum"
)
DB_POOL_SIZE = Gauge(
    "deltaflow_db_pool_connections_max",
    "Connections the database pools may hold (pool size plus overflow).",
    multiprocess_mode="livesum",
)
REDIS_ERRORS = Counter("deltaflow_redis_errors_total", "Failed Redis operations, by error type.", ("kind",))
# The most recent check of any worker speaks for the instance (a worker that was never asked has no say).
READY = Gauge(
    "deltaflow_ready", "1 when the last readiness check passed, 0 when it failed.", multiprocess_mode="livemostrecent"
)
BUILD_INFO = Gauge(
    "deltaflow_build_info", "Always 1; the running version as a label.", ("version",), multiprocess_mode="livemax"
)


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def adopt_multiprocess_values() -> None:
    """Re-create the values of the metrics (and label children) that exist already, now that the multiprocess
    directory is set: `deltaflow serve` imported this module before it knew the directory, and its workers are
    forked from it. The objects stay the same, so references bound at import keep working."""
    metrics: list[Counter | Gauge | Histogram] = [
        value for value in globals().values() if isinstance(value, (Counter, Gauge, Histogram))
    ]
    for metric in metrics:
        # prometheus_client's own re-initialisation (private and untyped, stable since 0.4)
        if metric._is_parent():  # type: ignore[no-untyped-call]
            for child in list(metric._metrics.values()):
                child._metric_init()  # type: ignore[no-untyped-call]
        else:
            metric._metric_init()


def check_multiprocess_values() -> None:
    """Refuse to serve with metrics that would not reach the supervisor's listener: a worker forked from a process
    that imported this module before ``PROMETHEUS_MULTIPROC_DIR`` was set holds in-memory values only."""
    if multiprocess_enabled() and type(HTTP_IN_FLIGHT._value).__name__ != "MmapedValue":
        raise RuntimeError(f"app.core.metrics was imported before {MULTIPROC_ENV} was set: metrics would be lost")


def mark_started() -> None:
    BUILD_INFO.labels(__version__).set(1)


def cache_counters(cache: str) -> tuple[Tally, Tally]:
    """The (hit, miss) counters of one cache, bound once by the caller (`labels()` costs more than `inc()`) and
    tallied in memory: lookups happen on every request."""
    return Tally(CACHE_LOOKUPS.labels(cache, "hit")), Tally(CACHE_LOOKUPS.labels(cache, "miss"))
