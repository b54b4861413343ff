"""The pure parts of Binance book recovery: the bridging rule a cached snapshot must pass, the snapshot cache, the
probe's book comparison, and the StreamSilence additions (rearm, last_seen) the probes rely on."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.market.book import OrderBook
from app.market.events import BookSnapshot, BookUpdate
from app.market.silence import BOOK, StreamSilence
from app.market.venues.binance import Market
from app.market.venues.binance_recovery import book_matches
from app.market.venues.binance_snapshots import SnapshotCache
from app.market.venues.binance_sync import BookSynchroniser


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _diff(first: int, last: int, prev: int | None = None) -> BookUpdate:
    return BookUpdate("binance", "X", 0, 0, first, last, prev, ((10.0, 1.0),), ((20.0, 1.0),))


def _snap(last_id: int, symbol: str = "X") -> BookSnapshot:
    return BookSnapshot("binance", symbol, 0, 0, last_id, ((9.0, 1.0),), ((21.0, 1.0),))


def _buffering(market: Market, *diffs: BookUpdate) -> BookSynchroniser:
    sync = BookSynchroniser(market, "X")
    for diff in diffs:
        sync.on_diff(diff)
    return sync


@pytest.mark.parametrize(
    ("last_update_id", "bridges"),
    [
        (99, False),  # older than the first buffered diff (U=101 > 99 + 1): the updates in between were never seen
        (100, True),  # U = lastUpdateId + 1: the documented bridge
        (104, True),  # inside the first diff (U <= lastUpdateId + 1 <= u)
        (105, True),  # contains the first diff (u <= lastUpdateId): it is dropped, the second (U=106) bridges
        (150, True),  # newer than everything buffered: nothing to bridge yet, the next live diff is held to the rule
    ],
)
def test_spot_bridging_rule(last_update_id: int, bridges: bool) -> None:
    sync = _buffering("spot", _diff(101, 105), _diff(106, 110))
    assert sync.can_bridge(last_update_id) is bridges
    sync.on_snapshot(_snap(last_update_id))
    # The rule agrees with what on_snapshot then does with the buffer.
    assert sync.needs_snapshot is not bridges


@pytest.mark.parametrize(
    ("diffs", "last_update_id", "bridges"),
    [
        ((_diff(101, 105, 95),), 94, False),  # before both U and pu
        ((_diff(101, 105, 95),), 95, True),  # the pu rule: ids are shared across symbols, nothing of X in (95, 101)
        ((_diff(101, 105, 95),), 100, True),  # U <= lastUpdateId <= u would need 101; pu covers it
        ((_diff(101, 105, None),), 100, False),  # no pu to fall back on: U=101 > 100
        ((_diff(101, 105, 95),), 105, True),  # u == lastUpdateId is not stale on futures: applied, U <= 105
        ((_diff(101, 105, 95), _diff(120, 125, 105)), 110, True),  # first diff contained; the second bridges by pu
        ((_diff(101, 105, 95), _diff(120, 125, 115)), 112, False),  # pu=115 and U=120 both past 112
    ],
)
def test_futures_bridging_rule(diffs: tuple[BookUpdate, ...], last_update_id: int, bridges: bool) -> None:
    sync = _buffering("futures", *diffs)
    assert sync.can_bridge(last_update_id) is bridges
    sync.on_snapshot(_snap(last_update_id))
    assert sync.needs_snapshot is not bridges


def test_an_empty_buffer_accepts_any_snapshot_and_holds_the_next_diff_to_the_rule() -> None:
    sync = BookSynchroniser("spot", "X")
    assert sync.can_bridge(1)
    sync.on_snapshot(_snap(100))
    sync.on_diff(_diff(150, 160))  # does not continue the snapshot: a gap, back to REST
    assert sync.needs_snapshot


def test_a_book_that_awaits_no_snapshot_takes_none() -> None:
    sync = _buffering("spot", _diff(101, 105))
    sync.on_snapshot(_snap(100))
    assert not sync.needs_snapshot
    assert not sync.can_bridge(105)


@given(
    start=st.integers(1, 1000),
    widths=st.lists(st.integers(0, 5), min_size=0, max_size=8),
    offset=st.integers(-20, 60),
)
def test_spot_rule_agrees_with_on_snapshot_for_any_contiguous_buffer(
    start: int, widths: list[int], offset: int
) -> None:
    sync = BookSynchroniser("spot", "X")
    first = start
    for width in widths:
        sync.on_diff(_diff(first, first + width))
        first += width + 1
    last_update_id = max(0, start + offset)
    bridges = sync.can_bridge(last_update_id)
    sync.on_snapshot(_snap(last_update_id))
    assert sync.needs_snapshot is not bridges


def test_the_cache_serves_a_snapshot_only_while_it_is_young_and_bridges() -> None:
    clock = FakeClock()
    cache = SnapshotCache(10.0, clock)
    cache.put(_snap(100))
    assert cache.usable(_buffering("spot", _diff(101, 105))) == _snap(100)
    assert cache.usable(_buffering("spot", _diff(101, 105))) == _snap(100), "kept after use: a second resync may too"
    assert cache.usable(_buffering("spot", _diff(102, 105))) is None, "cannot bridge: one update was never seen"
    assert cache.usable(BookSynchroniser("spot", "OTHER")) is None
    clock.now += 10.0
    assert cache.usable(_buffering("spot", _diff(101, 105))) is None, "expired"
    assert len(cache) == 0


def test_the_cache_keeps_one_snapshot_per_symbol_and_can_be_off() -> None:
    cache = SnapshotCache(10.0, FakeClock())
    for last_id in (100, 200, 300):
        cache.put(_snap(last_id))
    cache.put(_snap(7, "Y"))
    assert len(cache) == 2
    assert cache.usable(_buffering("spot", _diff(301, 305))) == _snap(300)
    off = SnapshotCache(0.0, FakeClock())
    off.put(_snap(100))
    assert not off.enabled
    assert len(off) == 0


def test_book_matches_compares_the_best_levels_of_each_side() -> None:
    book = OrderBook()
    snapshot = BookSnapshot("binance", "X", 0, 0, 1, ((10.0, 1.0), (9.0, 2.0), (8.0, 3.0)), ((11.0, 1.0), (12.0, 2.0)))
    book.apply_snapshot(snapshot)
    assert book_matches(book, snapshot, 2)
    book.set_levels([(8.0, 5.0)], [])  # beyond the two best bids: not compared
    assert book_matches(book, snapshot, 2)
    assert not book_matches(book, snapshot, 3)
    book.set_levels([], [(12.0, 0.0)])  # a level gone near the touch
    assert not book_matches(book, snapshot, 2)
    assert not book_matches(OrderBook(), snapshot, 2), "an empty book never matches a non-empty snapshot"


def test_rearm_restarts_the_timer_but_last_seen_keeps_the_last_frame() -> None:
    clock = FakeClock()
    silence = StreamSilence({BOOK: 5.0}, clock)
    silence.watch(BOOK, ["X"])
    assert silence.last_seen(BOOK, "X") == 100.0
    assert silence.last_seen(BOOK, "Y") is None
    clock.now += 5.0
    assert silence.overdue() == [(BOOK, "X")]
    clock.now += 1.0
    silence.rearm(BOOK, "X")  # checked, merely quiet: look again one threshold later
    assert silence.last_seen(BOOK, "X") == 100.0, "no frame arrived: the last sighting is unchanged"
    assert silence.next_deadline() == 111.0
    clock.now += 4.9
    assert silence.overdue() == []
    clock.now += 0.1
    assert silence.overdue() == [(BOOK, "X")]
    silence.seen(BOOK, "X")  # a frame: the timer runs from it again
    assert silence.last_seen(BOOK, "X") == clock.now
    assert silence.next_deadline() == clock.now + 5.0
    silence.rearm(BOOK, "Y")  # not watched: nothing to time
    assert silence.last_seen(BOOK, "Y") is None
