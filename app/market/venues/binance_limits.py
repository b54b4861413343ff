"""The Binance connector's bounds and counters (split from :mod:`binance_client`); the config layer fills the
limits from settings, the feed status shows the counters."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ConnectorLimits:
    """Every bound the connector applies; the config layer fills these from settings."""

    max_buffered_diffs: int = 1000  # per symbol, while a snapshot is awaited
    max_book_levels: int = 5000  # per side
    snapshot_depth: int = 1000  # the REST ``limit``; Binance's largest spot/futures depth
    min_resync_interval_s: float = 1.0  # between two snapshot requests for one symbol
    breaker_poll_s: float = 1.0  # how often a symbol rechecks an open breaker
    rest_timeout_s: float = 10.0
    open_timeout_s: float = 10.0
    close_timeout_s: float = 2.0
    ping_interval_s: float | None = 20.0
    ping_timeout_s: float | None = 20.0
    silence_timeout_s: float = 30.0  # no frame at all for this long means a stale feed: reconnect
    max_frame_bytes: int = 1 << 20
    max_queued_frames: int = 64  # frames websockets buffers ahead of the reader
    # Binance ends a stream connection at 24 h: rotate (make-before-break) before it does. None = never.
    max_connection_age_s: float | None = 23 * 3600 + 50 * 60
    rotation_timeout_s: float = 30.0  # a switch that has not caught up by then happens anyway
    max_rotation_events: int = 10_000  # events buffered from the new connection while the old one catches up
    # Per-stream silence (the connection's kline updates keep it "alive" when only its depth diffs stop): a book
    # stream silent this long is probed with a REST snapshot; a trade stream silent this long reconnects. None = off;
    # trades are off by default because a quiet market legitimately goes minutes without one.
    book_silence_s: float | None = 30.0
    trade_silence_s: float | None = None
    probe_levels: int = 20  # best levels per side a probe compares between the book and the snapshot
    # A fetched depth snapshot stays reusable by a resync this long (if it bridges the buffer). 0 = off: every resync
    # fetches, the in-place one after a stale probe included (a second request for the probe's symbol).
    snapshot_cache_s: float = 10.0


@dataclass(slots=True)
class ConnectorStats:
    connected: bool = False
    connects: int = 0
    disconnects: int = 0
    frames: int = 0
    malformed: int = 0
    ignored: int = 0
    resyncs: int = 0
    snapshot_requests: int = 0
    snapshot_failures: int = 0
    breaker_waits: int = 0
    rotations: int = 0  # make-before-break switches completed
    rotations_forced: int = 0  # of which switched without proof of catch-up (timeout or full buffer)
    rotation_failures: int = 0  # the new connection could not be opened; the old one stayed
    server_shutdowns: int = 0  # serverShutdown notices received
    duplicates: int = 0  # trades and liquidations delivered by both connections of a switch, dropped once
    # Silent book streams whose book had moved on at the venue: resynced in place (or, the second time in a row with
    # no diff in between, counted in silence_reconnects too).
    stale_streams: int = 0
    quiet_probes: int = 0  # silent book streams whose book was unchanged at the venue: nothing was lost
    silence_reconnects: int = 0  # connections replaced for a dead book stream or a silent trade stream
    snapshot_cache_hits: int = 0  # resyncs served by a recent snapshot instead of a REST request
    snapshot_cache_misses: int = 0  # resyncs that found no usable cached snapshot
    last_frame_at: float | None = None
    last_error: str | None = None  # why the last connection ended or failed (for the feed status)
    backoff_delays: list[float] = field(default_factory=list)
