"""`deltaflow serve`: run the API under granian (default) or uvicorn, with the same graceful drain on SIGTERM.

The drain, as a load balancer needs it (see :mod:`app.core.lifecycle`): on SIGTERM every worker keeps serving but
answers `/readyz` with 503; after `drain_seconds` the listener closes, in-flight requests finish (bounded by
`shutdown_timeout_seconds`) and the process exits 0.

- uvicorn: each worker wraps uvicorn's SIGTERM handler itself (uvicorn's supervisor relays the signal to them).
- granian: its Rust supervisor owns the main process's signals and would stop the workers at once, so the main
  process here subclasses it: SIGTERM sends :data:`DRAIN_SIGNAL` to every worker (their lifespan turns it into
  the draining state) and only after `drain_seconds` asks granian to stop — which closes the listener and sends
  the workers SIGINT; granian lets their in-flight requests finish, killing a worker only after
  `shutdown_timeout_seconds`. A worker that gets SIGTERM itself (a signal to the whole process group, as systemd
  sends by default) drains too, rather than stopping under the balancer's feet. SIGINT (Ctrl-C) stops at once.

Why granian by default: with 2 workers on a 2-core machine, uvicorn's p99 at 200 connections was 0.2-1 s on the
cached signal route (and on a trivial app), granian's 55-63 ms with as much or more throughput; on a faster machine
uvicorn 0.04-0.33 s against granian's 29-31 ms. `bench/bench_signals.py` measures both side by side.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from app.config import ServerKind, Settings
from app.core.logging import configure_logging

# Sent by the granian supervisor to each worker when a drain starts: ignored while a worker is still starting (see
# _serve_granian), where SIGTERM would still end it.
DRAIN_SIGNAL = signal.SIGUSR1
DRAIN_RESEND_SECONDS = 0.2
SUPERVISOR_PID_ENV = "DELTAFLOW_SUPERVISOR_PID"  # set by the granian supervisor for its workers
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Requests a granian worker runs at once beyond its open signal streams (see granian_backpressure).
REQUEST_HEADROOM = 256
APP_FACTORY = "app.main:create_served_app"

log = logging.getLogger("deltaflow.serve")


def serve(settings: Settings, host: str | None, port: int | None, workers: int | None) -> int:
    host = host or settings.host
    port = settings.port if port is None else port
    workers = workers or settings.workers
    if settings.metrics_port is None:
        return _serve(settings, host, port, workers)
    # Metrics: the workers write to a per-start directory, this process serves their sum on its own port.
    from app.core.metrics_server import prepare_multiprocess_dir, remove_multiprocess_dir, start_listener

    metrics_dir, temporary = prepare_multiprocess_dir(settings)
    listener = start_listener(settings, metrics_dir)
    try:
        return _serve(settings, host, port, workers)
    finally:
        if listener is not None:
            listener.close()
        remove_multiprocess_dir(metrics_dir, temporary)


def _serve(settings: Settings, host: str, port: int, workers: int) -> int:
    if settings.server is ServerKind.UVICORN:
        return _serve_uvicorn(settings, host, port, workers)
    return _serve_granian(settings, host, port, workers)


def _serve_uvicorn(settings: Settings, host: str, port: int, workers: int) -> int:
    import uvicorn  # imported here: `deltaflow migrate` and `check` do not need a server

    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=None,  # app.core.logging configures every logger as JSON
        access_log=False,  # our RequestContextMiddleware writes the access log (with the request id)
        timeout_graceful_shutdown=int(settings.shutdown_timeout_seconds),
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        server_header=False,
    )
    return 0


def _serve_granian(settings: Settings, host: str, port: int, workers: int) -> int:
    from granian.constants import Interfaces
    from granian.server import Server

    class DrainingGranian(Server):  # type: ignore[misc,valid-type]  # granian ships no usable stubs for this class
        """granian's supervisor, with SIGTERM turned into drain-then-stop."""

        _draining = False

        def signal_handler_interrupt(self, *args: Any, **kwargs: Any) -> None:
            signum = args[0] if args else None
            if signum != signal.SIGTERM:
                super().signal_handler_interrupt(*args, **kwargs)
                return
            if self._draining:
                return  # a second SIGTERM changes nothing: the drain is already under way
            self._draining = True
            log.info("shutdown.drain_started", extra={"drain_seconds": settings.drain_seconds})
            threading.Thread(target=self._drain_then_stop, name="drain", daemon=True).start()

        def _drain_then_stop(self) -> None:
            # Re-sent until the drain ends: a worker still starting (or respawned) drains as soon as it can hear
            # it; until its app is built the signal is ignored (inherited SIG_IGN), never fatal.
            deadline = time.monotonic() + settings.drain_seconds
            while True:
                for worker in list(self.wrks):
                    pid = worker.inner.pid
                    if pid is not None and worker.is_alive():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, DRAIN_SIGNAL)
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                time.sleep(min(DRAIN_RESEND_SECONDS, left))
            super().signal_handler_interrupt(signal.SIGTERM, None)

        def _stop_workers(self) -> None:
            # SIGINT, not SIGTERM: a worker takes SIGTERM for "drain" (a signal to the whole process group reaches it
            # too); SIGINT stops it gracefully. granian's own stop follows (its SIGTERM is then harmless) and
            # brings the join and the kill after shutdown_timeout_seconds.
            for worker in list(self.wrks):
                pid = worker.inner.pid
                if pid is not None and worker.is_alive():
                    worker.interrupt_by_parent = True
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGINT)
            super()._stop_workers()

    server = DrainingGranian(
        APP_FACTORY,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        factory=True,
        websockets=False,  # the API has no WebSocket routes; SSE is plain HTTP
        log_access=False,  # our RequestContextMiddleware writes the access log (with the request id)
        respawn_failed_workers=True,  # as uvicorn's supervisor does: a crashed worker is replaced, not fatal
        workers_kill_timeout=max(1, int(settings.shutdown_timeout_seconds)),
        backpressure=granian_backpressure(settings),
    )
    configure_logging(settings)  # after granian's own logging set-up, so its lines come out as ours do
    os.environ[SUPERVISOR_PID_ENV] = str(os.getpid())
    # Workers inherit this until their app installs its handler: an early drain signal must not kill one (the
    # default action of SIGUSR1 is to terminate).
    signal.signal(DRAIN_SIGNAL, signal.SIG_IGN)
    server.serve()
    return 0


def granian_backpressure(settings: Settings) -> int:
    """How many requests one granian worker runs at once; the rest wait in granian's queue.

    Every open SSE stream holds one of these slots for its whole life. granian's default (1024 / workers) is below
    `signal_stream_max_per_process` (1000) from two workers on, so a worker full of streams would stop answering
    everything else; the streams' own cap plus headroom for ordinary requests keeps both working. (Lower values
    were measured too: they starve part of the connections rather than speed any up.)"""
    return settings.signal_stream_max_per_process + REQUEST_HEADROOM


def under_deltaflow_supervisor() -> bool:
    """Whether this process is a worker of `deltaflow serve`'s granian supervisor (which drains, then stops its
    workers with SIGINT), rather than of granian started by hand on `create_served_app`, whose supervisor stops
    workers with SIGTERM and would wait forever for a worker that took SIGTERM as "drain"."""
    return os.environ.get(SUPERVISOR_PID_ENV) is not None


def die_with_supervisor() -> bool:
    """In a granian worker: be sent SIGINT (a graceful stop) when the supervisor dies, however it dies.

    A supervisor killed with SIGKILL (the OOM killer, a hard stop) would otherwise leave its workers running and
    still accepting on the shared socket, with no one to stop them. Linux only (``prctl(PR_SET_PDEATHSIG)``);
    returns whether it is armed. Runs while the worker loads the app: a forked worker still carries the
    supervisor's SIGTERM handler until granian installs its own right after, so SIGTERM is reset to its default
    (a signal in that window ends a worker that serves nothing yet), and a supervisor that died before the arming
    is caught by comparing the parent pid.
    """
    supervisor = os.environ.get(SUPERVISOR_PID_ENV)
    if sys.platform != "linux" or supervisor is None:
        return False
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGINT, 0, 0, 0) != 0:
        return False
    if str(os.getppid()) != supervisor:
        os._exit(0)  # orphaned before it served anything: nothing to drain or clean up
    return True


def granian_stops_on_first_signal() -> bool:
    """In a granian worker: take the first SIGINT/SIGTERM as the stop and ignore repeats. Returns whether installed.

    granian (2.8) stops a worker with a one-slot channel whose send blocks while the slot is full, from the loop's
    signal handler: a second stop signal before the server took the first (both a process group's signal and the
    supervisor's relay, while the worker is busy) blocks the event loop forever, and the server never exits
    (reproduced with a bare ASGI app). Runs while the worker loads the app, before granian installs its handlers:
    it wraps the installer granian imports at that moment, so granian's own stop still happens, once."""
    try:
        from granian import _signals
    except ImportError:  # pragma: no cover - granian is a dependency; uvicorn-only setups may leave it out
        return False
    install = _signals.set_loop_signals
    if getattr(install, "deltaflow_once", False):
        return True

    def set_loop_signals_once(loop: Any) -> Any:
        event = install(loop)  # type: ignore[no-untyped-call]
        fired = threading.Event()

        def stop_once(signum: int, frame: object) -> None:
            if not fired.is_set():
                fired.set()
                event.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop_once, signum, None)
        return event

    set_loop_signals_once.deltaflow_once = True  # type: ignore[attr-defined]
    _signals.set_loop_signals = set_loop_signals_once
    return True
