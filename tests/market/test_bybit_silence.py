"""Per-stream silence on the Bybit connector: a quiet book topic on a live connection is resubscribed in band."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

from app.market.events import BookSnapshot, MarketEvent, Trade
from app.market.venues.bybit_client import BybitConnector, BybitLimits
from tests.market.helpers import fast_backoff, wait_for
from tests.market.mock_bybit import BybitSession, LiveBook, MockBybit, Script, trade_frame

SYMBOL = "BTCUSDT"
SILENCE_S = 0.3
# Pings and pongs every 50 ms keep the connection itself visibly alive; its own silence timeout is far away.
LIMITS = BybitLimits(
    ping_interval_s=0.05,
    pong_timeout_s=1.0,
    silence_timeout_s=5.0,
    snapshot_timeout_s=2.0,
    book_silence_s=SILENCE_S,
    max_resubscribes=100,
)
_trade_ids = itertools.count(1)


@dataclass
class Sink:
    events: list[MarketEvent] = field(default_factory=list)

    async def __call__(self, event: MarketEvent) -> None:
        self.events.append(event)

    def snapshots(self, symbol: str = SYMBOL) -> list[int]:
        """Indexes of the symbol's book snapshots among all events."""
        return [i for i, e in enumerate(self.events) if isinstance(e, BookSnapshot) and e.symbol == symbol]


def trade(symbol: str = SYMBOL) -> str:
    return trade_frame(symbol, [("Buy", "100.0", "1", str(next(_trade_ids)))])


@asynccontextmanager
async def running(
    mock: MockBybit, *, symbols: tuple[str, ...] = (SYMBOL,), limits: BybitLimits = LIMITS
) -> AsyncIterator[tuple[BybitConnector, Sink]]:
    sink = Sink()
    connector = BybitConnector(symbols, sink, ws_url=mock.ws_url, limits=limits, backoff=fast_backoff())
    connector.start()
    try:
        yield connector, sink
    finally:
        await connector.aclose()


def resubscribed(mock: MockBybit, topic: str) -> int:
    return sum(topic in r["args"] for r in mock.ops("unsubscribe"))


async def test_a_silent_book_is_resubscribed_in_band_while_pongs_and_trades_keep_flowing() -> None:
    book = LiveBook(SYMBOL, seed=5)

    async def script(session: BybitSession) -> None:
        await session.wait_subscribed()
        for _ in range(20):
            await session.send_delta(book)
            await asyncio.sleep(0.005)
        # The book topic stops; the venue keeps trading (and answering pings) on the same socket.
        while len(session.mock.ops("subscribe")) < 2:
            await session.send(trade())
            await asyncio.sleep(0.02)
        for _ in range(30):  # the new subscription's deltas continue from its snapshot
            await session.send_delta(book)
            await session.send(trade())
            await asyncio.sleep(0.005)

    async with MockBybit(script, books=[book]) as mock, running(mock) as (connector, sink):
        state = connector.books[SYMBOL]
        await wait_for(lambda: mock.scripts_done == 1 and state.synced and state.last_update_id == book.update_id)
        stats = connector.stats
        assert (stats.stale_streams, stats.resyncs) == (1, 1)
        ops = [(r["op"], r.get("args")) for r in mock.requests if r["op"] != "ping"]
        assert ops[1:] == [("unsubscribe", [book.topic]), ("subscribe", [book.topic])]
        first, fresh = sink.snapshots()  # the fresh snapshot came in band and was applied …
        assert (state.book.bids(), state.book.asks()) == book.levels()  # … and the deltas after it too
        assert (stats.connects, mock.connections, stats.stale_timeouts) == (1, 1, 0)  # no reconnect
        assert stats.pongs > 0
        silent_trades = [e for e in sink.events[first:fresh] if isinstance(e, Trade)]
        assert len(silent_trades) >= 5  # the symbol's trades kept coming while its book was silent


async def test_a_flowing_book_is_never_resubscribed_while_a_silent_one_beside_it_is() -> None:
    flowing, quiet = LiveBook("BTCUSDT", seed=3), LiveBook("ETHUSDT", seed=4)

    async def script(session: BybitSession) -> None:
        await session.wait_subscribed()
        while resubscribed(session.mock, quiet.topic) < 3:  # ETHUSDT sends its snapshots, nothing else
            await session.send_delta(flowing)
            await asyncio.sleep(0.005)

    async with (
        MockBybit(script, books=[flowing, quiet]) as mock,
        running(mock, symbols=("BTCUSDT", "ETHUSDT")) as (connector, sink),
    ):
        btc = connector.books["BTCUSDT"]
        await wait_for(lambda: mock.scripts_done == 1 and btc.last_update_id == flowing.update_id)
        assert resubscribed(mock, flowing.topic) == 0
        assert len(sink.snapshots("BTCUSDT")) == 1
        assert len(sink.snapshots("ETHUSDT")) >= 3  # one per subscription
        assert btc.synced
        assert (btc.book.bids(), btc.book.asks()) == flowing.levels()
        assert connector.stats.stale_streams >= 3
        assert connector.stats.connects == 1


def _trades_then_quiet(book: LiveBook) -> Script:
    """Each connection: a few trades, then only book deltas (a quiet market, or a dead trade topic)."""

    async def script(session: BybitSession) -> None:
        await session.wait_subscribed()
        for _ in range(5):
            await session.send(trade())
        while True:
            await session.send_delta(book)
            await asyncio.sleep(0.01)

    return script


async def test_silent_trades_reconnect_only_when_their_threshold_is_enabled() -> None:
    book_on, book_off = LiveBook(SYMBOL, seed=8), LiveBook(SYMBOL, seed=9)
    enabled = replace(LIMITS, trade_silence_s=SILENCE_S)
    async with (
        MockBybit(_trades_then_quiet(book_on), books=[book_on]) as mock_on,
        MockBybit(_trades_then_quiet(book_off), books=[book_off]) as mock_off,
        running(mock_on, limits=enabled) as (on, _),
        running(mock_off) as (off, _),  # trade_silence_s: None, the default
    ):
        # The enabled connector is the clock: by its second reconnect the other has seen as long a silence.
        await wait_for(lambda: on.stats.connects >= 3)
        assert off.stats.connects == 1
        assert off.stats.stale_streams == 0
        assert off.stats.connected
        assert on.stats.stale_streams >= 2
        assert "trades of BTCUSDT silent" in (on.stats.last_error or "")
        # The book kept flowing on both: never resubscribed.
        assert (on.stats.resyncs, off.stats.resyncs) == (0, 0)
        assert mock_on.ops("unsubscribe") == mock_off.ops("unsubscribe") == []
