"""The connector against a misbehaving mock exchange: gaps, drops, rate limits, slow REST, leaks.

Most use a small synthetic capture (runs anywhere); the gap test is repeated on the real spot capture.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from decimal import Decimal

import pytest

from app.market.events import BookSnapshot, Trade
from app.market.recovery import BreakerState, CircuitBreaker
from app.market.venues.binance_client import BinanceConnector, ConnectorLimits, queue_sink
from tests.market.helpers import GatedConnect, Recorder, fast_backoff, running_connector, wait_for
from tests.market.mock_exchange import Capture, MockExchange, ScriptedResponse, synthetic_capture

SYMBOL = "TESTUSDT"


def _final_book(capture: Capture, symbol: str) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    snapshot = json.loads(capture.snapshots[symbol])
    bids = {Decimal(p): Decimal(q) for p, q in snapshot["bids"]}
    asks = {Decimal(p): Decimal(q) for p, q in snapshot["asks"]}
    for diff in capture.depth_frames(symbol):
        if int(str(diff["u"])) <= snapshot["lastUpdateId"]:
            continue
        for side, key in ((bids, "b"), (asks, "a")):
            for price, qty in diff[key]:  # type: ignore[attr-defined]
                if Decimal(qty) == 0:
                    side.pop(Decimal(price), None)
                else:
                    side[Decimal(price)] = Decimal(qty)
    return (
        [(float(p), float(bids[p])) for p in sorted(bids, reverse=True)],
        [(float(p), float(asks[p])) for p in sorted(asks)],
    )


def _state(breaker: CircuitBreaker) -> BreakerState:
    return breaker.state  # a call, so mypy does not keep an earlier narrowing of the property


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("frame_delay_s", [0.0, 0.005], ids=["gap-found-in-the-buffer", "gap-found-in-the-live-stream"])
async def test_sequence_gap_triggers_resync_through_rest(frame_delay_s: float) -> None:
    capture = synthetic_capture(diffs=40)
    async with (
        MockExchange(capture, drop_frames={20}, live_snapshots=True, frame_delay_s=frame_delay_s) as mock,
        running_connector(mock, "spot", [SYMBOL]) as (connector, rec),
    ):
        sync = connector.syncs[SYMBOL]
        await wait_for(lambda: mock.replays_completed == 1 and connector.stats.frames == 39)
        await wait_for(lambda: not sync.needs_snapshot)
        assert sync.stats.gaps == 1
        assert connector.stats.resyncs == 1
        assert mock.depth_calls(SYMBOL) == 2
        assert len(rec.of(BookSnapshot)) == 2
        # The venue's state includes the diff the wire lost; the resynced book must too.
        assert (sync.book.bids(), sync.book.asks()) == _final_book(capture, SYMBOL)
        assert sync.stats.crossed == 0


@pytest.mark.slow
async def test_real_capture_gap_resyncs_to_the_exact_book(spot_capture: Capture) -> None:
    nkn = [i for i, f in enumerate(spot_capture.frames) if '"nknusdt@depth@100ms"' in f]
    dropped = nkn[len(nkn) // 2]
    async with (
        MockExchange(spot_capture, drop_frames={dropped}, live_snapshots=True) as mock,
        running_connector(mock, "spot", ["NKNUSDT"]) as (connector, _),
    ):
        sync = connector.syncs["NKNUSDT"]
        await wait_for(lambda: mock.replays_completed == 1 and not sync.needs_snapshot)
        await wait_for(lambda: connector.stats.frames == len(spot_capture.frames) - 1)
        assert sync.stats.gaps == 1
        assert mock.depth_calls("NKNUSDT") == 2
        assert (sync.book.bids(), sync.book.asks()) == _final_book(spot_capture, "NKNUSDT")


async def test_dropped_server_reconnects_with_exponential_backoff() -> None:
    capture = synthetic_capture(diffs=40)
    async with (
        MockExchange(capture, disconnect_after=10) as mock,
        running_connector(mock, "spot", [SYMBOL], backoff=fast_backoff()) as (connector, _),
    ):
        await wait_for(lambda: len(connector.stats.backoff_delays) >= 7)
        # Jitter pinned at its ceiling: base·2ⁿ, capped at 16 ms; never reset (no connection was stable).
        assert connector.stats.backoff_delays[:7] == [0.001, 0.002, 0.004, 0.008, 0.016, 0.016, 0.016]
        assert connector.stats.connects >= 7


async def test_backoff_resets_after_a_stable_connection() -> None:
    capture = synthetic_capture(diffs=40)
    async with (
        MockExchange(capture, disconnect_after=10) as mock,
        running_connector(mock, "spot", [SYMBOL], backoff=fast_backoff(stable_after_s=0.0)) as (connector, _),
    ):
        await wait_for(lambda: len(connector.stats.backoff_delays) >= 4)
        assert connector.stats.backoff_delays[:4] == [0.001] * 4


async def test_rate_limit_opens_the_breaker_and_no_rest_call_happens_while_open() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock)
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)
        await asyncio.sleep(0.001)

    capture = synthetic_capture(diffs=40)
    script = [ScriptedResponse(429, {"Retry-After": "45"}, b'{"code":-1003}')]
    async with (
        MockExchange(capture, rest_script=script) as mock,
        running_connector(mock, "spot", [SYMBOL], breaker=breaker, sleep=sleep, clock=clock) as (conn, _),
    ):
        await wait_for(lambda: conn.stats.snapshot_failures == 1)
        assert breaker.state is BreakerState.OPEN
        clock.now += 31  # past the 30 s minimum but not the 45 s Retry-After
        await wait_for(lambda: conn.stats.breaker_waits >= 20)
        assert mock.depth_calls(SYMBOL) == 1
        assert conn.syncs[SYMBOL].needs_snapshot
        clock.now += 14  # the window has passed: exactly one probe, which succeeds
        await wait_for(lambda: not conn.syncs[SYMBOL].needs_snapshot)
        assert mock.depth_calls(SYMBOL) == 2
        assert _state(breaker) is BreakerState.CLOSED
        assert max(slept) <= conn.limits.breaker_poll_s


async def test_the_venue_request_budget_holds_a_resync_back_until_a_token_is_refilled() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(budget_per_minute=1, clock=clock)  # the first snapshot spends the only token

    async def sleep(delay: float) -> None:
        await asyncio.sleep(0.001)

    capture = synthetic_capture(diffs=40)
    async with (
        MockExchange(capture, drop_frames={20}, live_snapshots=True) as mock,
        running_connector(mock, "spot", [SYMBOL], breaker=breaker, sleep=sleep, clock=clock) as (conn, _),
    ):
        sync = conn.syncs[SYMBOL]
        await wait_for(lambda: sync.stats.gaps == 1)
        clock.now += 1  # past the minimum resync interval, far from the next token (one a minute)
        await wait_for(lambda: breaker.budget_refusals >= 5)
        assert mock.depth_calls(SYMBOL) == 1  # the gap's resync waits for the budget, not the venue's 429
        assert sync.needs_snapshot
        assert breaker.state is BreakerState.CLOSED
        clock.now += 60  # one token refilled: exactly one more snapshot
        await wait_for(lambda: not sync.needs_snapshot)
        assert mock.depth_calls(SYMBOL) == 2
        assert sync.stats.crossed == 0


async def test_snapshot_errors_are_retried_and_counted() -> None:
    capture = synthetic_capture(diffs=40)
    script = [ScriptedResponse(500), ScriptedResponse(200, body=b"not json")]
    async with (
        MockExchange(capture, rest_script=script) as mock,
        running_connector(mock, "spot", [SYMBOL]) as (connector, _),
    ):
        await wait_for(lambda: not connector.syncs[SYMBOL].needs_snapshot)
        assert connector.stats.snapshot_failures == 2
        assert mock.depth_calls(SYMBOL) == 3
        assert connector.breaker.failures == 0  # reset by the success


async def test_a_snapshot_the_buffered_diffs_do_not_continue_is_never_emitted() -> None:
    # The venue answers first with a snapshot older than every buffered diff (a lagging REST replica): updates
    # between the two were never seen, so that book must not reach the sink (the store would go back in time and
    # count a resync that did not happen); the next snapshot bridges and is the only one emitted.
    capture = synthetic_capture(diffs=40)
    stale = json.dumps({"lastUpdateId": 500, "bids": [["1.00", "9"]], "asks": [["2.00", "9"]]}).encode()
    async with (
        MockExchange(capture, rest_script=[ScriptedResponse(200, body=stale)]) as mock,
        running_connector(mock, "spot", [SYMBOL]) as (connector, recorder),
    ):
        sync = connector.syncs[SYMBOL]
        await wait_for(lambda: mock.depth_calls(SYMBOL) == 2 and not sync.needs_snapshot)
        emitted = [event.last_update_id for event in recorder.book_events(SYMBOL) if isinstance(event, BookSnapshot)]
        assert emitted == [1004]
        assert connector.stats.resyncs >= 1
        await wait_for(lambda: connector.stats.frames == 40)
        assert (sync.book.bids(), sync.book.asks()) == _final_book(capture, SYMBOL)
        assert recorder.crossed_after == []


async def test_buffer_overflow_forces_a_resync_and_recovers() -> None:
    capture = synthetic_capture(diffs=40)
    limits = ConnectorLimits(max_buffered_diffs=4, min_resync_interval_s=0.01)
    async with (
        MockExchange(capture, rest_delay_s=0.05, live_snapshots=True) as mock,
        running_connector(mock, "spot", [SYMBOL], limits=limits) as (connector, _),
    ):
        sync = connector.syncs[SYMBOL]
        await wait_for(lambda: mock.replays_completed == 1 and not sync.needs_snapshot)
        assert sync.stats.overflows >= 1
        assert sync.buffered <= 4
        await wait_for(lambda: connector.stats.frames == 40)
        assert (sync.book.bids(), sync.book.asks()) == _final_book(capture, SYMBOL)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_unreachable_stream_backs_off_and_keeps_bounded_history() -> None:
    connector = BinanceConnector(
        "futures",
        ["btcusdt"],
        Recorder(),
        ws_url=f"ws://127.0.0.1:{_closed_port()}",
        backoff=fast_backoff(),
        max_recorded_delays=3,
    )
    assert connector.url.endswith("btcusdt@aggTrade/btcusdt@depth@100ms/btcusdt@kline_1m/btcusdt@forceOrder")
    connector.start()
    await wait_for(lambda: connector.backoff.attempt >= 8)
    await connector.stop()
    assert connector.stats.connects == 0
    assert connector.stats.backoff_delays == [0.016, 0.016, 0.016]
    assert len(connector.stats.backoff_delays) == 3
    with pytest.raises(ValueError, match="symbol"):
        BinanceConnector("spot", [], Recorder())


async def test_unreachable_rest_opens_the_breaker_after_five_failures() -> None:
    capture = synthetic_capture(diffs=40)
    async with MockExchange(capture) as mock:
        connector = BinanceConnector(
            "spot",
            [SYMBOL],
            Recorder(),
            ws_url=mock.ws_url,
            rest_url=f"http://127.0.0.1:{_closed_port()}",
            limits=ConnectorLimits(min_resync_interval_s=0.01),
            backoff=fast_backoff(),
        )
        connector.start()
        await wait_for(lambda: connector.stats.breaker_waits >= 1)
        await connector.stop()
    assert connector.stats.snapshot_failures == 5
    assert _state(connector.breaker) is BreakerState.OPEN
    assert mock.rest_calls == []


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts file descriptors through /proc")
async def test_tasks_and_fds_are_the_same_after_repeated_forced_reconnects() -> None:
    capture = synthetic_capture(diffs=40)
    async with MockExchange(capture, disconnect_after=15, rest_delay_s=0.01) as mock:
        tasks_before = asyncio.all_tasks()
        fds_before = _open_fds()
        async with running_connector(mock, "spot", [SYMBOL]) as (connector, _):
            await wait_for(lambda: mock.connections >= 30)  # server-side drops, mid-stream
            mock.disconnect_after = None

            async def steady_task_count() -> int:
                await wait_for(
                    lambda: (
                        connector.stats.connected
                        and not connector.syncs[SYMBOL].needs_snapshot
                        and mock.replays_completed == mock.connections - 30
                    )
                )
                await asyncio.sleep(0.02)
                return len(asyncio.all_tasks())

            counts = []
            for _ in range(20):  # then client-side forced reconnects
                counts.append(await steady_task_count())
                seen = mock.connections
                await connector.force_reconnect()
                await wait_for(lambda: mock.connections > seen)  # noqa: B023
            counts.append(await steady_task_count())
            # Every steady state holds the same tasks: nothing accumulates across reconnects.
            assert len(set(counts)) == 1, counts
        await wait_for(lambda: asyncio.all_tasks() == tasks_before, limit_s=5.0)
        await wait_for(lambda: _open_fds() == fds_before, limit_s=5.0)
        assert connector.stats.disconnects >= 50


async def test_a_forced_reconnect_while_a_socket_is_opening_is_not_lost() -> None:
    async with MockExchange(synthetic_capture(diffs=40)) as mock:
        connector = GatedConnect(
            1,
            "spot",
            [SYMBOL],
            Recorder(),
            ws_url=mock.ws_url,
            rest_url=mock.rest_url,
            limits=ConnectorLimits(min_resync_interval_s=0.01),
            backoff=fast_backoff(),
        )
        connector.start()
        try:
            await wait_for(connector.opening.is_set)
            await wait_for(lambda: mock.connections == 1)  # the venue counts it, yet there is no socket to close
            await connector.force_reconnect()
            connector.release.set()
            await wait_for(lambda: mock.connections == 2 and connector.stats.connected)
            assert (connector.stats.connects, connector.stats.disconnects) == (2, 1)
        finally:
            await connector.stop()


async def test_trades_flow_to_a_bounded_queue_in_order() -> None:
    frames = tuple(
        json.dumps(
            {
                "stream": "testusdt@aggTrade",
                "data": {
                    "e": "aggTrade",
                    "E": 1,
                    "s": SYMBOL,
                    "a": i,
                    "p": "1.5",
                    "q": "2",
                    "f": i,
                    "l": i,
                    "T": 1_700_000_000_000 + i,
                    "m": i % 2 == 0,
                },
            }
        )
        for i in range(50)
    )
    capture = Capture("wss://x/stream", (*frames, "not json", '{"stream":"x","data":[]}'), (), {})
    queue: asyncio.Queue[object] = asyncio.Queue(maxsize=5)
    async with MockExchange(capture) as mock:
        connector = BinanceConnector(
            "spot",
            [SYMBOL],
            queue_sink(queue),  # type: ignore[arg-type]
            ws_url=mock.ws_url,
            rest_url=mock.rest_url,
            backoff=fast_backoff(),
        )
        connector.start()
        received = [await asyncio.wait_for(queue.get(), 5.0) for _ in range(50)]
        await wait_for(lambda: connector.stats.malformed == 2)
        await connector.stop()
    assert [t.trade_id for t in received if isinstance(t, Trade)] == list(range(50))
    assert sum(t.quantity for t in received if isinstance(t, Trade)) == 100.0
