"""Binance wire parsing and the pure book synchroniser (spot U-continuity, futures pu-continuity)."""

from __future__ import annotations

import orjson
import pytest

from app.market.events import BUY, SELL, BookSnapshot, BookUpdate, Kline, Liquidation, Trade
from app.market.venues.binance import (
    MalformedFrameError,
    depth_url,
    parse_depth_snapshot,
    parse_frame,
    stream_url,
)
from app.market.venues.binance_sync import BookSynchroniser, DiffResult, SyncState


def _frame(stream: str, data: dict[str, object]) -> bytes:
    return orjson.dumps({"stream": stream, "data": data})


def _diff(first: int, last: int, prev: int | None = None, bid: float = 10.0) -> BookUpdate:
    return BookUpdate("binance", "X", 0, 0, first, last, prev, ((bid, 1.0),), ((20.0, 1.0),))


def _snap(last_id: int) -> BookSnapshot:
    return BookSnapshot("binance", "X", 0, 0, last_id, ((9.0, 1.0),), ((21.0, 1.0),))


def _state(sync: BookSynchroniser) -> SyncState:
    return sync.state  # a call, so mypy does not keep an earlier narrowing of the attribute


def test_agg_trade_maker_flag_sets_the_taker_side() -> None:
    data = {"e": "aggTrade", "E": 5, "s": "BTCUSDT", "a": 7, "p": "1.5", "q": "2", "T": 4, "m": True}
    sold = parse_frame(_frame("btcusdt@aggTrade", data), "binance", 9)
    assert sold == Trade("binance", "BTCUSDT", 4, 9, 1.5, 2.0, SELL, 7)
    bought = parse_frame(_frame("btcusdt@aggTrade", {**data, "m": False}), "binance", 9)
    assert isinstance(bought, Trade)
    assert bought.side == BUY


def test_depth_update_keeps_pu_when_present() -> None:
    data = {"e": "depthUpdate", "E": 1, "s": "X", "U": 5, "u": 8, "pu": 3, "b": [["1.0", "2"]], "a": []}
    update = parse_frame(_frame("x@depth@100ms", data), "binance-futures", 2)
    assert update == BookUpdate("binance-futures", "X", 1, 2, 5, 8, 3, ((1.0, 2.0),), ())


def test_kline_carries_taker_buy_volume() -> None:
    k = {"t": 60_000, "T": 119_999, "i": "1m", "f": 1, "L": 3, "o": "1", "c": "2", "h": "3", "l": "0.5"}
    k |= {"v": "10", "n": 3, "x": True, "V": "4"}
    kline = parse_frame(_frame("x@kline_1m", {"e": "kline", "E": 7, "s": "X", "k": k}), "binance", 8)
    assert isinstance(kline, Kline)
    assert (kline.open, kline.high, kline.low, kline.close, kline.volume, kline.buy_volume) == (1, 3, 0.5, 2, 10, 4)
    assert kline.closed
    assert kline.trade_count == 3
    assert (kline.first_trade_id, kline.last_trade_id) == (1, 3)


def test_force_order_is_a_liquidation_at_the_filled_average_price() -> None:
    # The example from Binance's USDⓈ-M "Liquidation Order Streams" documentation.
    order: dict[str, object] = {
        "s": "BTCUSDT",
        "S": "SELL",
        "o": "LIMIT",
        "f": "IOC",
        "q": "0.014",
        "p": "9910",
        "ap": "9910",
    }
    order |= {"X": "FILLED", "l": "0.014", "z": "0.014", "T": 1568014460893}
    data = {"e": "forceOrder", "E": 1568014460893, "o": order}
    liq = parse_frame(_frame("btcusdt@forceOrder", data), "binance-futures", 1)
    assert liq == Liquidation("binance-futures", "BTCUSDT", 1568014460893, 1, 9910.0, 0.014, SELL)
    assert isinstance(liq, Liquidation)
    assert liq.is_long_liquidation
    unfilled = {**order, "S": "BUY", "z": "0", "p": "9000", "q": "1"}
    short = parse_frame(_frame("x", {"e": "forceOrder", "E": 3, "o": unfilled}), "binance-futures", 1)
    assert isinstance(short, Liquidation)
    assert (short.price, short.quantity, short.side) == (9000.0, 1.0, BUY)


def test_unused_streams_are_ignored_and_garbage_is_malformed() -> None:
    ticker = _frame("x@bookTicker", {"u": 1, "s": "X", "b": "1", "B": "1", "a": "2", "A": "1"})
    assert parse_frame(ticker, "binance", 0) is None
    for bad in (b"not json", b'{"stream":"x","data":[1]}', b'{"e":"aggTrade","s":"X"}', b"[1]"):
        with pytest.raises(MalformedFrameError):
            parse_frame(bad, "binance", 0)


def test_depth_snapshot_parsing_and_urls() -> None:
    body = b'{"lastUpdateId":5,"E":9,"bids":[["1.0","2.0"]],"asks":[["3.0","4.0"]]}'
    assert parse_depth_snapshot(body, "binance-futures", "x", 1) == BookSnapshot(
        "binance-futures", "X", 9, 1, 5, ((1.0, 2.0),), ((3.0, 4.0),)
    )
    with pytest.raises(MalformedFrameError):
        parse_depth_snapshot(b'{"bids":[]}', "binance", "X", 1)
    assert stream_url("ws://h:1/", ["BTCUSDT"], ["aggTrade", "depth@100ms"]) == (
        "ws://h:1/stream?streams=btcusdt@aggTrade/btcusdt@depth@100ms"
    )
    assert depth_url("http://h/", "futures", "btcusdt", 1000) == "http://h/fapi/v1/depth?symbol=BTCUSDT&limit=1000"


def test_spot_sync_drops_stale_bridges_and_follows_u_continuity() -> None:
    sync = BookSynchroniser("spot", "X")
    assert sync.needs_snapshot
    assert sync.on_diff(_diff(95, 99)) is DiffResult.BUFFERED
    assert sync.on_diff(_diff(100, 100)) is DiffResult.BUFFERED  # u == lastUpdateId: stale on spot
    assert sync.on_diff(_diff(101, 104)) is DiffResult.BUFFERED
    applied = sync.on_snapshot(_snap(100))
    assert [u.last_update_id for u in applied] == [104]
    assert sync.state is SyncState.SYNCED
    assert sync.stats.stale == 2
    assert sync.on_diff(_diff(105, 106)) is DiffResult.APPLIED
    assert sync.on_diff(_diff(100, 106)) is DiffResult.STALE  # a duplicate
    assert sync.on_diff(_diff(108, 109)) is DiffResult.GAP
    assert sync.needs_snapshot
    assert sync.buffered == 1
    assert sync.stats.gaps == 1
    assert sync.on_snapshot(_snap(109)) == []
    assert _state(sync) is SyncState.AWAITING_BRIDGE
    assert sync.on_snapshot(_snap(200)) == []  # not awaited: ignored
    assert sync.on_diff(_diff(110, 111)) is DiffResult.APPLIED
    assert sync.book.last_update_id == 111


def test_spot_snapshot_older_than_the_buffer_is_a_gap_and_keeps_the_buffer() -> None:
    sync = BookSynchroniser("spot", "X")
    sync.on_diff(_diff(105, 110))
    sync.on_diff(_diff(111, 112))
    assert sync.on_snapshot(_snap(100)) == []
    assert sync.needs_snapshot
    assert sync.buffered == 2
    assert [u.last_update_id for u in sync.on_snapshot(_snap(108))] == [110, 112]


def test_spot_first_diff_after_snapshot_must_bridge() -> None:
    sync = BookSynchroniser("spot", "X")
    sync.on_diff(_diff(50, 60))
    sync.on_snapshot(_snap(100))
    assert sync.state is SyncState.AWAITING_BRIDGE
    assert sync.on_diff(_diff(103, 104)) is DiffResult.GAP


def test_futures_bridges_by_the_pu_rule_when_ids_are_shared_across_symbols() -> None:
    # Snapshot 100 lands between this symbol's diffs (ids 97-99, then 104-106): U > lastUpdateId, pu <= it.
    sync = BookSynchroniser("futures", "X")
    sync.on_diff(_diff(97, 99, prev=90))
    sync.on_diff(_diff(104, 106, prev=99))
    assert [u.last_update_id for u in sync.on_snapshot(_snap(100))] == [106]
    assert sync.on_diff(_diff(110, 112, prev=106)) is DiffResult.APPLIED
    assert sync.on_diff(_diff(120, 121, prev=113)) is DiffResult.GAP
    assert sync.on_diff(_diff(125, 126, prev=121)) is DiffResult.BUFFERED


def test_futures_keeps_the_diff_ending_at_the_snapshot_and_rejects_a_missed_bridge() -> None:
    sync = BookSynchroniser("futures", "X")
    sync.on_diff(_diff(95, 100, prev=90))
    assert len(sync.on_snapshot(_snap(100))) == 1  # u == lastUpdateId: U <= lastUpdateId <= u
    other = BookSynchroniser("futures", "X")
    other.on_diff(_diff(104, 106, prev=102))  # pu > lastUpdateId: a diff between was missed
    other.on_snapshot(_snap(100))
    assert other.needs_snapshot
    assert other.stats.gaps == 1


def test_pre_snapshot_buffer_is_bounded_and_overflow_forces_a_resync() -> None:
    sync = BookSynchroniser("spot", "X", max_buffered_diffs=3)
    results = [sync.on_diff(_diff(i, i)) for i in range(1, 6)]
    assert results == [DiffResult.BUFFERED] * 3 + [DiffResult.OVERFLOW, DiffResult.BUFFERED]
    assert sync.buffered == 2
    assert sync.stats.overflows == 1
    assert sync.stats.resyncs == 1
    with pytest.raises(ValueError, match="max_buffered_diffs"):
        BookSynchroniser("spot", "X", max_buffered_diffs=0)


def test_crossing_diffs_are_counted_and_reset_clears_everything() -> None:
    sync = BookSynchroniser("spot", "X")
    sync.on_diff(_diff(101, 101, bid=25.0))  # bid above the 21.0 ask: crossed
    sync.on_snapshot(_snap(100))
    assert sync.stats.crossed == 1
    sync.reset()
    assert sync.needs_snapshot
    assert len(sync.book) == 0
    assert sync.buffered == 0
