"""The simulated `sim` venue: deterministic by seed, bursts, a book that never crosses, liquidations."""

from __future__ import annotations

import asyncio
import time
from itertools import islice

import pytest

from app.market.book import OrderBook
from app.market.events import BookSnapshot, BookUpdate, Liquidation, MarketEvent, Trade
from app.market.venues.sim import SimConfig, SimMarket, start_price

T0 = 1_700_000_040_000


async def _noop(_: MarketEvent) -> None:
    return None


def _events(seed: int, n: int = 3000, symbols: tuple[str, ...] = ("BTCUSDT",)) -> list[MarketEvent]:
    return list(islice(SimMarket(symbols, _noop, SimConfig(seed=seed, rate=50)).events(T0), n))


def test_the_same_seed_gives_the_same_market_and_another_seed_another() -> None:
    assert _events(7) == _events(7)
    assert _events(7) != _events(8)


def test_events_are_labelled_sim_and_ordered_in_time() -> None:
    events = _events(3)
    assert {e.venue for e in events} == {"sim"}
    stamps = [e.exchange_ts for e in events]
    assert stamps == sorted(stamps)
    assert stamps[0] == T0
    trades = [e for e in events if isinstance(e, Trade)]
    # 50 trades per second on average.
    assert 30 < len(trades) / ((trades[-1].exchange_ts - T0) / 1000) < 80


def test_bursts_liquidations_and_both_taker_sides_occur() -> None:
    events = _events(5, 20_000)
    trades = [e for e in events if isinstance(e, Trade)]
    same_instant = max(sum(1 for t in trades if t.exchange_ts == ts) for ts in {t.exchange_ts for t in trades[:3000]})
    assert same_instant >= 5, "bursts put many trades at one instant"
    assert {t.side for t in trades} == {1, -1}
    assert any(isinstance(e, Liquidation) for e in events)


def test_the_book_applies_in_sequence_and_never_crosses() -> None:
    book = OrderBook()
    for event in _events(11, 5000, ("BTCUSDT", "ETHUSDT")):
        if event.symbol != "ETHUSDT":
            continue
        if isinstance(event, BookSnapshot):
            book.apply_snapshot(event)
        elif isinstance(event, BookUpdate):
            assert event.prev_update_id == book.last_update_id
            book.apply_update(event)
            assert not book.is_crossed
            assert len(book.bids()) == len(book.asks()) == 20
    assert start_price("ETHUSDT", SimConfig()) == 3000.0
    assert start_price("XYZ", SimConfig(start_prices={"XYZ": 5.0})) == 5.0


def _connected(market: SimMarket) -> bool:
    return market.stats.connected  # a call, so mypy keeps no narrowing across the awaits


async def test_run_emits_into_the_sink_until_stopped() -> None:
    seen: list[MarketEvent] = []

    async def sink(event: MarketEvent) -> None:
        seen.append(event)

    market = SimMarket(["BTCUSDT"], sink, SimConfig(rate=5000), realtime=True)
    began = time.monotonic()
    market.start()
    await asyncio.sleep(0.2)
    assert _connected(market)
    await market.stop()
    ran = time.monotonic() - began
    assert not _connected(market)
    # Paced to the wall clock: about 5 000 trades a second of however long it really ran (a loaded machine
    # stretches the 0.2 s sleep, and the pacing then catches up), never the unpaced flood the second half shows.
    assert 100 < market.stats.trades < 2 * 5000 * ran + 500
    assert len(seen) == market.stats.events
    fast = SimMarket(["BTCUSDT"], sink, SimConfig(rate=1), realtime=False)
    fast.start()
    await asyncio.sleep(0.05)
    await fast.stop()
    assert fast.stats.trades > 100, "without pacing it runs as fast as the sink takes events"


def test_invalid_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="symbol"):
        SimMarket([], _noop)
    with pytest.raises(ValueError, match="rate"):
        SimMarket(["X"], _noop, SimConfig(rate=0))
