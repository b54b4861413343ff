"""Binance connection rotation, make-before-break, against a live mock venue whose connections overlap with the
same ids: on a ``serverShutdown`` notice and at the connection age limit (the 24 h limit, set to under a second)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import pytest

from app.market.events import BookUpdate, MarketEvent, Trade
from app.market.venues.binance import is_server_shutdown
from app.market.venues.binance_client import BinanceConnector, ConnectorLimits
from tests.market.helpers import GatedConnect, Recorder, fast_backoff, live_connector, wait_for
from tests.market.mock_binance_live import LiveBinance

SYMBOL = "TESTUSDT"


@dataclass
class SlowRecorder(Recorder):
    """A sink slower than the venue: the reader falls behind and the old connection holds a backlog when a
    rotation starts (what the catch-up rule exists for)."""

    delay_s: float = 0.0

    async def __call__(self, event: MarketEvent) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        await super().__call__(event)


async def _settle(mock: LiveBinance, connector: BinanceConnector) -> None:
    """Stop the market and wait until the connector has applied its last diff."""
    mock.paused = True
    await wait_for(lambda: connector.syncs[SYMBOL].last_applied == mock.market.update_id)


def _assert_exactly_once(recorder: Recorder, mock: LiveBinance) -> None:
    ids = [t.trade_id for t in recorder.of(Trade) if isinstance(t, Trade)]
    assert ids, "trades flowed"
    # Every trade the venue made from the first one received on is delivered exactly once, in order.
    assert ids == list(range(ids[0], mock.market.trade_id + 1))


def _assert_book_followed(recorder: Recorder, connector: BinanceConnector, mock: LiveBinance) -> None:
    sync = connector.syncs[SYMBOL]
    bids, asks = mock.market.book()
    assert [list(level) for level in sync.book.bids(100)] == bids
    assert [list(level) for level in sync.book.asks(100)] == asks
    assert sync.stats.gaps == 0, "the new stream bridged the book: no resync"
    assert mock.depth_calls == 1, "one REST snapshot, at the start, for all the switches"
    assert recorder.crossed_after == []
    diffs = [e.last_update_id for e in recorder.of(BookUpdate) if isinstance(e, BookUpdate)]
    assert diffs == sorted(set(diffs)), "no diff emitted twice or out of order"


async def test_server_shutdown_rotates_make_before_break_with_every_trade_exactly_once() -> None:
    async with LiveBinance(SYMBOL) as mock:
        recorder = Recorder()
        connector = live_connector(mock, recorder)
        connector.start()
        try:
            await wait_for(lambda: len(recorder.of(Trade)) >= 50 and not connector.syncs[SYMBOL].needs_snapshot)
            await mock.server_shutdown(grace_s=1.0)
            await wait_for(lambda: connector.stats.rotations == 1)
            traded = mock.market.trade_id
            await wait_for(lambda: mock.market.trade_id >= traded + 100 and len(mock.live) == 1)
            await _settle(mock, connector)
            assert connector.stats.disconnects == 0, "a rotation is not a reconnect"
        finally:
            await connector.stop()
    assert connector.stats.server_shutdowns == 1
    assert connector.stats.rotations_forced == 0
    assert mock.connections == 2
    assert mock.max_concurrent == 2, "the new connection was open before the old one closed"
    assert connector.stats.duplicates > 0, "both connections delivered the overlap"
    _assert_exactly_once(recorder, mock)
    _assert_book_followed(recorder, connector, mock)


@pytest.mark.parametrize("delay_s", [0.0, 0.001], ids=["keeping-up", "lagging-reader"])
async def test_the_connection_age_limit_rotates_repeatedly_without_loss_or_double_counting(delay_s: float) -> None:
    async with LiveBinance(SYMBOL) as mock:
        recorder = SlowRecorder(delay_s=delay_s)
        # The 24 h limit, scaled down: every 0.3 s the connection is replaced before "the venue" would cut it.
        connector = live_connector(mock, recorder, max_connection_age_s=0.3)
        connector.start()
        rotating = False
        try:
            await wait_for(lambda: connector.stats.rotations >= 5)
            await _settle(mock, connector)
            assert connector.stats.disconnects == 0
            # Rotations go on every 0.3 s: one may have opened its socket and be abandoned by the stop below.
            rotating = connector._rotation is not None
        finally:
            await connector.stop()
    assert connector.stats.rotations_forced == 0
    # Every connection became the primary in turn, but for one a stop may have abandoned mid-rotation.
    assert connector.stats.rotations + 1 <= mock.connections <= connector.stats.rotations + 1 + rotating
    assert mock.max_concurrent == 2, "never more than the old and the new connection"
    _assert_exactly_once(recorder, mock)
    _assert_book_followed(recorder, connector, mock)


async def test_a_rotation_that_cannot_connect_keeps_the_old_connection() -> None:
    async with LiveBinance(SYMBOL) as mock:
        recorder = Recorder()
        connector = live_connector(mock, recorder, max_connection_age_s=0.2, rotation_timeout_s=0.2)
        connector.start()
        try:
            await wait_for(lambda: len(recorder.of(Trade)) >= 20)
            mock.refusing = True  # the venue accepts no new connection: the rotation fails, the old one carries on
            await wait_for(lambda: connector.stats.rotation_failures >= 2)
            assert connector.stats.connected
            assert mock.connections == 1
            mock.refusing = False
            await wait_for(lambda: connector.stats.rotations >= 1)
            await _settle(mock, connector)
            assert connector.stats.disconnects == 0
        finally:
            await connector.stop()
    _assert_exactly_once(recorder, mock)


async def test_a_forced_reconnect_while_a_rotation_opens_its_socket_ends_both_connections() -> None:
    async with LiveBinance(SYMBOL) as mock:
        recorder = Recorder()
        connector = GatedConnect(
            2,  # the rotation's socket
            "spot",
            [SYMBOL],
            recorder,
            ws_url=mock.ws_url,
            rest_url=mock.rest_url,
            limits=ConnectorLimits(min_resync_interval_s=0.01),
            backoff=fast_backoff(),
        )
        recorder.connector = connector
        connector.start()
        try:
            await wait_for(lambda: connector.stats.connected and not connector.syncs[SYMBOL].needs_snapshot)
            await mock.server_shutdown(grace_s=60.0)  # the venue leaves the switch to the connector
            await wait_for(connector.opening.is_set)
            await connector.force_reconnect()
            connector.release.set()
            # The switch must not take over: its socket was opened before the request.
            await wait_for(lambda: mock.connections == 3 and connector.stats.connected and len(mock.live) == 1)
            assert (connector.stats.rotations, connector.stats.disconnects) == (0, 1)
        finally:
            await connector.stop()


@pytest.mark.parametrize(
    ("frame", "shutdown"),
    [
        ({"e": "serverShutdown", "E": 1}, True),
        ({"stream": "x", "data": {"e": "serverShutdown", "E": 1}}, True),
        ({"event": {"e": "serverShutdown", "E": 1}}, True),  # the WebSocket API's documented shape
        ({"e": "bookTicker"}, False),
        ([1], False),
    ],
)
def test_server_shutdown_is_recognised_in_every_documented_shape(frame: object, shutdown: bool) -> None:
    assert is_server_shutdown(json.dumps(frame)) is shutdown
    assert is_server_shutdown("{not json") is False
