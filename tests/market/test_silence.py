"""StreamSilence: per-stream silence bookkeeping (pure, clock injected)."""

from __future__ import annotations

from app.market.silence import BOOK, TRADES, StreamSilence


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_quiet_stream_is_reported_while_the_others_flow() -> None:
    clock = FakeClock()
    silence = StreamSilence({BOOK: 5.0}, clock)
    silence.watch(BOOK, ["BTCUSDT", "ETHUSDT"])
    for _ in range(10):
        clock.now += 1.0
        silence.seen(BOOK, "BTCUSDT")
    assert silence.overdue() == [(BOOK, "ETHUSDT")]
    assert silence.stale_reports == 1


def test_a_stream_is_reported_once_per_silence_and_again_after_it_resumes_and_stops() -> None:
    clock = FakeClock()
    silence = StreamSilence({BOOK: 5.0}, clock)
    silence.watch(BOOK, ["BTCUSDT"])
    clock.now += 5.0
    assert silence.overdue() == [(BOOK, "BTCUSDT")]
    clock.now += 50.0
    assert silence.overdue() == []
    assert silence.next_deadline() is None  # nothing left to time
    silence.seen(BOOK, "BTCUSDT")
    assert silence.next_deadline() == clock.now + 5.0
    clock.now += 4.9
    assert silence.overdue() == []
    clock.now += 0.1
    assert silence.overdue() == [(BOOK, "BTCUSDT")]
    assert silence.stale_reports == 2


def test_watch_restarts_the_clock_and_unwatched_kinds_are_never_reported() -> None:
    clock = FakeClock()
    silence = StreamSilence({BOOK: 5.0, TRADES: None}, clock)
    silence.watch(TRADES, ["BTCUSDT"])  # no threshold: not timed
    silence.watch(BOOK, ["BTCUSDT"])
    clock.now += 4.0
    silence.watch(BOOK, ["BTCUSDT"])  # a resubscribe: timing starts over
    silence.seen(TRADES, "BTCUSDT")
    clock.now += 4.0
    assert silence.overdue() == []
    assert silence.next_deadline() == 109.0
    clock.now += 100.0
    assert silence.overdue() == [(BOOK, "BTCUSDT")]
    silence.clear()
    clock.now += 100.0
    assert silence.overdue() == []
    assert silence.next_deadline() is None


def test_seen_for_an_unwatched_symbol_starts_nothing() -> None:
    clock = FakeClock()
    silence = StreamSilence({BOOK: 1.0}, clock)
    silence.seen(BOOK, "XRPUSDT")
    clock.now += 10.0
    assert silence.overdue() == []
