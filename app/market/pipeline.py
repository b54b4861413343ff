"""Reader → bounded queue → batching writer to Redis.

The reader (a connector) awaits :meth:`Pipeline.submit` for every event. Overflow policy per event type when the
queue is full:

- depth diffs, snapshots and liquidations wait for room (backpressure: the reader stops reading, the socket's
  own bounded buffer fills, and a book that falls too far behind is resynced by its connector — a diff is
  never dropped, so a book is never silently corrupted);
- trades are coalesced (:mod:`app.market.coalesce`) into one item per symbol and minute, so a burst costs a few
  queue slots and loses no volume; when the coalescer's own bounds are reached the reader waits too.

Order is kept: while groups are pending every later trade joins them, and any other event first pushes the
pending groups into the queue, so bars see events in arrival order.

The writer applies items to in-memory state (a :class:`BarAggregator` and an :class:`OrderBook` per feed) and
flushes to Redis in one pipelined round trip per batch, when ``batch_size`` items were applied or
``flush_interval_s`` passed since the batch's first item. A failed flush keeps the unwritten closed bars and
liquidations (bounded) and retries; meanwhile the queue fills and backpressure reaches the reader.

Partially observed bars: a bar whose window began before the pipeline's first event, or overlaps a stream break
(:meth:`Pipeline.mark_gap`, queued in order with the events, from a connector that lost its connection), holds
only some of its trades. With an ``on_partial`` handler (venues with REST klines) such a bar is handed over to be
replaced by the venue's own bar instead of being stored — closed bars are immutable (first write wins), so a
partial one stored first could never be corrected — and ``on_gap(start_ms, end_ms)`` hears of every break, whose
fully missed windows have no live bar at all. Without a handler (no klines) partial bars are stored as observed.

Bars of quiet feeds close by ``clock`` less the close grace: the runtime's clock is the venue's
(:class:`app.market.venue_clock.VenueClock`), which ``on_venue_time`` teaches the newest event time of each feed;
``on_session`` hears the first bar event's time (earlier windows were not observed: the REST backfill's part).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from typing import TypeVar

from redis.exceptions import RedisError

from app.core.redis import RedisClient
from app.market.aggregation import TIMEFRAMES, Bar, BarAggregator
from app.market.coalesce import Coalescer
from app.market.events import BookSnapshot, BookUpdate, Liquidation, MarketEvent, Trade, TradeGroup
from app.market.pipeline_state import (
    STOP,
    FeedState,
    Gap,
    PipelineLimits,
    PipelineStats,
    Stop,
    default_tick,
    wall_clock_ms,
)
from app.market.store import FeedWriter, StoreLimits
from app.market.tasks import cancelling

__all__ = ["Pipeline", "PipelineLimits", "PipelineStats", "default_tick", "wall_clock_ms"]

logger = logging.getLogger(__name__)

Item = MarketEvent | TradeGroup
_T = TypeVar("_T")
NowMs = Callable[[], int]
FlushHook = Callable[[list[int]], None]
GapHook = Callable[[int, int], None]


class Pipeline:
    """One bounded queue and one writer for the feeds in ``feeds`` ((venue, symbol) pairs)."""

    def __init__(
        self,
        redis: RedisClient,
        feeds: Collection[tuple[str, str]],
        *,
        limits: PipelineLimits | None = None,
        store_limits: StoreLimits | None = None,
        tick_sizes: Mapping[str, float] | None = None,
        clock: NowMs | None = wall_clock_ms,
        on_flush: FlushHook | None = None,
        on_partial: Callable[[Bar], None] | None = None,
        on_gap: GapHook | None = None,
        on_venue_time: Callable[[int], None] | None = None,
        on_session: Callable[[int], None] | None = None,
    ) -> None:
        self.redis = redis
        self.limits = limits or PipelineLimits()
        store = store_limits or StoreLimits()
        self.store_limits = store
        ticks = tick_sizes or {}
        self._feeds = {(v, s): FeedState(ticks.get(s), self.limits) for v, s in feeds}
        self._writers = {key: FeedWriter(key[0], key[1], store) for key in self._feeds}
        self._queue: asyncio.Queue[Item | Gap | Stop] = asyncio.Queue(maxsize=self.limits.queue_size)
        self._coalescer = Coalescer(
            max_groups=self.limits.max_coalesced_groups, max_bins=self.limits.max_coalesced_bins
        )
        # ``clock`` closes bars of quiet feeds; None (replay) closes them only by later events' times.
        self._clock = clock
        self._on_flush = on_flush
        # A bar whose window began before the pipeline's first event holds only part of its trades. With a
        # handler (a venue with REST klines) it goes there to be replaced by the venue's bar instead of being
        # stored: a closed bar is immutable, so a wrong one could never be corrected.
        self._on_partial = on_partial
        self._on_gap = on_gap
        self._on_venue_time = on_venue_time
        self._on_session = on_session
        self._flushed_ts: list[int] = []
        self._last_refresh = 0.0
        self.stats = PipelineStats()
        self._task: asyncio.Task[None] | None = None

    # ---- reader side ---------------------------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    @property
    def pending_groups(self) -> int:
        return len(self._coalescer)

    async def submit(self, event: MarketEvent) -> None:
        """The connector's sink; returns when the event is queued or coalesced (awaiting it is backpressure)."""
        stats = self.stats
        stats.received += 1
        stats.last_message_ms = event.receive_ts
        feed = self._feeds.get((event.venue, event.symbol))
        if feed is None:
            stats.ignored += 1
            return
        queue = self._queue
        if type(event) is Trade:
            stats.trades += 1
            if feed.tick is None:
                feed.tick = default_tick(event.price)
            if not self._coalescer and not queue.full():
                queue.put_nowait(event)
                return
            self._move_groups_nowait()
            if not self._coalescer and not queue.full():
                queue.put_nowait(event)
            elif self._coalescer.add(event, feed.tick):
                stats.coalesced += 1
            else:  # the coalescer is at its bound too: wait
                await self._push_groups()
                await queue.put(event)
            return
        if self._coalescer:
            await self._push_groups()
        await queue.put(event)

    async def mark_gap(self, venue: str, symbol: str) -> None:
        """A connector lost ``symbol``'s stream (a reconnect follows): bars spanning the break are partial."""
        if self._on_partial is None or (venue, symbol) not in self._feeds:
            return  # nothing could repair them: bars are stored as observed
        if self._coalescer:
            await self._push_groups()
        await self._queue.put(Gap((venue, symbol)))

    def _move_groups_nowait(self) -> None:
        while self._coalescer and not self._queue.full():
            group = self._coalescer.pop()
            if group is not None:
                self.stats.groups += 1
                self._queue.put_nowait(group)

    async def _push_groups(self) -> None:
        while (group := self._coalescer.pop()) is not None:
            self.stats.groups += 1
            await self._queue.put(group)

    # ---- writer side ---------------------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="market-pipeline-writer")
        return self._task

    async def aclose(self, *, flush_timeout_s: float = 5.0) -> None:
        """Apply and flush whatever is queued or coalesced, then stop the writer (bounded by the timeout).

        The writer is asked to stop through the queue rather than cancelled: a cancel in the middle of a Redis
        round trip can leave a connection waiting for a reply that never comes. It is cancelled only past the
        timeout.
        """
        task, self._task = self._task, None
        try:
            async with asyncio.timeout(flush_timeout_s):
                if task is None or task.done():  # never started, or crashed: flush from here
                    self._drain()
                    await self._flush_retrying()
                else:
                    await self._queue.put(STOP)
                    await asyncio.gather(asyncio.shield(task), return_exceptions=True)
        except TimeoutError:
            logger.warning("market.close_timeout", extra={"queued": self._queue.qsize()})
        finally:
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def _drain(self) -> None:
        while (item := self._next_nowait()) is not None:
            if not isinstance(item, Stop):
                self._apply(item)

    def _next_nowait(self) -> Item | Gap | Stop | None:
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            # Groups are newer than anything queued, so they are taken only once the queue is empty.
            group = self._coalescer.pop()
            if group is not None:
                self.stats.groups += 1
            return group

    async def _next(self, timeout_s: float) -> Item | Gap | Stop | None:
        item = self._next_nowait()
        if item is not None:
            return item
        try:
            async with asyncio.timeout(timeout_s):
                return await self._queue.get()
        except TimeoutError:
            return None

    async def run(self) -> None:
        limits = self.limits
        loop = asyncio.get_running_loop()
        while True:
            item = await self._next(limits.tick_interval_s)
            stop = isinstance(item, Stop)
            if item is not None and not isinstance(item, Stop):
                self._apply(item)
                stop = await self._fill_batch(loop.time() + limits.flush_interval_s)
            if stop:
                self._drain()
            self._advance()
            await self._flush_retrying()
            if stop:
                return

    async def _fill_batch(self, deadline: float) -> bool:
        """Apply queued items until the batch is full or ``deadline`` passes; True if a stop request came. One timer
        per batch, not per wait: a reader yielding after each message wakes the writer per message, and a timer
        each cost ~30 % of ingest throughput (bench_ingest frames row: 43k → 62k msg/s). The timer can only
        cancel ``Queue.get``, which then leaves the item queued."""
        applied = 1
        waiter = asyncio.timeout_at(deadline)
        try:
            async with waiter:
                while applied < self.limits.batch_size:
                    item = self._next_nowait()
                    if item is None:
                        item = await self._queue.get()
                    if isinstance(item, Stop):
                        return True
                    self._apply(item)
                    applied += 1
        except TimeoutError:
            if not waiter.expired():
                raise
        return False

    async def _flush_retrying(self) -> None:
        while True:
            try:
                await self._flush()
                return
            except (RedisError, OSError) as exc:
                if cancelling():
                    raise asyncio.CancelledError from exc
                self.stats.write_errors += 1
                logger.warning("market.flush_failed", extra={"error": repr(exc)})
                await asyncio.sleep(self.limits.retry_delay_s)

    def _aggregator(self, feed: FeedState, price: float, ts: int) -> BarAggregator:
        if feed.agg is None:
            if feed.tick is None:
                feed.tick = default_tick(price)
            feed.session_start_ms = ts
            if self._on_session is not None:
                self._on_session(ts)
            feed.agg = BarAggregator(
                tick_size=feed.tick,
                max_bars=self.limits.memory_bars,
                max_footprint_levels=self.limits.max_footprint_levels,
                on_close=lambda bar: self._closed(feed, bar),
            )
        return feed.agg

    def _closed(self, feed: FeedState, bar: Bar) -> None:
        self._tell_venue_time(feed)  # the event closing it proves the window over by the venue's clock
        if self._on_partial is not None and feed.is_partial(bar):
            self._on_partial(bar)
        else:
            self._append_pending(feed.pending, bar)

    def _apply(self, item: Item | Gap) -> None:
        if isinstance(item, Gap):
            self._feeds[item.key].open_gap()
            return
        feed = self._feeds[(item.venue, item.symbol)]
        if self._on_flush is not None:
            self._flushed_ts.append(item.receive_ts)
        if isinstance(item, Trade):
            self._bar_event(feed, item.exchange_ts)
            self._aggregator(feed, item.price, item.exchange_ts).add_trade(item)
            feed.bars_dirty = True
        elif isinstance(item, TradeGroup):
            self._bar_event(feed, item.first_ts)
            self._aggregator(feed, item.open, item.first_ts).add_group(item)
            feed.last_ts = max(feed.last_ts, item.last_ts)
            feed.bars_dirty = True
        elif isinstance(item, BookUpdate):
            self.stats.book_events += 1
            feed.book.apply_update(item)
            feed.book_ts = item.exchange_ts
            feed.book_dirty = True
        elif isinstance(item, BookSnapshot):
            self.stats.book_events += 1
            feed.snapshots += 1
            self.stats.resynced += feed.snapshots > 1
            feed.book.apply_snapshot(item)
            feed.book_ts = item.exchange_ts
            feed.book_dirty = True
        elif isinstance(item, Liquidation):
            self.stats.liquidations += 1
            self._bar_event(feed, item.exchange_ts)
            self._aggregator(feed, item.price, item.exchange_ts).add_liquidation(item)
            self._append_pending(feed.liquidations, item)
            feed.bars_dirty = True
        else:  # klines: the bars are built from trades; backfill reads klines through REST
            self.stats.ignored += 1

    def _bar_event(self, feed: FeedState, ts: int) -> None:
        """Track the newest bar event's time; the first one after a break closes the break (before the event is
        applied, so the bar it closes is judged with the break known)."""
        if feed.gap_start is not None:
            gap = feed.close_gap(ts)
            if gap is not None and self._on_gap is not None:
                self._on_gap(*gap)
        feed.last_ts = max(feed.last_ts, ts)

    def _tell_venue_time(self, feed: FeedState) -> None:
        if self._on_venue_time is not None and feed.last_ts > feed.told_ts:  # only new times: old ones say little
            feed.told_ts = feed.last_ts
            self._on_venue_time(feed.last_ts)

    def _append_pending(self, pending: deque[_T], item: _T) -> None:
        if len(pending) == pending.maxlen:
            self.stats.dropped_writes += 1
        pending.append(item)

    def _advance(self) -> None:
        now = time.monotonic()
        # Forming keys carry a TTL (a dead ingestor's bar must vanish); a live but quiet feed rewrites them.
        refresh = now - self._last_refresh >= self.store_limits.forming_ttl_ms / 4000
        if refresh:
            self._last_refresh = now
        clock = self._clock
        for feed in self._feeds.values():
            if feed.agg is None:
                continue
            self._tell_venue_time(feed)
            if clock is not None:
                closed_before = len(feed.pending)
                feed.agg.advance(clock() - self.limits.close_grace_ms)
                if len(feed.pending) != closed_before:
                    feed.bars_dirty = True
            if refresh:
                feed.bars_dirty = True

    async def _flush(self) -> None:
        touched = [
            (key, feed)
            for key, feed in self._feeds.items()
            if feed.bars_dirty or feed.book_dirty or feed.pending or feed.liquidations
        ]
        if not touched:
            self._report_flushed()
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, feed in touched:
                writer = self._writers[key]
                for bar in feed.pending:
                    writer.close_bar(pipe, bar)
                for liq in feed.liquidations:
                    writer.add_liquidation(pipe, liq)
                if feed.bars_dirty and feed.agg is not None:
                    for tf in TIMEFRAMES:
                        writer.set_forming(pipe, tf, feed.agg.forming(tf))
                if feed.book_dirty:
                    writer.set_book(
                        pipe, feed.book.top(self.store_limits.book_depth), feed.book.last_update_id, feed.book_ts
                    )
            await pipe.execute()
        for _, feed in touched:
            feed.pending.clear()
            feed.liquidations.clear()
            feed.bars_dirty = feed.book_dirty = False
        self.stats.batches += 1
        self._report_flushed()

    def _report_flushed(self) -> None:
        if self._on_flush is not None and self._flushed_ts:
            flushed, self._flushed_ts = self._flushed_ts, []
            self._on_flush(flushed)
