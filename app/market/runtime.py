"""Ingestion wiring: settings → one leased ingestor per (venue, symbol) → pipeline → Redis.

Each feed has a :class:`LeaseKeeper`; the process that holds a feed's lease runs its source (a venue connector or
the simulator), its pipeline, the REST kline backfill and bar repairs (:mod:`app.market.repairs`), and a status
writer. Every process (API replicas with ``ingest_in_process``, ``deltaflow ingest`` processes) may run the same
keepers: exactly one of them ingests each feed, and another takes over within ttl + ttl/3 when it dies.

Each feed has one :class:`VenueClock`, and every decision taken from a timestamp asks it: bars close, kline rows are
final and repairs fall due by the venue's time less the close grace, never by this host's. It learns from the
stream's event times and, for venues with REST, the venue's server time, measured before the backfill and every
``market_clock_refresh_seconds``.

One connection per feed keeps a feed's lifetime equal to its lease's; a venue's symbols share its HTTP client
and REST circuit breaker (its request budget).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from redis.exceptions import RedisError

from app.config import Settings
from app.core.redis import RedisClient
from app.market.aggregation import TIMEFRAMES, Bar
from app.market.backfill import MAX_LIMIT, BackfillError, KlineBackfill
from app.market.events import Venue
from app.market.feed_metrics import FeedMetrics
from app.market.feeds import Feed, parse_feeds
from app.market.keys import FeedKeys
from app.market.lease import Lease, LeaseKeeper
from app.market.pipeline import Pipeline, PipelineLimits, wall_clock_ms
from app.market.repairs import BackfillStatus, BarRepairs, Repair
from app.market.sources import MARKETS, Shared, Source, build_source, coinapi_symbol_ids, rest_url, source_status
from app.market.sources import backoff as reconnect_backoff
from app.market.store import FeedWriter, StoreLimits
from app.market.tasks import cancel_and_wait, cancelling
from app.market.venue_clock import VenueClock

__all__ = ["FeedConfigError", "IngestionHandle", "configured_feeds", "start_ingestion"]

logger = logging.getLogger(__name__)

IMPLEMENTED_VENUES: tuple[Venue, ...] = ("binance", "binance-futures", "bybit", "coinapi", "sim")
MarketClock = Callable[[], int]  # epoch ms of this host; each feed's VenueClock adds the venue's offset to it


class FeedConfigError(ValueError):
    """The configured feeds cannot be ingested (bad syntax, or a venue without a connector yet)."""


def configured_feeds(settings: Settings) -> tuple[Feed, ...]:
    feeds = parse_feeds(settings.feeds)
    missing = sorted({venue for venue, _ in feeds if venue not in IMPLEMENTED_VENUES})
    if missing:
        raise FeedConfigError(
            f"DELTAFLOW_FEEDS names venues without a connector yet: {', '.join(missing)};"
            f" implemented: {', '.join(IMPLEMENTED_VENUES)}"
        )
    try:
        coinapi_symbol_ids(settings, feeds)  # a symbol that cannot be mapped is a configuration error, up front
    except ValueError as exc:
        raise FeedConfigError(str(exc)) from exc
    return feeds


def pipeline_limits(settings: Settings) -> PipelineLimits:
    return PipelineLimits(
        queue_size=settings.market_queue_size,
        batch_size=settings.market_batch_size,
        flush_interval_s=settings.market_flush_interval_ms / 1000,
        max_coalesced_groups=settings.market_max_coalesced_groups,
        max_coalesced_bins=settings.market_max_coalesced_bins,
        max_footprint_levels=settings.market_max_footprint_levels,
        close_grace_ms=settings.market_close_grace_ms,
    )


def store_limits(settings: Settings) -> StoreLimits:
    return StoreLimits(
        bar_retention=settings.market_bar_retention,
        bar_retention_by_timeframe=dict(settings.market_bar_retention_by_timeframe),
        footprint_retention=settings.market_footprint_retention,
        forming_ttl_ms=int(settings.market_forming_ttl_seconds * 1000),
        book_ttl_ms=int(settings.market_book_ttl_seconds * 1000),
        book_depth=settings.market_book_depth,
        liquidation_stream_len=settings.market_liquidation_stream_len,
        status_ttl_ms=int(settings.market_status_ttl_seconds * 1000),
    )


class FeedIngestor:
    """One (venue, symbol): its lease keeper and, while the lease is held, the ingestion itself."""

    def __init__(
        self,
        settings: Settings,
        redis: RedisClient,
        venue: Venue,
        symbol: str,
        shared: Shared,
        *,
        clock: MarketClock = wall_clock_ms,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self.venue_clock = VenueClock(clock, period_ms=int(settings.market_clock_refresh_seconds * 1000))
        self.redis = redis
        self.venue = venue
        self.symbol = symbol
        self._shared = shared
        self.writer = FeedWriter(venue, symbol, store_limits(settings))
        lease = Lease(redis, FeedKeys(venue, symbol).lease, int(settings.market_lease_ttl_seconds * 1000))
        self.keeper = LeaseKeeper(lease, self._ingest, name=f"{venue}:{symbol}")
        self.pipeline: Pipeline | None = None
        self.source: Source | None = None
        self.backfill = BackfillStatus()
        self.metrics = FeedMetrics(venue, symbol)
        self._session_start: int | None = None  # exchange time of the stream's first bar event
        self._backfilled_to: dict[str, int] = {}  # timeframe → the first window the backfill did not take as final

    def _rest_url(self) -> str:
        return rest_url(self.settings, self.venue)

    async def _ingest(self) -> None:
        """Runs while this process holds the feed's lease; cancelled when it is lost or on stop."""
        has_klines = self.venue in MARKETS
        self.backfill = status = BackfillStatus(
            state="pending" if has_klines else "n/a",
            repairs_pending=deque(maxlen=self.settings.market_max_pending_repairs),
        )
        clock = self.venue_clock
        self._session_start, self._backfilled_to = None, {}
        self.metrics.new_session()
        pipeline = Pipeline(
            self.redis,
            [(self.venue, self.symbol)],
            limits=pipeline_limits(self.settings),
            store_limits=self.writer.limits,
            tick_sizes=self.settings.market_tick_sizes,
            clock=clock.now,
            on_venue_time=clock.saw,
            on_session=self._session_started if has_klines else None,
            on_partial=(lambda bar: status.want(Repair(bar.timeframe, bar.open_time, 1, bar))) if has_klines else None,
            on_gap=self._gap_repairs if has_klines else None,
        )
        source = build_source(
            self.settings, self.venue, self.symbol, pipeline.submit, self._shared, on_gap=self._on_stream_break
        )
        self.pipeline, self.source = pipeline, source
        writer = pipeline.start()
        helpers = [self._task(self._report_status(), "status")]
        if has_klines:
            fetcher = KlineBackfill(
                MARKETS[self.venue], self._rest_url(), self._shared.http, self._shared.breaker(self.venue)
            )
            helpers.append(self._task(self._run_backfill(fetcher), "backfill"))
            helpers.append(self._task(self._keep_venue_clock(fetcher), "clock"))
        try:
            # Any task ending (only by an error) ends the ingestion: the keeper releases the lease and retries.
            done, _ = await asyncio.wait([writer, source.start(), *helpers], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            await source.stop()
            for task in helpers:
                await cancel_and_wait(task)
            await pipeline.aclose()  # flushes what the source delivered, then stops the writer
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._write_status(stopped=True)
            self.pipeline = self.source = None

    async def _on_stream_break(self, symbol: str) -> None:
        if self.pipeline is not None:
            await self.pipeline.mark_gap(self.venue, symbol)

    def _session_started(self, start_ms: int) -> None:
        self._session_start = start_ms
        self._cover_startup()

    def _cover_startup(self) -> None:
        """Windows after the backfill's last final one and before the stream's first bar: neither saw them (a
        boundary passed between the two), so they are repaired from klines. Each timeframe once, when both are
        known."""
        start = self._session_start
        if start is None:
            return
        for timeframe, first in self._backfilled_to.items():
            width = TIMEFRAMES[timeframe]
            count = (start - start % width - first) // width
            if count > 0:
                self.backfill.want(Repair(timeframe, first, min(count, self._most_windows())))
        self._backfilled_to.clear()

    def _most_windows(self) -> int:
        return max(1, min(self.settings.market_backfill_bars, MAX_LIMIT[MARKETS[self.venue]]))

    def _gap_repairs(self, start_ms: int, end_ms: int) -> None:
        """Windows wholly inside a stream break have no live bar at all: take them from klines. (The windows
        holding the break's ends had live trades; they close as partial bars and are repaired one by one.) A long
        break is repaired for its newest ``market_backfill_bars`` windows, as at start."""
        most = self._most_windows()
        for timeframe, width in TIMEFRAMES.items():
            first = start_ms - start_ms % width + width
            end = end_ms - end_ms % width
            count = (end - first) // width
            if count > 0:
                count = min(count, most)
                self.backfill.want(Repair(timeframe, end - count * width, count))

    def _task(self, coro: Coroutine[Any, Any, None], what: str) -> asyncio.Task[None]:
        return asyncio.create_task(coro, name=f"{self.venue}:{self.symbol}-{what}")

    async def _run_backfill(self, fetcher: KlineBackfill) -> None:
        """The venue's time, recent closed bars from REST klines, then the partial live bars replaced by the venue's
        own (:class:`BarRepairs`).

        Retries with backoff (capped at 60 s) while the venue is unreachable; the API keeps serving whatever
        Redis holds meanwhile, and the feed status says why the backfill has not completed.
        """
        backoff = reconnect_backoff(self.settings)
        status = self.backfill
        repairs = BarRepairs(
            self.symbol,
            fetcher,
            self.venue_clock,
            status,
            self._store_bars,
            grace_ms=self.settings.market_close_grace_ms,
            retry_s=self.settings.market_repair_retry_seconds,
            backoff=reconnect_backoff(self.settings),
        )
        todo = list(TIMEFRAMES) if self.settings.market_backfill_bars > 0 else []
        synced = False
        while True:
            try:
                if not synced:  # the forming last row is told by the venue's clock: know it first
                    self.venue_clock.saw(await fetcher.server_time())
                    synced = True
                while todo:
                    # Final by the venue's clock less the close grace, as live bars close.
                    timeframe, settled = todo[0], self.venue_clock.now() - self.settings.market_close_grace_ms
                    limit = self.settings.market_backfill_bars
                    await self._store_bars(await fetcher.fetch(self.symbol, timeframe, limit=limit, now_ms=settled))
                    self._backfilled_to[timeframe] = settled - settled % TIMEFRAMES[timeframe]
                    self._cover_startup()
                    status.timeframes_done += 1
                    todo.pop(0)
                status.state, status.error = "done", None
                await repairs.run()
            except (BackfillError, RedisError, OSError) as exc:
                if cancelling():
                    raise asyncio.CancelledError from exc
                status.state, status.error = "failed", str(exc)
                status.attempts += 1
                logger.warning("market.backfill_failed", extra={"feed": self.keeper.name, "error": str(exc)})
                # An open breaker refuses without asking the venue: sleep until it may ask again, not in a hot loop.
                await asyncio.sleep(max(backoff.next_delay(), fetcher.breaker.retry_in()))

    async def _keep_venue_clock(self, fetcher: KlineBackfill) -> None:
        """Re-measure the venue's server time every period (the stream's event times refresh it too, but a quiet
        market sends none); a failure leaves the last measurement in place."""
        while True:
            await asyncio.sleep(self.settings.market_clock_refresh_seconds)
            try:
                self.venue_clock.saw(await fetcher.server_time())
            except BackfillError as exc:
                logger.warning("market.clock_failed", extra={"feed": self.keeper.name, "error": str(exc)})

    async def _store_bars(self, bars: list[Bar], partial: bool = False) -> None:
        """Closed bars from REST klines (no footprint), or a live bar observed in part, kept with its detail and
        flagged when the venue never gave its own."""
        if not bars:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for bar in bars:
                self.writer.close_bar(pipe, bar, with_detail=partial, partial=partial)
            await pipe.execute()

    def status(self) -> dict[str, Any]:
        """What ``GET /v1/markets`` shows for this feed (this process holds its lease)."""
        pipeline, source = self.pipeline, self.source
        out: dict[str, Any] = {
            "venue": self.venue,
            "symbol": self.symbol,
            "simulated": self.venue == "sim",
            "holder": self.keeper.lease.token,
            "queue_depth": pipeline.queue_depth if pipeline else 0,
            "coalesced": pipeline.stats.coalesced if pipeline else 0,
            "resynced": pipeline.stats.resynced if pipeline else 0,
            "write_errors": pipeline.stats.write_errors if pipeline else 0,
            "last_message_ms": pipeline.stats.last_message_ms if pipeline else None,
            "clock_offset_ms": self.venue_clock.offset_ms,
            "backfill": {
                "state": self.backfill.state,
                "error": self.backfill.error,
                "attempts": self.backfill.attempts,
                "timeframes_done": self.backfill.timeframes_done,
                "repaired": self.backfill.repaired,
                "repairs_failed": self.backfill.repairs_failed,
                "repairs_pending": len(self.backfill.repairs_pending),
                "repairs_dropped": self.backfill.repairs_dropped,
            },
        }
        connection = source_status(source)
        connection["resynced"] = max(out["resynced"], connection.get("resynced", 0))
        out |= connection
        connected = bool(out.get("connected"))
        if "state" not in out:  # misconfigured / refused say so themselves
            out["state"] = "streaming" if connected else "unreachable" if out.get("last_error") else "connecting"
        return out

    async def _write_status(self, *, stopped: bool = False) -> None:
        status = self.status()
        if stopped:
            status |= {"connected": False, "state": "stopped"}
        self.metrics.observe(status, stopped=stopped)
        now = wall_clock_ms()
        status["updated_ms"] = now
        async with self.redis.pipeline(transaction=False) as pipe:
            self.writer.set_status(pipe, status, now)
            await pipe.execute()

    async def _report_status(self) -> None:
        while True:
            try:
                await self._write_status()
            except (RedisError, OSError) as exc:
                if cancelling():
                    raise asyncio.CancelledError from exc
                logger.warning("market.status_failed", extra={"feed": self.keeper.name, "error": repr(exc)})
            await asyncio.sleep(self.settings.market_status_interval_seconds)


class IngestionHandle:
    """The running ingestion of one process; ``aclose()`` stops every feed and releases its lease."""

    def __init__(self, ingestors: list[FeedIngestor], shared: Shared) -> None:
        self.ingestors = ingestors
        self._shared = shared

    @property
    def feeds(self) -> list[Feed]:
        return [(i.venue, i.symbol) for i in self.ingestors]

    def held(self) -> list[Feed]:
        return [(i.venue, i.symbol) for i in self.ingestors if i.keeper.held]

    async def aclose(self) -> None:
        await asyncio.gather(*(i.keeper.stop() for i in self.ingestors))
        await self._shared.http.aclose()


def start_ingestion(settings: Settings, redis: RedisClient, *, clock: MarketClock = wall_clock_ms) -> IngestionHandle:
    """Start a lease keeper per configured feed (needs a running event loop); raises FeedConfigError.

    ``clock`` is the market's time (the wall clock; tests run a fast virtual market on both sides of the socket).
    """
    feeds = configured_feeds(settings)
    shared = Shared(rest_budget_per_minute=settings.market_rest_budget_per_minute)
    ingestors = [FeedIngestor(settings, redis, venue, symbol, shared, clock=clock) for venue, symbol in feeds]
    for ingestor in ingestors:
        ingestor.keeper.start()
    logger.info("market.ingestion_started", extra={"feeds": [f"{v}:{s}" for v, s in feeds]})
    return IngestionHandle(ingestors, shared)
