"""The pipeline's bounds, counters, queue markers and per-feed writer state (split from :mod:`app.market.pipeline`)."""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass

from app.market.aggregation import Bar, BarAggregator
from app.market.book import OrderBook
from app.market.events import Liquidation


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


def default_tick(price: float) -> float:
    """A footprint bin of about five significant digits of ``price`` (60 000 → 1, 3 000 → 0.1)."""
    if price <= 0:
        return 1.0
    return 10.0 ** (math.floor(math.log10(price)) - 4)


class Stop:
    """Queued by :meth:`Pipeline.aclose`: the writer applies what is left, flushes and returns."""


STOP = Stop()


class Gap:
    """Queued by :meth:`Pipeline.mark_gap`: the feed's stream broke here (events after it are a new session)."""

    __slots__ = ("key",)

    def __init__(self, key: tuple[str, str]) -> None:
        self.key = key


@dataclass(frozen=True, slots=True)
class PipelineLimits:
    """Every bound of the pipeline; filled from settings (``market_*``)."""

    queue_size: int = 100
    batch_size: int = 500
    flush_interval_s: float = 0.02
    max_coalesced_groups: int = 256
    max_coalesced_bins: int = 8192
    memory_bars: int = 16  # closed bars kept in memory per timeframe: Redis holds the history
    max_footprint_levels: int = 1000
    max_pending_writes: int = 1000  # closed bars + liquidations kept across failed flushes, per feed
    close_grace_ms: int = 2000  # a bar closes this long after its window ends, for trades stamped just before
    tick_interval_s: float = 1.0  # how often quiet feeds are checked for bars to close
    retry_delay_s: float = 0.5  # after a failed flush
    max_gaps: int = 64  # stream breaks remembered per feed to tell partially observed bars (a day's worth)


@dataclass(slots=True)
class PipelineStats:
    received: int = 0
    trades: int = 0
    book_events: int = 0
    liquidations: int = 0
    ignored: int = 0
    coalesced: int = 0  # trades merged into groups
    groups: int = 0  # groups queued
    resynced: int = 0  # book snapshots after a feed's first: its connector resynced
    batches: int = 0
    write_errors: int = 0
    dropped_writes: int = 0  # closed bars or liquidations dropped after ``max_pending_writes`` failed to flush
    last_message_ms: int | None = None


class FeedState:
    """What the writer holds for one feed between flushes; every collection is bounded."""

    __slots__ = (
        "agg",
        "bars_dirty",
        "book",
        "book_dirty",
        "book_ts",
        "gap_start",
        "gaps",
        "last_ts",
        "liquidations",
        "pending",
        "session_start_ms",
        "snapshots",
        "tick",
        "told_ts",
    )

    def __init__(self, tick: float | None, limits: PipelineLimits) -> None:
        self.tick = tick
        self.agg: BarAggregator | None = None
        self.session_start_ms = 0  # exchange time of the first bar event: earlier windows were seen only in part
        self.book = OrderBook()
        self.book_ts = 0
        self.snapshots = 0
        self.pending: deque[Bar] = deque(maxlen=limits.max_pending_writes)
        self.liquidations: deque[Liquidation] = deque(maxlen=limits.max_pending_writes)
        self.bars_dirty = False
        self.book_dirty = False
        # Stream breaks (exchange ms): a bar whose window overlaps one was observed only in part. ``gap_start`` is
        # the last bar event's time while a break is open, i.e. until the first bar event after it arrives.
        self.last_ts = 0
        self.told_ts = 0  # the newest bar event time told to the pipeline's ``on_venue_time``
        self.gap_start: int | None = None
        self.gaps: deque[tuple[int, int]] = deque(maxlen=limits.max_gaps)

    def open_gap(self) -> None:
        if self.agg is not None and self.gap_start is None:
            self.gap_start = self.last_ts

    def close_gap(self, ts: int) -> tuple[int, int] | None:
        """Called with the first bar event's time after a break; returns the break's (start, end)."""
        start, self.gap_start = self.gap_start, None
        if start is None:
            return None
        self.gaps.append((start, ts))
        return start, ts

    def is_partial(self, bar: Bar) -> bool:
        """Whether some of the bar's window went unobserved: before the first event, or during a break."""
        if bar.open_time < self.session_start_ms:
            return True
        close = bar.close_time
        if self.gap_start is not None and close > self.gap_start:
            return True
        return any(bar.open_time < end and close > start for start, end in self.gaps)
