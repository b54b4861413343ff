"""Ingestion wiring: settings → one leased ingestor per (venue, symbol) → pipeline → Redis.

Each feed has a :class:`LeaseKeeper`; the process that holds a feed's lease runs its source (a venue connector or
the simulator), its pipeline, the REST kline backfill and a status writer. Every process (API replicas with
``ingest_in_process``, ``deltaflow ingest`` processes) may run the same keepers: exactly one of them ingests each
feed, and another takes over within ttl + ttl/3 when it dies.

One connection per feed keeps a feed's lifetime equal to its lease's; a venue's symbols share its HTTP client
and REST circuit breaker (its request budget).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.config import Settings
from app.market.aggregation import TIMEFRAMES, Bar
from app.market.backfill import BackfillError, KlineBackfill
from app.market.events import Venue
from app.market.feeds import Feed, parse_feeds
from app.market.keys import FeedKeys
from app.market.lease import Lease, LeaseKeeper
from app.market.pipeline import Pipeline, PipelineLimits, wall_clock_ms
from app.market.recovery import Backoff, CircuitBreaker
from app.market.store import FeedWriter, StoreLimits
from app.market.tasks import cancel_and_wait, cancelling
from app.market.venues.binance import Market
from app.market.venues.binance_client import BinanceConnector, ConnectorLimits, EventSink
from app.market.venues.bybit_client import BybitConnector
from app.market.venues.sim import SIMULATED_NOTICE, SimConfig, SimMarket

logger = logging.getLogger(__name__)

# CoinAPI has a connector but is not wired yet: its feeds name CoinAPI symbol ids, whose mapping to our symbols
# (and an API key check at start) the runtime does not do yet.
IMPLEMENTED_VENUES: tuple[Venue, ...] = ("binance", "binance-futures", "bybit", "sim")
_MARKETS: dict[str, Market] = {"binance": "spot", "binance-futures": "futures"}


class FeedConfigError(ValueError):
    """The configured feeds cannot be ingested (bad syntax, or a venue without a connector yet)."""


class Source(Protocol):
    """What the runtime needs of a venue connector or the simulator."""

    def start(self) -> asyncio.Task[None]: ...

    async def stop(self) -> None: ...


def configured_feeds(settings: Settings) -> tuple[Feed, ...]:
    feeds = parse_feeds(settings.feeds)
    missing = sorted({venue for venue, _ in feeds if venue not in IMPLEMENTED_VENUES})
    if missing:
        raise FeedConfigError(
            f"DELTAFLOW_FEEDS names venues without a connector yet: {', '.join(missing)};"
            f" implemented: {', '.join(IMPLEMENTED_VENUES)}"
        )
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


@dataclass(slots=True)
class BackfillStatus:
    state: str = "pending"  # pending → done; "failed" while retrying; "n/a" for venues without klines
    error: str | None = None
    attempts: int = 0
    timeframes_done: int = 0
    repaired: int = 0
    repairs_pending: list[Bar] = field(default_factory=list)


class Shared:
    """Per-venue resources shared by that venue's feeds in this process."""

    def __init__(self) -> None:
        self.http = httpx.AsyncClient(timeout=10.0)
        self.breakers: dict[str, CircuitBreaker] = {}

    def breaker(self, venue: str) -> CircuitBreaker:
        return self.breakers.setdefault(venue, CircuitBreaker())


def rest_url(settings: Settings, venue: str) -> str:
    return settings.binance_futures_rest_url if venue == "binance-futures" else settings.binance_rest_url


def build_source(settings: Settings, venue: Venue, symbol: str, sink: EventSink, shared: Shared) -> Source:
    """The connector (or simulator) of one feed, emitting into ``sink``."""
    s = settings
    if venue == "sim":
        seed = s.sim_seed ^ zlib.crc32(symbol.encode())  # per symbol, so two simulated symbols differ
        return SimMarket([symbol], sink, SimConfig(seed=seed, rate=s.sim_rate))
    if venue == "bybit":
        return BybitConnector([symbol], sink, ws_url=s.bybit_ws_url)
    market = _MARKETS[venue]
    return BinanceConnector(
        market,
        [symbol],
        sink,
        ws_url=s.binance_futures_ws_url if market == "futures" else s.binance_ws_url,
        rest_url=rest_url(s, venue),
        limits=ConnectorLimits(
            max_buffered_diffs=s.market_max_buffered_diffs,
            max_book_levels=s.market_max_book_levels,
            min_resync_interval_s=s.market_min_resync_interval_seconds,
        ),
        breaker=shared.breaker(venue),
        http_client=shared.http,
    )


class FeedIngestor:
    """One (venue, symbol): its lease keeper and, while the lease is held, the ingestion itself."""

    def __init__(self, settings: Settings, redis: Redis, venue: Venue, symbol: str, shared: Shared) -> None:
        self.settings = settings
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

    def _rest_url(self) -> str:
        return rest_url(self.settings, self.venue)

    async def _ingest(self) -> None:
        """Runs while this process holds the feed's lease; cancelled when it is lost or on stop."""
        has_klines = self.venue in _MARKETS
        self.backfill = BackfillStatus(state="pending" if has_klines else "n/a")
        pipeline = Pipeline(
            self.redis,
            [(self.venue, self.symbol)],
            limits=pipeline_limits(self.settings),
            store_limits=self.writer.limits,
            tick_sizes=self.settings.market_tick_sizes,
            on_partial=self.backfill.repairs_pending.append if has_klines else None,
        )
        source = build_source(self.settings, self.venue, self.symbol, pipeline.submit, self._shared)
        self.pipeline, self.source = pipeline, source
        writer = pipeline.start()
        helpers = [self._task(self._report_status(), "status")]
        if has_klines:
            helpers.append(self._task(self._run_backfill(), "backfill"))
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

    def _task(self, coro: Coroutine[Any, Any, None], what: str) -> asyncio.Task[None]:
        return asyncio.create_task(coro, name=f"{self.venue}:{self.symbol}-{what}")

    async def _run_backfill(self) -> None:
        """Recent closed bars from REST klines, then the partial first live bars replaced by the venue's own.

        Retries with backoff (capped at 60 s) while the venue is unreachable; the API keeps serving whatever
        Redis holds meanwhile, and the feed status says why the backfill has not completed.
        """
        fetcher = KlineBackfill(
            _MARKETS[self.venue], self._rest_url(), self._shared.http, self._shared.breaker(self.venue)
        )
        backoff = Backoff(base_s=1.0, cap_s=60.0)
        status = self.backfill
        todo = list(TIMEFRAMES) if self.settings.market_backfill_bars > 0 else []
        while True:
            try:
                while todo:
                    await self._store_rest_bars(
                        await fetcher.fetch(
                            self.symbol, todo[0], limit=self.settings.market_backfill_bars, now_ms=wall_clock_ms()
                        )
                    )
                    status.timeframes_done += 1
                    todo.pop(0)
                status.state, status.error = "done", None
                await self._repair_partial_bars(fetcher)
            except (BackfillError, RedisError, OSError) as exc:
                if cancelling():
                    raise asyncio.CancelledError from exc
                status.state, status.error = "failed", str(exc)
                status.attempts += 1
                logger.warning("market.backfill_failed", extra={"feed": self.keeper.name, "error": str(exc)})
                await asyncio.sleep(backoff.next_delay())

    async def _repair_partial_bars(self, fetcher: KlineBackfill) -> None:
        """Every first live bar (one per timeframe) is stored from the venue's kline once its window closed."""
        pending = self.backfill.repairs_pending
        while True:
            while pending:
                partial = pending[0]
                bars = await fetcher.fetch(
                    self.symbol, partial.timeframe, limit=1, start_ms=partial.open_time, now_ms=wall_clock_ms()
                )
                await self._store_rest_bars([b for b in bars if b.open_time == partial.open_time])
                self.backfill.repaired += 1
                pending.pop(0)
            await asyncio.sleep(1.0)

    async def _store_rest_bars(self, bars: list[Bar]) -> None:
        if not bars:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for bar in bars:
                self.writer.close_bar(pipe, bar, with_detail=False)
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
            "backfill": {
                "state": self.backfill.state,
                "error": self.backfill.error,
                "attempts": self.backfill.attempts,
                "timeframes_done": self.backfill.timeframes_done,
                "repaired": self.backfill.repaired,
                "repairs_pending": len(self.backfill.repairs_pending),
            },
        }
        if isinstance(source, BinanceConnector):
            stats = source.stats
            out |= {
                "connected": stats.connected,
                "reconnects": max(0, stats.connects - 1) if stats.connected else stats.disconnects,
                "resynced": max(out["resynced"], stats.resyncs),
                "breaker": source.breaker.state.value,
                "last_error": stats.last_error,
            }
        elif isinstance(source, BybitConnector):
            feed = source.stats
            out |= {
                "connected": feed.connected,
                "reconnects": feed.reconnects,
                "resynced": max(out["resynced"], feed.resyncs),
                "breaker": "n/a",  # push-only: no REST calls to break
                "last_error": feed.last_error,
            }
        elif isinstance(source, SimMarket):
            out |= {
                "connected": source.stats.connected,
                "reconnects": 0,
                "breaker": "closed",
                "notice": SIMULATED_NOTICE,
            }
        connected = bool(out.get("connected"))
        out["state"] = "streaming" if connected else "unreachable" if out.get("last_error") else "connecting"
        return out

    async def _write_status(self, *, stopped: bool = False) -> None:
        status = self.status()
        if stopped:
            status |= {"connected": False, "state": "stopped"}
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


def start_ingestion(settings: Settings, redis: Redis) -> IngestionHandle:
    """Start a lease keeper per configured feed (needs a running event loop); raises FeedConfigError."""
    feeds = configured_feeds(settings)
    shared = Shared()
    ingestors = [FeedIngestor(settings, redis, venue, symbol, shared) for venue, symbol in feeds]
    for ingestor in ingestors:
        ingestor.keeper.start()
    logger.info("market.ingestion_started", extra={"feeds": [f"{v}:{s}" for v, s in feeds]})
    return IngestionHandle(ingestors, shared)
