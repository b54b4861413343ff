"""Bybit v5 golden frames (hand-written from the documented formats), side conventions and book continuity."""

from __future__ import annotations

import json
import random
from decimal import Decimal

import pytest

from app.market.events import BUY, SELL, BookSnapshot, BookUpdate, Liquidation, Trade
from app.market.venues.bybit import (
    BookResult,
    BybitBook,
    MalformedFrameError,
    parse_frame,
    request,
    topics,
    trade_id,
)
from tests.market.mock_bybit import LiveBook

RECEIVED = 1_700_000_000_999

TRADE = (
    '{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1672304486868,"data":['
    '{"T":1672304486865,"s":"BTCUSDT","S":"Buy","v":"0.001","p":"16578.50","L":"PlusTick",'
    '"i":"20f43950-d8dd-5b31-9112-a178eb6023af","BT":false},'
    '{"T":1672304486866,"s":"BTCUSDT","S":"Sell","v":"0.25","p":"16578.00","L":"MinusTick","i":"2290000000061666327",'
    '"BT":false}]}'
)
SNAPSHOT = (
    '{"topic":"orderbook.50.BTCUSDT","type":"snapshot","ts":1672304484978,"data":{"s":"BTCUSDT",'
    '"b":[["16493.50","0.006"],["16493.00","0.100"]],"a":[["16611.00","0.029"],["16612.00","0.213"]],'
    '"u":18521288,"seq":7961638724},"cts":1672304484976}'
)
DELTA = (
    '{"topic":"orderbook.50.BTCUSDT","type":"delta","ts":1687940967466,"data":{"s":"BTCUSDT",'
    '"b":[["16493.50","0"],["16492.00","1.5"]],"a":[],"u":18521289,"seq":7961638730},"cts":1687940967464}'
)
LIQUIDATION = (
    '{"topic":"allLiquidation.BTCUSDT","type":"snapshot","ts":1739502303204,"data":['
    '{"T":1739502302929,"s":"BTCUSDT","S":"Buy","v":"0.5","p":"96000.5"},'
    '{"T":1739502302930,"s":"BTCUSDT","S":"Sell","v":"0.25","p":"96100"}]}'
)


def test_public_trade_side_is_the_taker_side() -> None:
    buy, sell = parse_frame(TRADE, RECEIVED).events
    assert isinstance(buy, Trade)
    assert isinstance(sell, Trade)
    assert (buy.venue, buy.symbol, buy.exchange_ts, buy.receive_ts) == ("bybit", "BTCUSDT", 1672304486865, RECEIVED)
    assert (buy.price, buy.quantity, buy.side) == (16578.5, 0.001, BUY)
    assert (sell.price, sell.quantity, sell.side) == (16578.0, 0.25, SELL)
    assert sell.trade_id == 2290000000061666327


def test_uuid_trade_ids_fold_to_a_positive_63_bit_integer() -> None:
    folded = trade_id("20f43950-d8dd-5b31-9112-a178eb6023af")
    assert 0 <= folded < 2**63
    assert folded == trade_id("20F43950-D8DD-5B31-9112-A178EB6023AF")
    assert folded != trade_id("20f43950-d8dd-5b31-9112-a178eb6023b0")


def test_all_liquidation_side_is_the_position_so_buy_means_a_long_was_liquidated() -> None:
    long_liq, short_liq = parse_frame(LIQUIDATION, RECEIVED).events
    assert isinstance(long_liq, Liquidation)
    assert isinstance(short_liq, Liquidation)
    # S=Buy: a long position closed by a forced *sell* order — Binance's forceOrder would say SELL.
    assert long_liq.side == SELL
    assert long_liq.is_long_liquidation
    assert (long_liq.price, long_liq.quantity, long_liq.exchange_ts) == (96000.5, 0.5, 1739502302929)
    assert short_liq.side == BUY
    assert not short_liq.is_long_liquidation


def test_a_single_liquidation_object_is_accepted_as_well_as_a_list() -> None:
    data = json.loads(LIQUIDATION)
    data["data"] = data["data"][0]
    (event,) = parse_frame(json.dumps(data), RECEIVED).events
    assert isinstance(event, Liquidation)
    assert event.side == SELL


def test_orderbook_snapshot_and_delta() -> None:
    parsed = parse_frame(SNAPSHOT, RECEIVED)
    (snapshot,) = parsed.events
    assert isinstance(snapshot, BookSnapshot)
    assert snapshot.last_update_id == 18521288
    assert parsed.seq == 7961638724
    assert snapshot.bids == ((16493.5, 0.006), (16493.0, 0.1))
    assert snapshot.asks == ((16611.0, 0.029), (16612.0, 0.213))
    assert snapshot.exchange_ts == 1672304484978
    parsed = parse_frame(DELTA, RECEIVED)
    (delta,) = parsed.events
    assert isinstance(delta, BookUpdate)
    assert (delta.first_update_id, delta.last_update_id, delta.prev_update_id) == (18521289, 18521289, None)
    assert delta.bids == ((16493.5, 0.0), (16492.0, 1.5))
    assert delta.asks == ()


def test_update_id_one_is_a_full_book_after_a_service_restart_even_if_typed_delta() -> None:
    restart = json.loads(DELTA)
    restart["data"]["u"] = 1
    (event,) = parse_frame(json.dumps(restart), RECEIVED).events
    assert isinstance(event, BookSnapshot)
    assert event.last_update_id == 1


@pytest.mark.parametrize(
    ("raw", "op", "success", "pong"),
    [
        ('{"success":true,"ret_msg":"","conn_id":"c","req_id":"1","op":"subscribe"}', "subscribe", True, False),
        (
            '{"success":false,"ret_msg":"error:handler not found","conn_id":"c","op":"subscribe"}',
            "subscribe",
            False,
            False,
        ),
        ('{"success":true,"ret_msg":"pong","conn_id":"c","req_id":"","op":"ping"}', "ping", True, True),
        ('{"args":["1672916271846"],"op":"pong"}', "pong", True, True),
    ],
    ids=["ack", "refused", "linear-pong", "option-pong"],
)
def test_control_replies(raw: str, op: str, success: bool, pong: bool) -> None:
    control = parse_frame(raw, RECEIVED).control
    assert control is not None
    assert (control.op, control.success, control.is_pong) == (op, success, pong)


def test_requests_and_topics_follow_the_documented_shapes() -> None:
    assert topics("BTCUSDT") == ("publicTrade.BTCUSDT", "orderbook.50.BTCUSDT", "allLiquidation.BTCUSDT")
    assert json.loads(request("subscribe", topics("BTCUSDT"))) == {
        "op": "subscribe",
        "args": ["publicTrade.BTCUSDT", "orderbook.50.BTCUSDT", "allLiquidation.BTCUSDT"],
    }
    assert json.loads(request("ping", req_id="7")) == {"op": "ping", "req_id": "7"}


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1,2]",
        TRADE.replace('"S":"Buy"', '"S":"Up"'),
        TRADE.replace('"p":"16578.50"', '"p":"x"'),
        SNAPSHOT.replace('"type":"snapshot"', '"type":"weird"'),
        DELTA.replace('"u":18521289,', ""),
        LIQUIDATION.replace('"data":[', '"data":[3,'),
    ],
)
def test_malformed_frames_raise(raw: str | bytes) -> None:
    with pytest.raises(MalformedFrameError):
        parse_frame(raw, RECEIVED)


def test_unused_topics_and_unknown_messages_are_ignored() -> None:
    assert parse_frame('{"topic":"tickers.BTCUSDT","type":"snapshot","data":{}}', RECEIVED).events == ()
    parsed = parse_frame('{"hello":1}', RECEIVED)
    assert parsed.events == ()
    assert parsed.control is None


def _decimal_book(frames: list[str]) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """An independent reconstruction with Decimals: snapshot resets, deltas set absolute quantities."""
    bids: dict[Decimal, Decimal] = {}
    asks: dict[Decimal, Decimal] = {}
    for raw in frames:
        msg = json.loads(raw)
        if msg["type"] == "snapshot":
            bids.clear()
            asks.clear()
        for side, key in ((bids, "b"), (asks, "a")):
            for price, qty in msg["data"][key]:
                if Decimal(qty) == 0:
                    side.pop(Decimal(price), None)
                else:
                    side[Decimal(price)] = Decimal(qty)
    return (
        [(float(p), float(bids[p])) for p in sorted(bids, reverse=True)],
        [(float(p), float(asks[p])) for p in sorted(asks)],
    )


def _feed(book: BybitBook, raw: str) -> BookResult:
    parsed = parse_frame(raw, RECEIVED)
    (event,) = parsed.events
    if isinstance(event, BookSnapshot):
        return book.on_snapshot(event, parsed.seq)
    assert isinstance(event, BookUpdate)
    return book.on_update(event, parsed.seq)


def test_snapshot_plus_deltas_equal_an_independent_reconstruction() -> None:
    venue = LiveBook("BTCUSDT", seed=11)
    frames = [venue.snapshot()] + [venue.next_delta() for _ in range(500)]
    book = BybitBook("BTCUSDT", max_levels=200)
    results = [_feed(book, raw) for raw in frames]
    assert results[0] is BookResult.SNAPSHOT
    assert set(results[1:]) == {BookResult.APPLIED}
    assert (book.book.bids(), book.book.asks()) == _decimal_book(frames) == venue.levels()
    assert book.stats.crossed == 0
    assert book.last_update_id == venue.update_id


def test_a_skipped_update_id_is_a_gap_and_the_book_waits_for_a_snapshot() -> None:
    venue = LiveBook("BTCUSDT", seed=3)
    book = BybitBook("BTCUSDT", max_levels=200)
    _feed(book, venue.snapshot())
    assert _feed(book, venue.next_delta()) is BookResult.APPLIED
    venue.next_delta()  # lost on the wire
    assert _feed(book, venue.next_delta()) is BookResult.GAP
    assert not book.synced
    assert len(book.book) == 0
    assert _feed(book, venue.next_delta()) is BookResult.DROPPED
    assert _feed(book, venue.snapshot()) is BookResult.SNAPSHOT
    assert _feed(book, venue.next_delta()) is BookResult.APPLIED
    assert (book.book.bids(), book.book.asks()) == venue.levels()
    assert (book.stats.gaps, book.stats.dropped, book.stats.snapshots) == (1, 1, 2)


def test_replayed_deltas_are_stale_and_a_backwards_cross_sequence_is_a_gap() -> None:
    venue = LiveBook("BTCUSDT", seed=5)
    book = BybitBook("BTCUSDT", max_levels=200)
    _feed(book, venue.snapshot())
    delta = venue.next_delta()
    assert _feed(book, delta) is BookResult.APPLIED
    assert _feed(book, delta) is BookResult.STALE
    backwards = json.loads(venue.next_delta())
    backwards["data"]["seq"] = 1
    assert _feed(book, json.dumps(backwards)) is BookResult.GAP


def test_a_restart_snapshot_with_update_id_one_resets_the_book() -> None:
    venue = LiveBook("BTCUSDT", seed=9)
    book = BybitBook("BTCUSDT", max_levels=200)
    _feed(book, venue.snapshot())
    for _ in range(20):
        _feed(book, venue.next_delta())
    venue.bids = {"50.0": "1"}
    venue.asks = {"150.0": "2"}
    assert _feed(book, venue.snapshot(update_id=1)) is BookResult.SNAPSHOT
    assert (book.book.bids(), book.book.asks()) == ([(50.0, 1.0)], [(150.0, 2.0)])
    assert book.last_update_id == 1
    venue.update_id = 1
    assert _feed(book, venue.next_delta()) is BookResult.APPLIED  # u = 2 continues the restarted sequence


def test_book_fuzz_random_drops_never_corrupt_the_book() -> None:
    rng = random.Random(1)
    venue = LiveBook("BTCUSDT", seed=21)
    book = BybitBook("BTCUSDT", max_levels=200)
    _feed(book, venue.snapshot())
    for _ in range(300):
        delta = venue.next_delta()
        if rng.random() < 0.05:
            continue
        if _feed(book, delta) is BookResult.GAP:
            _feed(book, venue.snapshot())
        if book.synced:
            assert (book.book.bids(), book.book.asks()) == venue.levels()
