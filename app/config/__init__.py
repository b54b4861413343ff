"""Settings: the only place environment variables are read.

Every bound the service has (timeouts, sizes, drain period …) is a named setting here with a default that suits
the embedded single-machine setup; production overrides them through `DELTAFLOW_*` variables or a `.env` file.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.config.alert_engine import AlertEngineSettings
from app.config.alert_read import AlertReadSettings
from app.config.alerts import AlertSettings
from app.config.calls import CallLogSettings
from app.config.console import ConsoleSettings
from app.config.limits import TenantLimitSettings
from app.config.metrics import MetricsSettings
from app.config.redis_cluster import RedisClusterSettings
from app.config.track_record import TrackRecordSettings
from app.config.webhooks import WebhookSettings

# Development-only secret. Production refuses to start with it (see `_refuse_unsafe_production`).
DEFAULT_DEV_SECRET = "dev-insecure-change-me"  # noqa: S105 - a documented placeholder, rejected in production

EMBEDDED_DATABASE_URL = "sqlite+aiosqlite:///./var/deltaflow.db"
EMBEDDED_REDIS_URL = "memory://"


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class ServerKind(StrEnum):
    GRANIAN = "granian"
    UVICORN = "uvicorn"


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


class Settings(
    ConsoleSettings,
    CallLogSettings,
    TenantLimitSettings,
    MetricsSettings,
    AlertSettings,
    AlertEngineSettings,
    AlertReadSettings,
    TrackRecordSettings,
    WebhookSettings,
    RedisClusterSettings,
    BaseSettings,
):
    """Deltaflow configuration. Field names map to `DELTAFLOW_<NAME>` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="DELTAFLOW_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    environment: Environment = Environment.DEVELOPMENT
    database_url: str = EMBEDDED_DATABASE_URL
    redis_url: str = EMBEDDED_REDIS_URL
    # Server-side secret that later keys API-key HMACs ("pepper"); never logged, never returned.
    secret_key: SecretStr = SecretStr(DEFAULT_DEV_SECRET)

    # API keys and their verification (see app/auth)
    key_max_lifetime_days: Annotated[int, Field(ge=1, le=3650)] = 90
    key_rotation_grace_seconds: Annotated[int, Field(ge=0)] = 86_400
    key_max_rotation_grace_seconds: Annotated[int, Field(ge=0)] = 7 * 86_400
    # Responses to a key this close to expiry carry `Sunset` (RFC 8594).
    key_sunset_warning_days: Annotated[int, Field(ge=0, le=365)] = 14
    key_expiry_notice_days: tuple[int, ...] = (14, 7, 1)
    # Verification cache: Redis entries live this long, so a lost invalidation is stale for at most this long.
    auth_cache_ttl_seconds: Annotated[float, Field(gt=0, le=60)] = 5.0
    auth_local_cache_size: Annotated[int, Field(ge=0, le=1_000_000)] = 10_000
    # A slow Redis must not slow authentication: past this the verifier goes to the database.
    auth_redis_timeout_seconds: Annotated[float, Field(gt=0, le=5)] = 0.25
    # last_used_at is written in batches, off the request path.
    key_last_used_flush_seconds: Annotated[float, Field(gt=0)] = 30.0
    key_last_used_max_pending: Annotated[int, Field(ge=1)] = 10_000
    keys_page_max: Annotated[int, Field(ge=1, le=1000)] = 100
    audit_page_max: Annotated[int, Field(ge=1, le=1000)] = 200
    # Usage metering (app/usage): requests are counted in process and added to `usage_counts` every flush period
    # (the lag of current-day numbers); distinct pending rows are capped (new rows beyond it are dropped and
    # logged); a report spans at most `usage_max_query_days`; rows older than `usage_retention_days` are pruned.
    usage_flush_seconds: Annotated[float, Field(gt=0, le=3600)] = 10.0
    usage_max_pending_rows: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    usage_max_query_days: Annotated[int, Field(ge=1, le=3660)] = 366
    usage_retention_days: Annotated[int, Field(ge=1, le=36_500)] = 400
    # Reports are cached in Redis until the next flush of their tenant's counts (app/usage/cache.py); the TTL only
    # bounds what retention pruning, which flushes nothing, may leave visible.
    usage_cache_ttl_seconds: Annotated[float, Field(ge=1, le=86_400)] = 300.0

    # Background jobs: expiry notices and webhook delivery (every instance runs them; rows are claimed safely).
    background_jobs: bool = True
    expiry_notice_interval_seconds: Annotated[float, Field(gt=0)] = 60.0
    # Webhook delivery settings: app/config/webhooks.py.

    # HTTP server. granian (Rust HTTP/1 and I/O, one Python event loop per worker) is the default: measured on the
    # same app and machine, p99 at 200 connections 55-63 ms where uvicorn's workers reach 0.45-1.3 s (on a faster
    # machine 29-31 ms against 0.04-0.33 s; bench/bench_signals.py runs both). uvicorn stays selectable, e.g. for a
    # platform without granian wheels.
    server: ServerKind = ServerKind.GRANIAN
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    # Proxies whose X-Forwarded-For/-Proto are trusted (the nginx in front); comma-separated, "*" for any.
    forwarded_allow_ips: str = "127.0.0.1"
    # Requests whose body exceeds this many bytes get 413 before the body is read in full.
    max_body_bytes: Annotated[int, Field(ge=1)] = 1_048_576
    # Seconds between SIGTERM and the listener closing: long enough for the load balancer to see /readyz 503
    # (nginx/k8s probe every 1-5 s) and stop routing here.
    drain_seconds: Annotated[float, Field(ge=0, le=300)] = 5.0
    # After the drain, in-flight requests get this long to finish before connections are cut.
    shutdown_timeout_seconds: Annotated[float, Field(ge=0, le=300)] = 30.0

    # Database pool
    db_pool_size: Annotated[int, Field(ge=1, le=200)] = 10
    db_max_overflow: Annotated[int, Field(ge=0, le=200)] = 10
    db_pool_timeout_seconds: Annotated[float, Field(gt=0)] = 5.0
    db_connect_timeout_seconds: Annotated[float, Field(gt=0)] = 3.0
    # Every statement of the service's own connections (Postgres `statement_timeout`; 0 = none): a query that runs
    # away is cancelled and its request answered 503, never left hanging. Migrations have their own connection.
    db_statement_timeout_seconds: Annotated[float, Field(ge=0, le=3600)] = 10.0

    # Redis pool
    redis_max_connections: Annotated[int, Field(ge=1, le=10_000)] = 100
    redis_socket_timeout_seconds: Annotated[float, Field(gt=0)] = 2.0
    # How long a command waits for a free pooled connection. Longer than the socket timeout: under a burst past
    # what the CPUs serve, requests queue for a connection rather than fail (2 000 clients on 2 cores waited up to
    # ~3 s, and with the 2 s socket timeout as the bound 1.3 % of them got 503s); a hung Redis is still detected by
    # the socket timeout of the connections in use.
    redis_pool_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 10.0
    # A command whose pooled connection turns out dead (Redis restarted, a proxy dropped it) reconnects and is sent
    # again this many times before it fails (503). Connection errors only, not timeouts: a command that timed out
    # may have run. Without it every pooled connection of every instance failed one request after a Redis restart.
    redis_reconnect_retries: Annotated[int, Field(ge=0, le=5)] = 1

    # Probes: each /readyz check is cut off after this long so a hung dependency cannot hang the probe.
    readiness_check_timeout_seconds: Annotated[float, Field(gt=0, le=10)] = 0.5

    # Analytics API (POST /v1/analyze): bring-your-own-data bounds. A 1 000 000-trade body is ~60-80 MB of JSON,
    # far above max_body_bytes, so this route has its own body limit.
    analyze_max_candles: Annotated[int, Field(ge=1, le=1_000_000)] = 100_000
    analyze_max_trades: Annotated[int, Field(ge=0, le=10_000_000)] = 1_000_000
    analyze_max_body_bytes: Annotated[int, Field(ge=1)] = 128 * 1_048_576
    # `evaluate` with the calibrated signal (`params.signal.calibrated`) refits the model at every bar, ~1 ms a bar:
    # at most this many candles (5 000: ~5 s of one analysis worker).
    analyze_evaluate_calibrated_max_candles: Annotated[int, Field(ge=1, le=1_000_000)] = 5_000
    # Worker processes per server process running analyses (parsing, validation, analytics, encoding), which
    # keeps the event loop free; 0 runs them in one thread instead (no extra processes, but JSON parsing holds
    # the GIL: measured loop stalls of up to ~400 ms on a 1 000 000-trade body).
    analyze_workers: Annotated[int, Field(ge=0, le=64)] = 2
    # Requests waiting for a worker beyond this many get 503 with Retry-After instead of queueing (each holds
    # its body in memory while it waits).
    analyze_max_queued: Annotated[int, Field(ge=0, le=1000)] = 8

    # ---- Market data ingestion (app/market) -------------------------------------------------------------------
    # What to ingest: `venue:SYM,SYM;venue:SYM` (venues binance, binance-futures, bybit, coinapi, sim); empty = none.
    feeds: str = "binance:BTCUSDT,ETHUSDT"
    # Run the ingestors inside the API process (`serve --with-ingest`, `make demo`); production runs them as their
    # own process (`deltaflow ingest`). Either way a Redis lease keeps exactly one ingestor per feed.
    ingest_in_process: bool = False
    # Venue endpoints; ws:// and http:// are accepted so tests and users can point a connector anywhere.
    binance_ws_url: str = "wss://stream.binance.com:9443"
    binance_rest_url: str = "https://api.binance.com"
    binance_futures_ws_url: str = "wss://fstream.binance.com"
    binance_futures_rest_url: str = "https://fapi.binance.com"
    bybit_ws_url: str = "wss://stream.bybit.com/v5/public/linear"
    bybit_rest_url: str = "https://api.bybit.com"
    coinapi_ws_url: str = "wss://ws.coinapi.io/v1/"
    coinapi_api_key: SecretStr = SecretStr("")
    # CoinAPI symbol ids for the symbols named in DELTAFLOW_FEEDS (`coinapi:BTCUSDT`): an explicit entry
    # ({"BTCUSDT": "COINBASE_SPOT_BTC_USD"}) wins, else `<prefix>_<BASE>_<QUOTE>` (→ BINANCE_SPOT_BTC_USDT).
    coinapi_symbol_prefix: str = "BINANCE_SPOT"
    coinapi_symbol_map: dict[str, str] = {}
    # Pipeline: a bounded queue between the reader and a writer that flushes to Redis by count or time.
    market_queue_size: Annotated[int, Field(ge=1, le=100_000)] = 100
    market_batch_size: Annotated[int, Field(ge=1, le=100_000)] = 500
    market_flush_interval_ms: Annotated[float, Field(gt=0, le=10_000)] = 20.0
    # Trades coalesced while the queue is full: pending groups (one per symbol-minute) and price bins in them.
    market_max_coalesced_groups: Annotated[int, Field(ge=1, le=100_000)] = 256
    market_max_coalesced_bins: Annotated[int, Field(ge=1, le=1_000_000)] = 8192
    # A bar closes this long after its window ends, so trades stamped just before the boundary still land in it.
    market_close_grace_ms: Annotated[int, Field(ge=0, le=60_000)] = 2000
    # Redis bounds: bars kept per timeframe (overrides per timeframe as JSON, e.g. {"1m": 10000}), footprints
    # kept per timeframe, footprint price levels per bar, book levels stored, and the TTLs of live keys.
    market_bar_retention: Annotated[int, Field(ge=10, le=1_000_000)] = 5000
    market_bar_retention_by_timeframe: dict[str, Annotated[int, Field(ge=10, le=1_000_000)]] = {}
    market_footprint_retention: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    market_max_footprint_levels: Annotated[int, Field(ge=10, le=100_000)] = 1000
    market_book_depth: Annotated[int, Field(ge=1, le=1000)] = 50
    market_book_ttl_seconds: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    market_forming_ttl_seconds: Annotated[float, Field(ge=10, le=86_400)] = 120.0
    market_status_ttl_seconds: Annotated[float, Field(ge=2, le=3600)] = 30.0
    market_status_interval_seconds: Annotated[float, Field(gt=0, le=60)] = 1.0
    market_liquidation_stream_len: Annotated[int, Field(ge=10, le=1_000_000)] = 1000
    # Footprint bin per symbol (JSON, e.g. {"BTCUSDT": 1}); others get about five significant digits of price.
    market_tick_sizes: dict[str, Annotated[float, Field(gt=0)]] = {}
    # One ingestor per feed across processes: a holder that dies is replaced within ttl + ttl/3 (<= 13.3 s).
    market_lease_ttl_seconds: Annotated[float, Field(ge=0.5, le=10)] = 10.0
    # Bars fetched per timeframe from REST klines on start (Binance pages hold at most 1000).
    market_backfill_bars: Annotated[int, Field(ge=0, le=1000)] = 500
    # Book sync bounds: diffs buffered while a snapshot is awaited, levels per side, time between resyncs.
    market_max_buffered_diffs: Annotated[int, Field(ge=1, le=100_000)] = 1000
    market_max_book_levels: Annotated[int, Field(ge=10, le=100_000)] = 5000
    market_min_resync_interval_seconds: Annotated[float, Field(ge=0, le=600)] = 1.0
    # REST requests (snapshots, kline backfill and repairs) per venue and process per minute, as a token bucket
    # (this many at once, refilled evenly): a resync storm is spread out instead of earning a 429. 300/min is far
    # below Binance's 6 000 weight/min for the heaviest call this makes (a 1000-level depth snapshot, weight 50).
    market_rest_budget_per_minute: Annotated[int, Field(ge=1, le=100_000)] = 300
    # Reconnects: full-jitter exponential backoff from base, capped (the issue caps it at 60 s); the attempt count
    # resets only after a connection stayed up this long.
    market_backoff_base_seconds: Annotated[float, Field(gt=0, le=60)] = 0.5
    market_backoff_cap_seconds: Annotated[float, Field(gt=0, le=60)] = 60.0
    market_stable_connection_seconds: Annotated[float, Field(ge=0, le=3600)] = 30.0
    # Binance closes a stream connection at 24 h: it is rotated make-before-break at this age, before the venue
    # cuts it. A make-before-break switch (this rotation, Binance serverShutdown, CoinAPI reconnect) is given up
    # after market_rotation_timeout_seconds, falling back to an ordinary reconnect.
    binance_max_connection_age_seconds: Annotated[float, Field(gt=0, le=86_400)] = 85_800.0
    market_rotation_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 30.0
    # Per-stream silence, 0 = off: one symbol's book stream silent this long while its connection lives (Binance
    # kline updates, Bybit pongs, CoinAPI heartbeats keep the connection-level timeout quiet) is checked: Binance
    # compares the book with a REST snapshot and resyncs it in place if it moved, Bybit resubscribes, CoinAPI
    # reconnects. A trade stream silent this long reconnects; off by default, as a quiet market goes minutes
    # without a trade.
    market_book_silence_seconds: Annotated[float, Field(ge=0, le=3600)] = 30.0
    market_trade_silence_seconds: Annotated[float, Field(ge=0, le=86_400)] = 0.0
    # Binance depth snapshots stay reusable by a resync they can still bridge (by update ids) this long; 0 = off.
    market_snapshot_cache_seconds: Annotated[float, Field(ge=0, le=600)] = 10.0
    # Bars awaiting repair from REST klines (partially observed around a start or a reconnect), per feed.
    market_max_pending_repairs: Annotated[int, Field(ge=1, le=100_000)] = 256
    # A repair whose answer holds no closed bar for its window is retried (backoff, REST budget) this long, then the
    # partially observed bar is kept, flagged `partial: true`. Bars close by the venue's clock, whose server time
    # (venues with REST) is re-measured this often.
    market_repair_retry_seconds: Annotated[float, Field(ge=0, le=3600)] = 120.0
    market_clock_refresh_seconds: Annotated[float, Field(gt=0, le=3600)] = 60.0
    # The simulated `sim` venue: mean trades per second and the seed of its random walk.
    sim_rate: Annotated[float, Field(gt=0, le=1_000_000)] = 20.0
    sim_seed: int = 1

    @field_validator("feeds")
    @classmethod
    def _valid_feeds(cls, value: str) -> str:
        from app.market.feeds import parse_feeds  # noqa: PLC0415 - lives with the venues; imports no settings

        parse_feeds(value)  # raises FeedSpecError (a ValueError) naming the bad part
        return value

    @field_validator("binance_ws_url", "binance_futures_ws_url", "bybit_ws_url", "coinapi_ws_url")
    @classmethod
    def _websocket_url(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://")):
            raise ValueError("must start with ws:// or wss://")
        return value

    @field_validator("binance_rest_url", "binance_futures_rest_url", "bybit_rest_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("market_bar_retention_by_timeframe")
    @classmethod
    def _known_timeframes(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = set(value) - {"1m", "5m", "15m", "1h", "4h", "1d"}
        if unknown:
            raise ValueError(f"unknown timeframes {sorted(unknown)}; valid: 1m, 5m, 15m, 1h, 4h, 1d")
        return value

    # Signals API: bars a signal is computed on, and how long a computed signal stays cached (its cache key
    # already changes with every newly closed bar; the TTL only bounds Redis memory).
    signal_bars: Annotated[int, Field(ge=50, le=5000)] = 1000
    signal_cache_ttl_seconds: Annotated[float, Field(ge=1, le=86_400)] = 600.0
    # Per process, a cached signal needs no Redis round trip: the newest closed bar per feed and timeframe (pushed
    # by the bar-close channel; re-read after this TTL, the staleness bound if the subscription drops), feed
    # status, the live-feed list, and up to `signal_memo_entries` documents (least recently used dropped).
    signal_memo_ttl_seconds: Annotated[float, Field(ge=0, le=60)] = 1.0
    signal_memo_entries: Annotated[int, Field(ge=1, le=100_000)] = 1024
    # Single flight across instances: the first request for a missing signal takes a Redis lock for at most this
    # long and computes; the others poll the cache every `signal_singleflight_poll_seconds` (a cold signal takes
    # tens of ms). A waiter whose lock holder died computes itself once the lock expires.
    signal_singleflight_timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 10.0
    signal_singleflight_poll_seconds: Annotated[float, Field(gt=0, le=1)] = 0.01
    # POST /v1/signals/batch: items per request, and how many of one batch are resolved at once.
    signal_batch_max_items: Annotated[int, Field(ge=1, le=500)] = 50
    signal_batch_concurrency: Annotated[int, Field(ge=1, le=64)] = 8
    # GET /v1/signals/{venue}/{symbol}/stream (Server-Sent Events): open streams per process (more → 503 with
    # Retry-After); the idle time after which a `: keep-alive` comment is sent (proxies and load balancers drop
    # silent connections); the reconnection delay sent to clients (`retry:`); the longest a stream stays open (the
    # client then reconnects with Last-Event-ID, so its key is verified again and load rebalances across instances).
    signal_stream_max_per_process: Annotated[int, Field(ge=1, le=100_000)] = 1000
    # …and per tenant per process (more → 429 with Retry-After), so one tenant cannot take every slot.
    signal_stream_max_per_tenant: Annotated[int, Field(ge=1, le=100_000)] = 100
    signal_stream_heartbeat_seconds: Annotated[float, Field(gt=0, le=300)] = 15.0
    signal_stream_retry_ms: Annotated[int, Field(ge=0, le=600_000)] = 3000
    signal_stream_max_seconds: Annotated[float, Field(gt=0, le=86_400)] = 3600.0
    # The one pub/sub connection per process behind the streams: subscription changes and a drain are noticed
    # within the poll interval; a lost connection is retried with full-jitter exponential backoff (base, cap).
    signal_stream_poll_seconds: Annotated[float, Field(gt=0, le=5)] = 0.25
    signal_stream_reconnect_base_seconds: Annotated[float, Field(gt=0, le=60)] = 0.5
    signal_stream_reconnect_cap_seconds: Annotated[float, Field(gt=0, le=300)] = 30.0

    # Responses larger than this are gzip-compressed for clients that accept it (level 1-9; 0 turns gzip off).
    gzip_min_bytes: Annotated[int, Field(ge=0)] = 1400
    gzip_level: Annotated[int, Field(ge=0, le=9)] = 5
    # A single body this large is compressed on a worker thread: inline it would stall the event loop (measured
    # ~3 ms per 100 KB of JSON at level 5).
    gzip_thread_min_bytes: Annotated[int, Field(ge=1)] = 131_072

    log_level: str = "INFO"
    log_format: LogFormat = LogFormat.JSON
    access_log: bool = True

    @field_validator("database_url")
    @classmethod
    def _known_database_driver(cls, value: str) -> str:
        if not value.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
            raise ValueError("DATABASE_URL must start with postgresql+asyncpg:// or sqlite+aiosqlite://")
        return value

    @field_validator("redis_url")
    @classmethod
    def _known_redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://", "memory://")):
            raise ValueError("REDIS_URL must start with redis://, rediss://, unix:// or memory://")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return upper

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.environment is Environment.PRODUCTION:
            secret = self.secret_key.get_secret_value()
            if not secret or secret == DEFAULT_DEV_SECRET or len(secret) < 32:
                raise ValueError(
                    "DELTAFLOW_SECRET_KEY must be set to a random value of at least 32 characters in production"
                )
        return self

    @property
    def is_embedded_database(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def is_memory_redis(self) -> bool:
        return self.redis_url.startswith("memory://")

    def sqlite_path(self) -> Path | None:
        """File path of an embedded SQLite database (None for in-memory or Postgres)."""
        if not self.is_embedded_database:
            return None
        raw = self.database_url.split(":///", 1)[1] if ":///" in self.database_url else ""
        if not raw or raw.startswith(":memory:"):
            return None
        return Path(raw.split("?", 1)[0])

    def public_view(self) -> dict[str, Any]:
        """Settings safe to print: secrets masked, passwords stripped from URLs."""
        view = self.model_dump(mode="json")
        view["secret_key"] = "**********"  # noqa: S105 - the mask, not a secret
        view["database_url"] = _redact_url(self.database_url)
        view["redis_url"] = _redact_url(self.redis_url)
        return view


# Query parameters that carry credentials in database and Redis URLs (libpq's `password`, `sslpassword`, asyncpg's
# and redis-py's `password`, tokens of managed services); matched on the lowercased name, by substring.
_SECRET_QUERY_PARTS = ("password", "passwd", "pwd", "secret", "token", "key", "auth", "credential")


def _redact_url(url: str) -> str:
    """The URL with its password (`scheme://user:password@host`) and every credential-like query parameter
    (`?password=…`, `?sslpassword=…`, `?token=…`) replaced by ***."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    rest, question, query = rest.partition("?")
    query, hash_, fragment = query.partition("#")
    if "@" in rest.split("/", 1)[0]:
        credentials, at, host = rest.rpartition("@")
        user, colon, _password = credentials.partition(":")
        rest = f"{user}{':***' if colon else ''}{at}{host}"
    if question:
        query = "&".join(_redact_parameter(part) for part in query.split("&"))
    return f"{scheme}://{rest}{question}{query}{hash_}{fragment}"


def _redact_parameter(parameter: str) -> str:
    name, equals, _value = parameter.partition("=")
    if equals and any(part in name.lower() for part in _SECRET_QUERY_PARTS):
        return f"{name}=***"
    return parameter


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings from the environment, read once per process."""
    return Settings()
