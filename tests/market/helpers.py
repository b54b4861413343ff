"""Helpers for running the real connector against the mock exchange."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection

from app.market.events import BookSnapshot, BookUpdate, MarketEvent
from app.market.recovery import Backoff, CircuitBreaker, Clock
from app.market.venues.binance import Market
from app.market.venues.binance_client import BinanceConnector, ConnectorLimits, Sleep
from tests.market.mock_exchange import MockExchange

if TYPE_CHECKING:
    from tests.market.mock_binance_live import LiveBinance

WAIT_TIMEOUT_S = 15.0


@dataclass
class Recorder:
    """The connector's sink: keeps every event and checks each book right after each applied diff."""

    connector: BinanceConnector | None = None
    events: list[MarketEvent] = field(default_factory=list)
    crossed_after: list[BookUpdate] = field(default_factory=list)

    async def __call__(self, event: MarketEvent) -> None:
        self.events.append(event)
        connector = self.connector
        if isinstance(event, BookUpdate) and connector and connector.syncs[event.symbol].book.is_crossed:
            self.crossed_after.append(event)

    def of(self, kind: type[MarketEvent]) -> list[MarketEvent]:
        return [e for e in self.events if isinstance(e, kind)]

    def book_events(self, symbol: str) -> list[BookSnapshot | BookUpdate]:
        return [e for e in self.events if isinstance(e, BookSnapshot | BookUpdate) and e.symbol == symbol]


async def wait_for(condition: Callable[[], bool], limit_s: float = WAIT_TIMEOUT_S) -> None:
    """Poll ``condition``: it reads counters of the connector and the mock, which signal no event."""
    async with asyncio.timeout(limit_s):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


class GatedConnect(BinanceConnector):
    """Holds its ``gate_at``-th socket (1 = the first) between the venue accepting it and the connector using it."""

    def __init__(self, gate_at: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate_at = gate_at
        self.opening = asyncio.Event()
        self.release = asyncio.Event()

    async def _connect(self) -> ClientConnection:
        ws = await super()._connect()
        if self.stats.connects == self.gate_at:
            self.opening.set()
            await self.release.wait()
        return ws


def fast_backoff(*, stable_after_s: float = 3600.0) -> Backoff:
    """Millisecond delays with the jitter pinned to its ceiling, so delays are exact."""
    return Backoff(base_s=0.001, cap_s=0.016, stable_after_s=stable_after_s, rng=lambda: 1.0)


@asynccontextmanager
async def running_connector(
    mock: MockExchange,
    market: Market,
    symbols: list[str],
    *,
    limits: ConnectorLimits | None = None,
    backoff: Backoff | None = None,
    breaker: CircuitBreaker | None = None,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
) -> AsyncIterator[tuple[BinanceConnector, Recorder]]:
    recorder = Recorder()
    connector = BinanceConnector(
        market,
        symbols,
        recorder,
        ws_url=mock.ws_url,
        rest_url=mock.rest_url,
        limits=limits or ConnectorLimits(min_resync_interval_s=0.01),
        backoff=backoff or fast_backoff(),
        breaker=breaker,
        sleep=sleep,
        clock=clock,
    )
    recorder.connector = connector
    connector.start()
    try:
        yield connector, recorder
    finally:
        await connector.stop()


def live_connector(
    mock: LiveBinance, recorder: Recorder, market: Market = "spot", **limits: float | None
) -> BinanceConnector:
    """A connector of the live mock's symbol, resyncing without the minimum interval's
    wait, with a fast backoff; ``limits`` override ConnectorLimits fields."""
    connector = BinanceConnector(
        market,
        [mock.market.symbol],
        recorder,
        ws_url=mock.ws_url,
        rest_url=mock.rest_url,
        limits=ConnectorLimits(min_resync_interval_s=0.01, **limits),  # type: ignore[arg-type]
        backoff=fast_backoff(),
    )
    recorder.connector = connector
    return connector
