"""The Bybit connector against the local mock: subscription, books, resync, keepalive, stale feeds, leaks."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from app.market.events import BookSnapshot, BookUpdate, Liquidation, MarketEvent, Trade
from app.market.recovery import Backoff
from app.market.venues.bybit_client import BybitConnector, BybitLimits
from tests.market.helpers import fast_backoff, wait_for
from tests.market.mock_bybit import BybitSession, LiveBook, MockBybit, Script, liquidation_frame, trade_frame

SYMBOL = "BTCUSDT"
FAST = BybitLimits(ping_interval_s=0.05, pong_timeout_s=1.0, silence_timeout_s=2.0, snapshot_timeout_s=2.0)


@dataclass
class Sink:
    events: list[MarketEvent] = field(default_factory=list)

    async def __call__(self, event: MarketEvent) -> None:
        self.events.append(event)

    def of(self, kind: type[MarketEvent]) -> list[MarketEvent]:
        return [e for e in self.events if isinstance(e, kind)]

    def trades(self) -> list[Trade]:
        return [e for e in self.events if isinstance(e, Trade)]


@asynccontextmanager
async def running(
    mock: MockBybit, *, symbols: tuple[str, ...] = (SYMBOL,), limits: BybitLimits = FAST, backoff: Backoff | None = None
) -> AsyncIterator[tuple[BybitConnector, Sink]]:
    sink = Sink()
    connector = BybitConnector(symbols, sink, ws_url=mock.ws_url, limits=limits, backoff=backoff or fast_backoff())
    connector.start()
    try:
        yield connector, sink
    finally:
        await connector.aclose()


def deltas(book: LiveBook, count: int, *, drop: Callable[[int], bool], pause_s: float = 0.0) -> Script:
    """A script sending ``count`` deltas of ``book``, losing those for which ``drop(i)``."""

    async def script(session: BybitSession) -> None:
        await session.wait_subscribed()
        for i in range(count):
            await session.send_delta(book, drop=drop(i))
            await asyncio.sleep(pause_s)

    return script


async def test_subscribes_with_the_documented_request_and_streams_every_channel() -> None:
    book = LiveBook(SYMBOL)
    trades = [("Buy", "100.5", "0.25", "20f43950-d8dd-5b31-9112-a178eb6023af"), ("Sell", "100.0", "1.5", "42")]

    async def script(session: BybitSession) -> None:
        await session.wait_subscribed()
        await session.send(trade_frame(SYMBOL, trades))
        await session.send(liquidation_frame(SYMBOL, "Buy", "99.0", "3"))
        for _ in range(50):
            await session.send_delta(book)

    async with MockBybit(script, books=[book]) as mock, running(mock) as (connector, sink):
        # Wait for the script's end too: the subscription snapshot alone already matches the book's update id
        # (before the script has sent its trades or any delta), which let this test look too early under load.
        await wait_for(lambda: mock.scripts_done == 1 and connector.books[SYMBOL].last_update_id == book.update_id)
        assert mock.ops("subscribe")[0]["args"] == [
            "publicTrade.BTCUSDT",
            "orderbook.50.BTCUSDT",
            "allLiquidation.BTCUSDT",
        ]
        assert connector.stats.acks == 1
        assert [(t.side, t.quantity) for t in sink.trades()] == [(1, 0.25), (-1, 1.5)]
        (liquidation,) = sink.of(Liquidation)
        assert isinstance(liquidation, Liquidation)
        assert liquidation.is_long_liquidation
        assert len(sink.of(BookSnapshot)) == 1
        assert len(sink.of(BookUpdate)) == 50
        held = connector.books[SYMBOL].book
        assert (held.bids(), held.asks()) == book.levels()
        assert connector.stats.connected


async def test_a_lost_delta_resubscribes_the_book_in_band_and_recovers_the_venue_state() -> None:
    book = LiveBook(SYMBOL, seed=13)
    async with (
        MockBybit(deltas(book, 80, drop=lambda i: i == 30, pause_s=0.002), books=[book]) as mock,
        running(mock) as (connector, sink),
    ):
        state = connector.books[SYMBOL]
        await wait_for(lambda: mock.scripts_done == 1 and state.last_update_id == book.update_id)
        assert connector.stats.resyncs == 1
        assert [r["args"] for r in mock.ops("unsubscribe")] == [["orderbook.50.BTCUSDT"]]
        assert len(mock.ops("subscribe")) == 2
        assert len(sink.of(BookSnapshot)) == 2
        assert (state.book.bids(), state.book.asks()) == book.levels()
        assert connector.stats.connects == 1  # repaired without reconnecting


async def test_a_restart_snapshot_with_update_id_one_replaces_the_book_mid_stream() -> None:
    book = LiveBook(SYMBOL, seed=17)

    async def script(session: BybitSession) -> None:
        await session.wait_subscribed()
        for _ in range(10):
            await session.send_delta(book)
        book.update_id = 1  # the venue restarted: it re-sends the whole book with u = 1, then counts on from there
        book.bids = {"90.0": "4"}
        book.asks = {"110.0": "6"}
        await session.send(book.snapshot())
        for _ in range(10):
            await session.send_delta(book)

    async with MockBybit(script, books=[book]) as mock, running(mock) as (connector, sink):
        await wait_for(lambda: mock.scripts_done == 1 and connector.books[SYMBOL].last_update_id == 11)
        held = connector.books[SYMBOL].book
        assert (held.bids(), held.asks()) == book.levels()
        assert len(sink.of(BookSnapshot)) == 2
        assert connector.stats.resyncs == 0


async def test_application_pings_are_sent_on_schedule_and_pongs_counted() -> None:
    async with MockBybit(books=[LiveBook(SYMBOL)]) as mock, running(mock) as (connector, _):
        await wait_for(lambda: connector.stats.pongs >= 3)
        assert mock.pings >= 3
        assert all(r.get("req_id") for r in mock.ops("ping"))
        assert connector.stats.connects == 1
        assert connector.stats.stale_timeouts == 0


async def test_missing_pongs_mark_the_feed_stale_and_reconnect() -> None:
    limits = BybitLimits(ping_interval_s=0.02, pong_timeout_s=0.05, silence_timeout_s=5.0)
    async with (
        MockBybit(books=[LiveBook(SYMBOL)], answer_pings=False) as mock,
        running(mock, limits=limits) as (connector, _),
    ):
        await wait_for(lambda: connector.stats.connects >= 2)
        assert connector.stats.stale_timeouts >= 1
        assert connector.stats.last_error is not None


async def test_a_silent_feed_is_stale_even_without_pings() -> None:
    limits = BybitLimits(ping_interval_s=60.0, silence_timeout_s=0.1)
    async with MockBybit(books=[LiveBook(SYMBOL)]) as mock, running(mock, limits=limits) as (connector, _):
        await wait_for(lambda: connector.stats.connects >= 2)
        assert "TimeoutError" in (connector.stats.last_error or "")


async def test_a_book_without_a_snapshot_escalates_to_a_reconnect() -> None:
    limits = BybitLimits(ping_interval_s=0.02, pong_timeout_s=1.0, snapshot_timeout_s=0.05)
    async with MockBybit() as mock, running(mock, limits=limits) as (connector, _):  # the venue never sends a book
        await wait_for(lambda: connector.stats.connects >= 2)
        assert "no book snapshot for BTCUSDT" in (connector.stats.last_error or "")


async def test_repeated_gaps_past_the_resubscribe_budget_reconnect() -> None:
    book = LiveBook(SYMBOL, seed=2)
    limits = BybitLimits(ping_interval_s=60.0, max_resubscribes=0)
    async with (
        MockBybit(deltas(book, 5, drop=lambda i: i == 1), books=[book]) as mock,
        running(mock, limits=limits) as (connector, _),
    ):
        await wait_for(lambda: connector.stats.connects >= 2)
        assert "kept breaking" in (connector.stats.last_error or "")
        assert mock.ops("unsubscribe") == []


async def test_a_refused_subscription_is_surfaced_and_retried_with_backoff() -> None:
    async with (
        MockBybit(reject_topics={"allLiquidation.BTCUSDT"}) as mock,
        running(mock) as (connector, _),
    ):
        await wait_for(lambda: connector.stats.reconnects >= 3)
        assert "subscribe refused: error:handler not found" in (connector.stats.last_error or "")
        assert list(connector.stats.backoff_delays)[:3] == [0.001, 0.002, 0.004]


async def test_dropped_server_reconnects_with_exponential_backoff() -> None:
    async def drop_at_once(session: BybitSession) -> None:
        await session.wait_subscribed()
        session.drop()

    async with MockBybit(drop_at_once, books=[LiveBook(SYMBOL)]) as mock, running(mock) as (connector, _):
        await wait_for(lambda: len(connector.stats.backoff_delays) >= 7)
        # Jitter pinned at its ceiling: base·2ⁿ, capped at 16 ms; never reset (no connection was stable).
        assert list(connector.stats.backoff_delays)[:7] == [0.001, 0.002, 0.004, 0.008, 0.016, 0.016, 0.016]
        assert connector.stats.disconnects >= 7
        assert mock.connections >= 7


async def test_malformed_and_foreign_frames_are_counted_not_fatal() -> None:
    async def script(session: BybitSession) -> None:
        await session.wait_subscribed()
        await session.send("not json")
        await session.send('{"topic":"tickers.BTCUSDT","type":"snapshot","data":{}}')
        await session.send(trade_frame("ETHUSDT", [("Buy", "1", "1", "1")]))
        await session.send('{"op":"auth","success":true}')
        await session.send(trade_frame(SYMBOL, [("Sell", "1", "2", "3")]))

    async with MockBybit(script, books=[LiveBook(SYMBOL)]) as mock, running(mock) as (connector, sink):
        await wait_for(lambda: len(sink.of(Trade)) == 1)
        assert connector.stats.malformed == 1
        assert connector.stats.ignored == 3
        assert connector.stats.connects == 1


async def test_large_subscriptions_are_split_into_bounded_requests() -> None:
    limits = BybitLimits(max_topics_per_request=4, ping_interval_s=60.0)
    async with MockBybit() as mock, running(mock, symbols=("btcusdt", "ETHUSDT"), limits=limits) as (connector, _):
        await wait_for(lambda: connector.stats.acks == 2)
        assert [len(r["args"]) for r in mock.ops("subscribe")] == [4, 2]
        assert connector.symbols == ["BTCUSDT", "ETHUSDT"]
    with pytest.raises(ValueError, match="symbol"):
        BybitConnector([], Sink())


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts file descriptors through /proc")
async def test_tasks_and_fds_are_the_same_after_repeated_forced_reconnects() -> None:
    book = LiveBook(SYMBOL)
    drops = {"left": 20}

    async def script(session: BybitSession) -> None:
        await session.wait_subscribed()
        for _ in range(5):
            await session.send_delta(book)
        if drops["left"] > 0:
            drops["left"] -= 1
            session.drop()

    async with MockBybit(script, books=[book]) as mock:
        tasks_before = asyncio.all_tasks()
        fds_before = _open_fds()
        async with running(mock) as (connector, _):
            await wait_for(lambda: mock.connections >= 21)  # server-side drops mid-stream

            async def steady() -> int:
                await wait_for(lambda: connector.stats.connected and connector.books[SYMBOL].synced)
                await asyncio.sleep(0.02)
                return len(asyncio.all_tasks())

            counts = []
            for _ in range(15):  # then client-side forced reconnects
                counts.append(await steady())
                seen = mock.connections
                await connector.force_reconnect()
                await wait_for(lambda: mock.connections > seen)  # noqa: B023
            counts.append(await steady())
            assert len(set(counts)) == 1, counts
        await wait_for(lambda: asyncio.all_tasks() == tasks_before, limit_s=5.0)
        await wait_for(lambda: _open_fds() == fds_before, limit_s=5.0)
        assert connector.stats.disconnects >= 35


class _GatedOpen(BybitConnector):
    """Holds its first socket between the venue accepting it and the connector taking it as its own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.opening = asyncio.Event()
        self.release = asyncio.Event()

    async def _connect(self) -> ClientConnection:
        ws = await super()._connect()
        if not self.opening.is_set():
            self.opening.set()
            await self.release.wait()
        return ws


async def test_a_forced_reconnect_while_a_socket_is_opening_is_not_lost() -> None:
    async with MockBybit(books=[LiveBook(SYMBOL)]) as mock:
        connector = _GatedOpen([SYMBOL], Sink(), ws_url=mock.ws_url, limits=FAST, backoff=fast_backoff())
        connector.start()
        try:
            await wait_for(connector.opening.is_set)
            await wait_for(lambda: mock.connections == 1)  # the venue counts it, yet there is no socket to close
            await connector.force_reconnect()
            connector.release.set()
            await wait_for(lambda: mock.connections == 2 and connector.stats.connected)
            assert (connector.stats.connects, connector.stats.reconnects, connector.stats.disconnects) == (2, 1, 1)
        finally:
            await connector.aclose()
