"""The ``sim`` venue: a seeded, clearly simulated market for offline demos and load tests. NOT REAL DATA.

It emits the normalised events a real connector emits — trades (a random-walk price, taker sides with bursts
of same-side aggression), a book (snapshot, then diffs around the last price, never crossed) and
liquidations — so the pipeline, store and API run exactly as with a real venue.

Deterministic: the same seed, symbols and start time give the same event sequence (:meth:`SimMarket.events`).
Times are virtual: trades arrive ``rate`` per second on average (exponential gaps, bursts at one instant);
:meth:`SimMarket.run` paces them against the wall clock (``realtime``) or emits as fast as the sink takes them.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from app.market.events import BUY, SELL, BookSnapshot, BookUpdate, Level, Liquidation, MarketEvent, Side, Trade
from app.market.tasks import cancel_and_wait

VENUE: Final = "sim"
SIMULATED_NOTICE: Final = "simulated market data (sim venue): not real prices"
_DEFAULT_PRICES: Final = {"BTC": 60_000.0, "ETH": 3_000.0, "SOL": 150.0}

EventSink = Callable[[MarketEvent], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class SimConfig:
    seed: int = 1
    rate: float = 20.0  # mean trades per second (virtual time)
    tick: float = 0.1
    volatility: float = 0.0002  # per-trade log-return standard deviation
    burst_probability: float = 0.02  # chance that a trade starts a burst
    burst_max: int = 60  # trades in a burst: uniform in 5..burst_max, same taker side, one instant
    liquidation_probability: float = 0.004
    book_levels: int = 20
    book_every: int = 4  # one depth diff per this many trades
    start_prices: Mapping[str, float] | None = None


@dataclass(slots=True)
class SimStats:
    connected: bool = False
    events: int = 0
    trades: int = 0


def start_price(symbol: str, config: SimConfig) -> float:
    if config.start_prices and symbol in config.start_prices:
        return config.start_prices[symbol]
    return next((p for base, p in _DEFAULT_PRICES.items() if symbol.startswith(base)), 100.0)


class _SimSymbol:
    def __init__(self, symbol: str, config: SimConfig, rng: random.Random) -> None:
        self.symbol = symbol
        self.config = config
        self.rng = rng
        self.price = start_price(symbol, config)
        self.update_id = 1000
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.trade_id = 0

    def round(self, price: float) -> float:
        tick = self.config.tick
        return round(round(price / tick) * tick, 10)

    def _levels(self) -> tuple[dict[float, float], dict[float, float]]:
        tick, n, rng = self.config.tick, self.config.book_levels, self.rng
        mid = self.round(self.price)
        bids = {self.round(mid - tick * (i + 1)): round(rng.lognormvariate(0, 1), 4) for i in range(n)}
        asks = {self.round(mid + tick * (i + 1)): round(rng.lognormvariate(0, 1), 4) for i in range(n)}
        return bids, asks

    def snapshot(self, ts: int) -> BookSnapshot:
        self.bids, self.asks = self._levels()
        return BookSnapshot(VENUE, self.symbol, ts, ts, self.update_id, _best(self.bids, True), _best(self.asks, False))

    def diff(self, ts: int) -> BookUpdate:
        bids, asks = self._levels()
        changes_b = [(p, 0.0) for p in self.bids if p not in bids] + list(bids.items())
        changes_a = [(p, 0.0) for p in self.asks if p not in asks] + list(asks.items())
        self.bids, self.asks = bids, asks
        self.update_id += 1
        return BookUpdate(
            VENUE,
            self.symbol,
            ts,
            ts,
            self.update_id,
            self.update_id,
            self.update_id - 1,
            tuple(changes_b),
            tuple(changes_a),
        )

    def trade(self, ts: int, side: Side) -> Trade:
        self.price = max(self.config.tick, self.price * math.exp(self.rng.gauss(0, self.config.volatility)))
        self.trade_id += 1
        qty = round(self.rng.lognormvariate(-3, 1.2), 6) or 0.000001
        return Trade(VENUE, self.symbol, ts, ts, self.round(self.price), qty, side, self.trade_id)

    def liquidation(self, ts: int) -> Liquidation:
        side: Side = SELL if self.rng.random() < 0.5 else BUY
        qty = round(self.rng.lognormvariate(-1, 1), 6) or 0.000001
        return Liquidation(VENUE, self.symbol, ts, ts, self.round(self.price), qty, side)


def _best(levels: dict[float, float], bids: bool) -> tuple[Level, ...]:
    return tuple(sorted(levels.items(), reverse=bids))


class SimMarket:
    """A simulated feed for ``symbols``; :meth:`start`/:meth:`stop` like a real connector."""

    venue: Final = VENUE

    def __init__(
        self,
        symbols: Iterable[str],
        sink: EventSink,
        config: SimConfig | None = None,
        *,
        start_ms: int | None = None,
        realtime: bool = True,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.symbols = [s.upper() for s in symbols]
        if not self.symbols:
            raise ValueError("at least one symbol is required")
        self.config = config or SimConfig()
        if self.config.rate <= 0:
            raise ValueError("sim rate must be positive")
        self._sink = sink
        self._start_ms = start_ms
        self.realtime = realtime
        self._wall_clock = wall_clock
        self.stats = SimStats()
        self._task: asyncio.Task[None] | None = None

    def events(self, start_ms: int) -> Iterator[MarketEvent]:
        """The endless event sequence from ``start_ms``; a pure function of the seed, symbols and start."""
        config = self.config
        rng = random.Random(config.seed)  # noqa: S311 - a reproducible simulation, not security
        books = [_SimSymbol(symbol, config, rng) for symbol in self.symbols]
        for book in books:
            yield book.snapshot(start_ms)
        t = float(start_ms)
        count = 0
        # Arrivals are slower than ``rate`` by the mean arrival size, so trades average ``rate`` per second.
        per_arrival = 1 + config.burst_probability * ((5 + config.burst_max) / 2 - 1)
        arrivals = config.rate / per_arrival
        while True:
            t += rng.expovariate(arrivals) * 1000
            ts = int(t)
            book = books[rng.randrange(len(books))]
            side: Side = BUY if rng.random() < 0.5 else SELL
            size = rng.randint(5, config.burst_max) if rng.random() < config.burst_probability else 1
            for _ in range(size):
                yield book.trade(ts, side)
                count += 1
                if count % config.book_every == 0:
                    yield book.diff(ts)
            if rng.random() < config.liquidation_probability:
                yield book.liquidation(ts)

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="sim-market")
        return self._task

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    async def run(self) -> None:
        start_ms = self._start_ms if self._start_ms is not None else int(self._wall_clock() * 1000)
        started = self._wall_clock()
        self.stats.connected = True
        try:
            for event in self.events(start_ms):
                if self.realtime:
                    delay = (event.exchange_ts - start_ms) / 1000 - (self._wall_clock() - started)
                    if delay > 0:
                        await asyncio.sleep(delay)
                elif self.stats.events % 256 == 0:
                    await asyncio.sleep(0)  # never starve the loop when the sink does not block
                self.stats.events += 1
                self.stats.trades += isinstance(event, Trade)
                await self._sink(event)
        finally:
            self.stats.connected = False
