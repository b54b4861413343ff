"""Per-stream silence and the snapshot cache, through the real Binance connector against the live mock venue.

The mock keeps each connection up (trades flow, so the connection-level silence timeout never fires) while one
stream misbehaves: ``mute_depth`` loses diffs while the venue's book moves, ``book_frozen`` makes the book merely
quiet, ``mute_trades`` silences the trades. Thresholds are a fraction of a second.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest

from app.config import Settings
from app.market.events import BookSnapshot, MarketEvent
from app.market.sources import Shared, build_source, source_status
from app.market.venues.binance import Market
from app.market.venues.binance_client import BinanceConnector
from app.market.venues.bybit_client import BybitConnector
from app.market.venues.coinapi_client import CoinApiConnector
from tests.market.helpers import Recorder, live_connector, wait_for
from tests.market.mock_binance_live import LiveBinance

SYMBOL = "TESTUSDT"
SILENCE_S = 0.3
SLACK_S = 1.0  # scheduling headroom on a loaded 2-core machine; the thresholds themselves are exact
DETECT_LIMIT_S = 5.0


MARKETS = pytest.mark.parametrize("market", ["spot", "futures"])


async def _synced(mock: LiveBinance, connector: BinanceConnector) -> None:
    sync = connector.syncs[SYMBOL]
    await wait_for(lambda: not sync.needs_snapshot and sync.stats.applied >= 20 and mock.market.trade_id >= 20)


def _books_equal(connector: BinanceConnector, mock: LiveBinance) -> bool:
    book = connector.syncs[SYMBOL].book
    bids, asks = mock.market.book()
    return [list(level) for level in book.bids(100)] == bids and [list(level) for level in book.asks(100)] == asks


async def _settle_book(mock: LiveBinance, connector: BinanceConnector) -> None:
    """Wait until the connector has applied the venue's last diff."""
    await wait_for(lambda: connector.syncs[SYMBOL].last_applied == mock.market.update_id)


async def _settle(mock: LiveBinance, connector: BinanceConnector) -> None:
    """Stop the market and wait until the connector has applied its last diff."""
    mock.paused = True
    await wait_for(lambda: connector.syncs[SYMBOL].last_applied == mock.market.update_id)


@MARKETS
async def test_a_depth_stream_that_lost_updates_is_resynced_in_place_from_the_probe_snapshot(market: Market) -> None:
    async with LiveBinance(SYMBOL, futures=market == "futures") as mock:
        recorder = Recorder()
        connector = live_connector(mock, recorder, market, book_silence_s=SILENCE_S)
        connector.start()
        try:
            await _synced(mock, connector)
            sync = connector.syncs[SYMBOL]
            mock.mute_depth = True  # the book moves on at the venue, its diffs never arrive
            muted_at = time.monotonic()
            await wait_for(lambda: mock.market.update_id > sync.last_applied + 10)
            mock.book_frozen = True  # ... then stands still, so the resynced book can be compared with it
            assert not _books_equal(connector, mock), "the connector's book is behind the venue's"
            await wait_for(lambda: connector.stats.stale_streams == 1, DETECT_LIMIT_S)
            detected_s = time.monotonic() - muted_at
            assert SILENCE_S - 0.05 <= detected_s <= SILENCE_S + SLACK_S
            assert _books_equal(connector, mock), "resynced to the venue's book"
            assert mock.depth_calls == 2, "the start's snapshot and the probe's: the resync reused the latter"
            assert connector.stats.snapshot_cache_hits == 1
            assert (connector.stats.connects, connector.stats.silence_reconnects) == (1, 0), "no reconnect"
            assert connector.stats.quiet_probes == 0
            assert len(recorder.of(BookSnapshot)) == 2, "the in-place resync reached the sink like any resync"
            # The stream resumes right after the probe's snapshot: it bridges, no further request.
            mock.mute_depth = mock.book_frozen = False
            await wait_for(lambda: sync.last_applied > mock.market.update_id - 50 and not sync.needs_snapshot)
            await _settle(mock, connector)
            assert _books_equal(connector, mock)
            assert mock.depth_calls == 2
            assert sync.stats.gaps == 0
            assert recorder.crossed_after == []
        finally:
            await connector.stop()


async def test_a_quiet_depth_stream_over_an_unchanged_book_is_left_alone() -> None:
    async with LiveBinance(SYMBOL) as mock:
        recorder = Recorder()
        connector = live_connector(mock, recorder, book_silence_s=SILENCE_S)
        connector.start()
        try:
            await _synced(mock, connector)
            mock.book_frozen = True  # trades go on; the book has nothing to report
            await _settle_book(mock, connector)
            await wait_for(lambda: connector.stats.quiet_probes >= 2, DETECT_LIMIT_S)  # timed again after each
            stats, sync = connector.stats, connector.syncs[SYMBOL]
            assert (stats.stale_streams, stats.silence_reconnects, stats.connects) == (0, 0, 1)
            assert sync.stats.snapshots == 1, "no resync"
            assert len(recorder.of(BookSnapshot)) == 1, "nothing re-emitted"
            assert _books_equal(connector, mock)
        finally:
            await connector.stop()


async def test_a_silent_book_is_checked_on_time_even_when_no_frame_at_all_arrives() -> None:
    async with LiveBinance(SYMBOL) as mock:
        connector = live_connector(mock, Recorder(), book_silence_s=SILENCE_S, silence_timeout_s=60.0)
        connector.start()
        try:
            await _synced(mock, connector)
            mock.paused = True  # no frame of any stream: only the reader's wake-up timer can notice
            paused_at = time.monotonic()
            await wait_for(lambda: connector.stats.quiet_probes == 1, DETECT_LIMIT_S)
            assert time.monotonic() - paused_at <= SILENCE_S + SLACK_S
            assert (connector.stats.stale_streams, connector.stats.connects) == (0, 1)
        finally:
            await connector.stop()


@dataclass
class SlowRecorder(Recorder):
    """A sink slower than the venue: the reader always has a frame waiting, so ``recv`` never suspends and its
    wake-up timer never fires — only the per-frame deadline comparison can notice a silent stream."""

    delay_s: float = 0.0

    async def __call__(self, event: MarketEvent) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        await super().__call__(event)


async def test_a_reader_that_is_always_behind_still_checks_its_streams() -> None:
    async with LiveBinance(SYMBOL) as mock:
        recorder = SlowRecorder()
        connector = live_connector(mock, recorder, book_silence_s=SILENCE_S)
        connector.start()
        try:
            await _synced(mock, connector)
            mock.book_frozen = True
            await _settle_book(mock, connector)
            recorder.delay_s = 0.005  # ~200 trades/s read while the venue makes ~500: a backlog from now on
            await wait_for(lambda: connector.stats.quiet_probes >= 1, DETECT_LIMIT_S)
            assert (connector.stats.stale_streams, connector.stats.connects) == (0, 1)
        finally:
            recorder.delay_s = 0.0
            await connector.stop()


@MARKETS
async def test_a_depth_stream_found_stale_twice_without_a_diff_reconnects(market: Market) -> None:
    async with LiveBinance(SYMBOL, futures=market == "futures") as mock:
        recorder = Recorder()
        connector = live_connector(mock, recorder, market, book_silence_s=SILENCE_S)
        connector.start()
        try:
            await _synced(mock, connector)
            mock.mute_depth = True  # dead: nothing arrives while the venue's book keeps moving
            muted_at = time.monotonic()
            await wait_for(lambda: connector.stats.stale_streams == 1, DETECT_LIMIT_S)
            assert connector.stats.connects == 1, "the first stale verdict resyncs in place"
            assert connector.stats.snapshot_cache_hits == 1
            await wait_for(lambda: connector.stats.connects == 2, DETECT_LIMIT_S)
            mock.mute_depth = False
            assert time.monotonic() - muted_at >= 2 * SILENCE_S - 0.05, "two silent periods"
            assert connector.stats.stale_streams == 2
            assert connector.stats.silence_reconnects == 1
            assert "depth stream dead" in (connector.stats.last_error or "")
            sync = connector.syncs[SYMBOL]
            await wait_for(lambda: not sync.needs_snapshot and sync.stats.applied > 0)
            await _settle(mock, connector)
            assert _books_equal(connector, mock), "the new connection's stream rebuilt the book"
        finally:
            await connector.stop()


async def test_a_diff_arriving_while_the_probe_is_in_flight_voids_its_verdict() -> None:
    async with LiveBinance(SYMBOL) as mock:
        recorder = Recorder()
        connector = live_connector(mock, recorder, book_silence_s=SILENCE_S)
        connector.start()
        try:
            await _synced(mock, connector)
            mock.depth_delay_s = 0.3
            mock.mute_depth = True  # diffs are lost: the probe's book would be found stale ...
            await wait_for(lambda: mock.depth_calls == 2, DETECT_LIMIT_S)  # the probe's request is at the venue
            mock.mute_depth = False  # ... but the stream speaks again before the answer: no verdict
            sync = connector.syncs[SYMBOL]
            await wait_for(lambda: connector.stats.snapshot_requests == 2 and not connector.recovery.in_flight)
            assert (connector.stats.stale_streams, connector.stats.quiet_probes) == (0, 0)
            assert sync.stats.gaps == 1, "the diff after the lost ones was a gap: an ordinary resync ..."
            assert connector.stats.snapshot_cache_hits == 1, "... from the probe's snapshot, which bridges it"
            assert connector.stats.connects == 1
            await _settle(mock, connector)
            assert _books_equal(connector, mock)
        finally:
            await connector.stop()


@MARKETS
async def test_a_cached_snapshot_that_bridges_serves_a_resync_after_a_reconnect_without_rest(market: Market) -> None:
    async with LiveBinance(SYMBOL, futures=market == "futures") as mock:
        connector = live_connector(mock, Recorder(), market, book_silence_s=SILENCE_S, snapshot_cache_s=60.0)
        connector.start()
        try:
            await _synced(mock, connector)
            mock.book_frozen = True
            await _settle_book(mock, connector)
            await wait_for(lambda: connector.stats.quiet_probes == 1, DETECT_LIMIT_S)  # caches the current book
            cached_id = mock.market.update_id
            await connector.force_reconnect()
            await wait_for(lambda: connector.stats.connects == 2)
            mock.book_frozen = False  # the new connection's first diff continues the cached snapshot
            sync = connector.syncs[SYMBOL]
            await wait_for(lambda: not sync.needs_snapshot and sync.last_applied > cached_id)
            assert mock.depth_calls == 2, "the start's snapshot and the probe's; none after the reconnect"
            assert (connector.stats.snapshot_cache_hits, connector.stats.snapshot_cache_misses) == (1, 1)
            await _settle(mock, connector)
            assert _books_equal(connector, mock)
            assert (connector.stats.quiet_probes, connector.stats.stale_streams) == (1, 0)
        finally:
            await connector.stop()


async def test_a_cached_snapshot_the_stream_has_moved_past_is_not_used() -> None:
    async with LiveBinance(SYMBOL) as mock:
        connector = live_connector(mock, Recorder(), book_silence_s=SILENCE_S, snapshot_cache_s=60.0)
        connector.start()
        try:
            await _synced(mock, connector)
            mock.book_frozen = True
            await _settle_book(mock, connector)
            await wait_for(lambda: connector.stats.quiet_probes == 1, DETECT_LIMIT_S)
            cached_id = mock.market.update_id
            mock.book_frozen = False  # the book moves past the cached snapshot before the reconnect
            sync = connector.syncs[SYMBOL]
            await wait_for(lambda: sync.last_applied > cached_id + 10)
            await connector.force_reconnect()
            await wait_for(lambda: connector.stats.connects == 2 and not sync.needs_snapshot and sync.stats.applied > 0)
            assert mock.depth_calls == 3, "a fresh snapshot: the young cached one cannot bridge the new diffs"
            assert (connector.stats.snapshot_cache_hits, connector.stats.snapshot_cache_misses) == (0, 2)
            assert sync.stats.gaps == 0, "the stale snapshot was never applied"
            await _settle(mock, connector)
            assert _books_equal(connector, mock)
        finally:
            await connector.stop()


async def test_a_silent_trade_stream_reconnects_when_its_threshold_is_set() -> None:
    async with LiveBinance(SYMBOL) as mock:
        connector = live_connector(mock, Recorder(), trade_silence_s=SILENCE_S)
        connector.start()
        try:
            await _synced(mock, connector)
            mock.mute_trades = True  # depth diffs go on: the connection itself looks alive
            muted_at = time.monotonic()
            await wait_for(lambda: connector.stats.connects == 2, DETECT_LIMIT_S)
            assert SILENCE_S - 0.05 <= time.monotonic() - muted_at <= SILENCE_S + SLACK_S
            assert connector.stats.silence_reconnects >= 1
            assert "trade stream silent" in (connector.stats.last_error or "")
            assert connector.stats.stale_streams == 0
        finally:
            await connector.stop()


async def test_a_silent_trade_stream_is_left_alone_by_default() -> None:
    async with LiveBinance(SYMBOL) as mock:
        connector = live_connector(mock, Recorder(), book_silence_s=SILENCE_S)
        assert connector.limits.trade_silence_s is None
        connector.start()
        try:
            await _synced(mock, connector)
            mock.mute_trades = True
            await asyncio.sleep(3 * SILENCE_S)  # three would-be thresholds; nothing to poll for when nothing happens
            stats = connector.stats
            assert (stats.connects, stats.silence_reconnects) == (1, 0)
            assert (stats.stale_streams, stats.quiet_probes) == (0, 0), "the depth stream flowed: never probed"
        finally:
            await connector.stop()


async def _ignore(event: MarketEvent) -> None:
    return None


@pytest.mark.parametrize(
    ("book_s", "trade_s", "cache_s", "expected"),
    [(30.0, 0.0, 10.0, (30.0, None, 10.0)), (0.0, 5.0, 0.0, (None, 5.0, 0.0))],
    ids=["defaults", "book-off-trades-on-cache-off"],
)
async def test_silence_and_cache_settings_reach_everylive_connector(
    monkeypatch: pytest.MonkeyPatch,
    book_s: float,
    trade_s: float,
    cache_s: float,
    expected: tuple[float | None, float | None, float],
) -> None:
    monkeypatch.setenv("DELTAFLOW_MARKET_BOOK_SILENCE_SECONDS", str(book_s))
    monkeypatch.setenv("DELTAFLOW_MARKET_TRADE_SILENCE_SECONDS", str(trade_s))
    monkeypatch.setenv("DELTAFLOW_MARKET_SNAPSHOT_CACHE_SECONDS", str(cache_s))
    settings = Settings(_env_file=None, coinapi_api_key="k")  # type: ignore[arg-type]
    shared = Shared()
    try:
        binance = build_source(settings, "binance-futures", "BTCUSDT", _ignore, shared)
        bybit = build_source(settings, "bybit", "BTCUSDT", _ignore, shared)
        coinapi = build_source(settings, "coinapi", "BTCUSDT", _ignore, shared)
    finally:
        await shared.http.aclose()
    assert isinstance(binance, BinanceConnector)
    assert (binance.limits.book_silence_s, binance.limits.trade_silence_s, binance.limits.snapshot_cache_s) == expected
    assert isinstance(bybit, BybitConnector)
    assert isinstance(coinapi, CoinApiConnector)
    for limits in (bybit.limits, coinapi.limits):
        assert (limits.book_silence_s, limits.trade_silence_s) == expected[:2]
    status = source_status(binance)
    assert (status["stale_streams"], status["quiet_probes"], status["snapshot_cache_hits"]) == (0, 0, 0)
