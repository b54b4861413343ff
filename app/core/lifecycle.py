"""Process lifecycle: started, draining. Read by the probes, driven by the lifespan and SIGTERM.

Graceful shutdown, as a load balancer needs it: on SIGTERM the instance keeps serving but `/readyz` turns 503 at
once; after `drain_seconds` (time for the balancer's probes to notice) the server stops accepting, in-flight
requests finish (bounded by `shutdown_timeout_seconds`), and the process exits 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from app.core.logging import get_logger

log = get_logger(__name__)

SignalHandler = Callable[[int, FrameType | None], Any]


class Lifecycle:
    def __init__(self) -> None:
        self.started = False
        self.draining = False

    def mark_started(self) -> None:
        self.started = True

    def begin_drain(self) -> None:
        self.draining = True


def install_sigterm_drain(lifecycle: Lifecycle, drain_seconds: float) -> Callable[[], None]:
    """Wrap the server's SIGTERM handler: drain first, then let the server stop. Returns an uninstaller.

    Must run inside the server's event loop after the server installed its own handlers (uvicorn does that
    before the lifespan starts). The server is told to stop by flipping `should_exit` on it rather than by
    calling its handler, because uvicorn re-raises a signal it handled once it has shut down, which would end
    the process with 143 instead of 0.
    """
    loop = asyncio.get_running_loop()
    original = signal.getsignal(signal.SIGTERM)

    def stop_server() -> None:
        server = getattr(original, "__self__", None)
        if server is not None and hasattr(server, "should_exit"):
            server.should_exit = True
        elif callable(original):
            original(signal.SIGTERM, None)
        else:
            raise SystemExit(0)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if lifecycle.draining:
            return  # a second SIGTERM changes nothing: the drain is already under way
        lifecycle.begin_drain()
        log.info("shutdown.drain_started", drain_seconds=drain_seconds)
        loop.call_soon_threadsafe(loop.call_later, drain_seconds, stop_server)

    signal.signal(signal.SIGTERM, on_sigterm)

    def uninstall() -> None:
        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, original)

    return uninstall


def install_drain_signal(lifecycle: Lifecycle, signum: int) -> None:
    """Turn ``signum`` into the draining state, for a granian worker: its supervisor relays SIGTERM as this signal
    and stops the worker itself after the drain. Installed when the app is built, before the worker serves; a
    plain handler (not the event loop's) because it only flips a flag."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not lifecycle.draining:
            lifecycle.begin_drain()
            log.info("shutdown.drain_started")

    signal.signal(signum, on_signal)


def sigterm_drains_worker(lifecycle: Lifecycle, stop_after_seconds: float) -> Callable[[], None]:
    """In a granian worker: SIGTERM sent to the worker itself only starts the drain. Returns an uninstaller.

    A signal to the whole process group (systemd's default KillMode, ``kill -- -PGID``, ``timeout``) reaches the
    workers as well as the supervisor; granian's own handler would stop a worker at once, before the load balancer
    has seen `/readyz` turn 503. The supervisor stops its workers with SIGINT after the drain (see
    :mod:`app.core.serving`), which granian's handler still honours. Must run inside the worker's event loop after
    granian installed its handlers (the lifespan does): this replaces granian's SIGTERM handler on that loop.

    A worker that alone got SIGTERM (its supervisor did not, so no SIGINT will come) stops on its own once
    `stop_after_seconds` (drain + shutdown timeout) have passed: it sends itself SIGINT, granian's graceful stop.
    When the supervisor did get the signal too, its SIGINT arrives after the drain, well before that."""
    loop = asyncio.get_running_loop()
    timer: list[asyncio.TimerHandle] = []

    def stop_self() -> None:
        log.warning("shutdown.lone_sigterm_stop", waited_seconds=stop_after_seconds)
        os.kill(os.getpid(), signal.SIGINT)

    def on_sigterm() -> None:
        if not lifecycle.draining:
            lifecycle.begin_drain()
            log.info("shutdown.drain_started", signal="SIGTERM")
            timer.append(loop.call_later(stop_after_seconds, stop_self))

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)

    def uninstall() -> None:
        loop.remove_signal_handler(signal.SIGTERM)
        for handle in timer:
            handle.cancel()

    return uninstall
