"""SIGTERM drain: readiness flips at once, the server is told to stop only after the drain period."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from types import FrameType

import pytest

from app.core.lifecycle import Lifecycle, install_sigterm_drain


class FakeServer:
    """Stands in for uvicorn.Server: installs a SIGTERM handler and stops when `should_exit` is set."""

    def __init__(self) -> None:
        self.should_exit = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.should_exit = True


def _stopped(server: FakeServer) -> bool:
    return server.should_exit


@pytest.fixture
def restore_sigterm() -> Iterator[None]:
    original = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, original)


@pytest.mark.usefixtures("restore_sigterm")
async def test_sigterm_drains_before_stopping_the_server() -> None:
    server = FakeServer()
    signal.signal(signal.SIGTERM, server.handle_exit)
    lifecycle = Lifecycle()
    uninstall = install_sigterm_drain(lifecycle, drain_seconds=0.3)

    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.sleep(0.05)
    assert lifecycle.draining, "readiness must flip as soon as SIGTERM arrives"
    assert not server.should_exit, "the server keeps serving during the drain"

    os.kill(os.getpid(), signal.SIGTERM)  # a second SIGTERM does not restart or shorten the drain
    await asyncio.sleep(0.4)
    assert _stopped(server)

    uninstall()
    assert signal.getsignal(signal.SIGTERM) == server.handle_exit


@pytest.mark.usefixtures("restore_sigterm")
async def test_a_plain_previous_handler_is_called_after_the_drain() -> None:
    calls: list[int] = []
    signal.signal(signal.SIGTERM, lambda sig, _frame: calls.append(sig))
    lifecycle = Lifecycle()
    install_sigterm_drain(lifecycle, drain_seconds=0.0)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.sleep(0.1)
    assert calls == [signal.SIGTERM]


def test_granian_leaves_room_for_requests_beside_a_full_set_of_streams() -> None:
    from app.core.serving import REQUEST_HEADROOM, granian_backpressure
    from tests.conftest import make_settings

    settings = make_settings(signal_stream_max_per_process=1000)
    assert granian_backpressure(settings) == 1000 + REQUEST_HEADROOM
    assert granian_backpressure(settings) > 1024 // 2  # granian's own default for two workers would not fit them


def test_a_granian_worker_stops_once_however_many_stop_signals_come(monkeypatch: pytest.MonkeyPatch) -> None:
    # granian's stop event blocks its second `set()` until the server took the first: a process group's SIGTERM plus
    # the supervisor's relay hung a busy worker's event loop for good (the e2e test under plain granian saw it).
    # With the wrapper, granian's own installer still runs and its event is set exactly once.
    from granian import _signals

    from app.core.serving import granian_stops_on_first_signal

    class CountingSignal:
        def __init__(self) -> None:
            self.sets = 0

        def set(self) -> None:
            self.sets += 1

    monkeypatch.setattr(_signals, "WorkerSignal", CountingSignal)
    monkeypatch.setattr(_signals, "set_loop_signals", _signals.set_loop_signals)
    assert granian_stops_on_first_signal()
    assert granian_stops_on_first_signal(), "a second call keeps the one wrapper"
    loop = asyncio.new_event_loop()
    try:
        event = _signals.set_loop_signals(loop)  # type: ignore[no-untyped-call]

        async def signalled() -> None:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGTERM):
                os.kill(os.getpid(), signum)
                await asyncio.sleep(0.05)

        loop.run_until_complete(asyncio.wait_for(signalled(), timeout=5))
        assert isinstance(event, CountingSignal)
        assert event.sets == 1
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        loop.close()
