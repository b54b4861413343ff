"""Per-stream silence on the CoinAPI connector: a symbol's quiet book reconnects even while heartbeats flow."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from app.market.events import BookSnapshot, MarketEvent
from app.market.venues.coinapi_client import CoinApiConnector, CoinApiLimits
from tests.market.helpers import fast_backoff, wait_for
from tests.market.mock_coinapi import CoinApiSession, MockCoinApi, book20_msg, trade_msg

KEY = "test-key"
BTC, ETH = "BINANCE_SPOT_BTC_USDT", "BINANCE_SPOT_ETH_USDT"
SILENCE_S = 0.3
# The mock's heartbeats (every 20 ms) keep the connection itself alive; its own silence timeout is far away.
LIMITS = CoinApiLimits(silence_timeout_s=5.0, rotation_timeout_s=2.0, book_silence_s=SILENCE_S)
OFF = CoinApiLimits(silence_timeout_s=5.0, book_silence_s=None, trade_silence_s=None)


@dataclass
class Sink:
    events: list[MarketEvent] = field(default_factory=list)

    async def __call__(self, event: MarketEvent) -> None:
        self.events.append(event)

    def books(self) -> list[BookSnapshot]:
        return [e for e in self.events if isinstance(e, BookSnapshot)]


@asynccontextmanager
async def running(
    mock: MockCoinApi,
    *,
    symbol_ids: tuple[str, ...] = (BTC,),
    limits: CoinApiLimits = LIMITS,
    sink: Sink | None = None,
) -> AsyncIterator[CoinApiConnector]:
    connector = CoinApiConnector(
        KEY, list(symbol_ids), sink or Sink(), ws_url=mock.ws_url, limits=limits, backoff=fast_backoff()
    )
    connector.start()
    try:
        yield connector
    finally:
        await connector.aclose()


async def test_a_symbol_whose_book_stops_while_heartbeats_continue_reconnects() -> None:
    async def script(session: CoinApiSession) -> None:
        for n in itertools.count():
            # On the first connection BTCUSDT's book20 stops after 10 messages; its trades, ETHUSDT's book and the
            # heartbeats go on. Later connections deliver everything.
            if session.index > 0 or n < 10:
                await session.send(book20_msg(BTC, n))
            await session.send(book20_msg(ETH, n))
            await session.send(trade_msg(BTC, n + 1000 * session.index))
            await asyncio.sleep(0.02)

    async with MockCoinApi(script) as mock, running(mock, symbol_ids=(BTC, ETH)) as connector:
        await wait_for(lambda: connector.stats.connects >= 2 and connector.stats.connected)
        beats = connector.stats.heartbeats
        stats = connector.stats
        assert "book of BTCUSDT silent" in (stats.last_error or "")
        assert (stats.stale_streams, stats.connects, stats.reconnects) == (1, 2, 1)
        assert mock.connections == 2
        assert beats > SILENCE_S / 0.02 / 2  # heartbeats flowed: the socket itself never looked stale
        # The new connection's streams all flow: no second report (give it more than one threshold).
        await asyncio.sleep(SILENCE_S * 1.5)
        assert (stats.stale_streams, stats.connects) == (1, 2)


async def test_heartbeat_only_silence_does_not_reconnect_when_the_thresholds_are_off() -> None:
    # Two identical venues sending nothing but heartbeats; the connector with a book threshold is the clock.
    async with (
        MockCoinApi() as mock_on,
        MockCoinApi() as mock_off,
        running(mock_on) as on,
        running(mock_off, limits=OFF) as off,
    ):
        await wait_for(lambda: on.stats.connects >= 3)
        assert on.stats.stale_streams >= 2
        assert (off.stats.connects, off.stats.stale_streams, off.stats.reconnects) == (1, 0, 0)
        assert off.stats.connected
        assert off.stats.heartbeats > 0
        assert mock_off.connections == 1


async def test_a_make_before_break_switch_restarts_the_book_timing() -> None:
    threshold_s = 0.6
    books_after_switch = 10

    async def script(session: CoinApiSession) -> None:
        if session.index == 0:
            await session.send(book20_msg(BTC, 0))
            await asyncio.sleep(0.3)  # half the threshold without a book, then CoinAPI moves us
            await session.notice_reconnect(within_seconds=1.0)
        elif session.index == 1:
            await asyncio.sleep(0.45)  # the new subscription's first book: 0.75 s after the last, 0.45 s after it
            for n in range(1, books_after_switch + 1):
                await session.send(book20_msg(BTC, n))
                await asyncio.sleep(0.02)
            # … then this book stops too, and that silence is caught.

    limits = CoinApiLimits(silence_timeout_s=5.0, rotation_timeout_s=2.0, book_silence_s=threshold_s)
    sink = Sink()
    async with MockCoinApi(script) as mock, running(mock, limits=limits, sink=sink) as connector:
        await wait_for(lambda: connector.stats.stale_streams >= 1)
        stats = connector.stats
        # Caught only once the new subscription's books had stopped, not 0.6 s after the old one's last book.
        assert len(sink.books()) == 1 + books_after_switch
        assert "book of BTCUSDT silent" in (stats.last_error or "")
        assert (stats.rotations, stats.stale_streams) == (1, 1)
