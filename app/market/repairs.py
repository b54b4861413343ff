"""Bars observed only in part, replaced by the venue's own REST klines; windows missed in a break, taken from them.

A partial live bar (the first of a session, one spanning a stream break) is never stored as it closes: closed bars
are immutable, so it waits here for the venue's kline. Every decision is made by the venue's clock
(:class:`VenueClock`), less the close grace: a repair falls due once its windows are over by then (the earliest due
goes first; one not due yet is not asked for), and it is done only when the venue answered with closed bars for
them. An answer without the partial bar's window (the venue's kline not published yet, or still forming by its
clock) is retried with backoff, within the venue's REST budget, for ``retry_s``; then the partial bar is stored as
observed, flagged ``partial: true``, rather than leaving a hole, and ``repairs_failed`` counts it apart from
``repaired``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from app.market.aggregation import TIMEFRAMES, Bar
from app.market.backfill import KlineBackfill
from app.market.recovery import Backoff
from app.market.venue_clock import VenueClock

logger = logging.getLogger(__name__)

StoreBars = Callable[[list[Bar], bool], Awaitable[None]]  # (bars, partial): write closed bars to Redis


@dataclass(slots=True, eq=False)
class Repair:
    """Closed bars to take from REST klines: ``windows`` windows of ``timeframe`` from ``start_ms``; ``partial`` is
    the live bar observed in part (one window), kept if the venue never gives its own."""

    timeframe: str
    start_ms: int
    windows: int
    partial: Bar | None = None
    give_up_at: float | None = None  # event-loop time, set at the first attempt

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.windows * TIMEFRAMES[self.timeframe]


@dataclass(slots=True)
class BackfillStatus:
    state: str = "pending"  # pending → done; "failed" while retrying; "n/a" for venues without klines
    error: str | None = None
    attempts: int = 0
    timeframes_done: int = 0
    repaired: int = 0
    repairs_failed: int = 0  # given up on: the partial bar kept, flagged, or (a missed window) nothing to keep
    repairs_dropped: int = 0  # repairs pushed out of the bounded queue (REST unreachable through many breaks)
    repairs_pending: deque[Repair] = field(default_factory=deque)
    wanted: asyncio.Event = field(default_factory=asyncio.Event)

    def want(self, repair: Repair) -> None:
        if len(self.repairs_pending) == self.repairs_pending.maxlen:
            self.repairs_dropped += 1
        self.repairs_pending.append(repair)
        self.wanted.set()


class BarRepairs:
    """Works through a feed's pending repairs, earliest due first; :meth:`run` raises what the venue's REST raises
    (:class:`BackfillError`) or Redis does, and the caller backs off and runs it again: a repair keeps its
    deadline."""

    def __init__(
        self,
        symbol: str,
        fetcher: KlineBackfill,
        clock: VenueClock,
        status: BackfillStatus,
        store: StoreBars,
        *,
        grace_ms: int,
        retry_s: float,
        backoff: Backoff,
    ) -> None:
        self.symbol = symbol
        self.fetcher = fetcher
        self.clock = clock
        self.status = status
        self._store = store
        self.grace_ms = grace_ms
        self.retry_s = retry_s
        self.backoff = backoff
        self._current: Repair | None = None

    async def run(self) -> None:
        status = self.status
        loop = asyncio.get_running_loop()
        while True:
            if not status.repairs_pending:
                status.wanted.clear()
                await status.wanted.wait()
                continue
            repair = min(status.repairs_pending, key=lambda r: r.end_ms)
            if repair is not self._current:
                self._current, self.backoff.attempt = repair, 0
            settled = self.clock.now() - self.grace_ms
            if settled < repair.end_ms:  # not over by the venue's clock: nothing final to ask for yet
                await self._pause(self.backoff.next_delay())
                continue
            give_up_at = repair.give_up_at
            if give_up_at is None:
                repair.give_up_at = give_up_at = loop.time() + self.retry_s
            elif loop.time() >= give_up_at:
                await self._give_up(repair)
                self._remove(repair)
                continue
            if await self._attempt(repair, settled):
                status.repaired += 1
                self._remove(repair)
                continue
            await self._pause(min(self.backoff.next_delay(), max(0.0, give_up_at - loop.time())))

    async def _pause(self, delay_s: float) -> None:
        """Wait, waking early for a new repair: it may fall due sooner."""
        self.status.wanted.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay_s):
                await self.status.wanted.wait()

    async def _attempt(self, repair: Repair, settled_ms: int) -> bool:
        bars = await self.fetcher.fetch(
            self.symbol, repair.timeframe, limit=repair.windows, start_ms=repair.start_ms, now_ms=settled_ms
        )
        bars = [bar for bar in bars if repair.start_ms <= bar.open_time < repair.end_ms]
        if repair.partial is not None and not bars:
            return False  # the window had trades (we saw some): the venue's kline is not there yet
        # A window without a live bar may hold no trade at all: with the windows over by the venue's clock, the rows
        # it returned are all it has.
        await self._store(bars, False)
        return True

    async def _give_up(self, repair: Repair) -> None:
        if repair.partial is not None:
            await self._store([repair.partial], True)
        self.status.repairs_failed += 1
        logger.warning(
            "market.repair_failed",
            extra={"symbol": self.symbol, "timeframe": repair.timeframe, "start_ms": repair.start_ms},
        )

    def _remove(self, repair: Repair) -> None:
        with contextlib.suppress(ValueError):  # unless the bounded queue pushed it out meanwhile
            self.status.repairs_pending.remove(repair)
