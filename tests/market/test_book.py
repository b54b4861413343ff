"""OrderBook: levels, removal, bounds, crossing, top-of-book measures."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.market.book import OrderBook
from app.market.events import BookSnapshot, BookUpdate, Level


def _snapshot(bids: list[Level], asks: list[Level], last_id: int = 10) -> BookSnapshot:
    return BookSnapshot("sim", "X", 0, 0, last_id, tuple(bids), tuple(asks))


def _update(bids: list[Level], asks: list[Level], last_id: int = 11) -> BookUpdate:
    return BookUpdate("sim", "X", 0, 0, last_id, last_id, None, tuple(bids), tuple(asks))


def test_snapshot_then_diff_sets_removes_and_orders_levels() -> None:
    book = OrderBook()
    book.apply_snapshot(_snapshot([(99.0, 1.0), (100.0, 2.0)], [(101.0, 3.0), (102.0, 4.0)]))
    book.apply_update(_update([(100.0, 0.0), (98.5, 7.0)], [(101.0, 5.0), (103.0, 1.0)]))
    assert book.bids() == [(99.0, 1.0), (98.5, 7.0)]
    assert book.asks() == [(101.0, 5.0), (102.0, 4.0), (103.0, 1.0)]
    assert book.last_update_id == 11
    assert len(book) == 5


def test_removing_an_absent_level_is_a_no_op() -> None:
    book = OrderBook()
    book.set_levels([(1.0, 0.0)], [(2.0, 0.0)])
    assert book.bids() == []
    assert book.asks() == []
    assert book.best_bid is None
    assert book.best_ask is None
    assert not book.is_crossed


def test_snapshot_replaces_the_whole_book() -> None:
    book = OrderBook()
    book.apply_snapshot(_snapshot([(1.0, 1.0)], [(3.0, 1.0)]))
    book.apply_snapshot(_snapshot([(2.0, 1.0)], [(4.0, 1.0)], last_id=20))
    assert book.bids() == [(2.0, 1.0)]
    assert book.asks() == [(4.0, 1.0)]
    assert book.last_update_id == 20


def test_crossed_book_is_detected() -> None:
    book = OrderBook()
    book.set_levels([(100.0, 1.0)], [(101.0, 1.0)])
    assert not book.is_crossed
    book.set_levels([(101.0, 1.0)], [])
    assert book.is_crossed


def test_book_is_bounded_by_dropping_levels_furthest_from_the_touch() -> None:
    book = OrderBook(max_levels=3)
    book.set_levels([(float(p), 1.0) for p in range(90, 100)], [(float(p), 1.0) for p in range(101, 111)])
    assert [p for p, _ in book.bids()] == [99.0, 98.0, 97.0]
    assert [p for p, _ in book.asks()] == [101.0, 102.0, 103.0]
    with pytest.raises(ValueError, match="max_levels"):
        OrderBook(max_levels=0)


def test_top_of_book_reports_spread_mid_and_imbalance() -> None:
    book = OrderBook()
    book.set_levels([(99.0, 3.0), (98.0, 1.0), (97.0, 100.0)], [(101.0, 1.0), (102.0, 1.0)])
    top = book.top(depth=2)
    assert top.bids == ((99.0, 3.0), (98.0, 1.0))
    assert top.asks == ((101.0, 1.0), (102.0, 1.0))
    assert (top.best_bid, top.best_ask, top.spread, top.mid) == (99.0, 101.0, 2.0, 100.0)
    assert top.imbalance == pytest.approx((4 - 2) / 6)
    assert book.bids(0) == []
    assert book.asks(0) == []


def test_empty_book_has_no_top_measures() -> None:
    top = OrderBook().top()
    assert top.best_bid is None
    assert top.spread is None
    assert top.mid is None
    assert top.imbalance is None


prices = st.integers(min_value=1, max_value=60).map(float)
quantities = st.sampled_from([0.0, 0.5, 1.0, 2.0])


@given(st.lists(st.tuples(st.booleans(), prices, quantities), max_size=200), st.integers(1, 20))
def test_book_matches_a_plain_dict_model(ops: list[tuple[bool, float, float]], max_levels: int) -> None:
    book = OrderBook(max_levels=max_levels)
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    for is_bid, price, qty in ops:
        side = bids if is_bid else asks
        if qty == 0:
            side.pop(price, None)
        else:
            side[price] = qty
        book.set_levels([(price, qty)] if is_bid else [], [] if is_bid else [(price, qty)])
        # The model applies the same bound: keep the best max_levels of each side.
        for drop in sorted(bids, reverse=True)[max_levels:]:
            del bids[drop]
        for drop in sorted(asks)[max_levels:]:
            del asks[drop]
    assert book.bids() == sorted(bids.items(), reverse=True)
    assert book.asks() == sorted(asks.items())
