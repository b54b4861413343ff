"""The `/metrics` listener: a port of its own in the process that supervises the workers, never the API's port.

`deltaflow serve` calls :func:`prepare_multiprocess_dir` before any worker exists (the workers are forked or
spawned with ``PROMETHEUS_MULTIPROC_DIR`` in their environment, so they write their values to files there) and
then :func:`start_listener`, whose scrape sums every worker's files. The directory is per start: a fresh temporary
one by default, removed at exit, or the configured ``metrics_dir`` emptied first, since files of an earlier run
would be added to this one's counters.

Why not a route on the API: the scrape would land on one worker at random and see only its values, and the public
nginx would have to be taught to hide it. A separate listener (loopback by default) has neither problem.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server, values
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from app.config import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir(settings: Settings) -> tuple[Path, bool]:
    """Create (or empty) the directory the workers write to and point the environment at it. Returns it and whether
    it is a temporary one to remove at exit."""
    if settings.metrics_dir is None:
        path, temporary = Path(tempfile.mkdtemp(prefix="deltaflow-metrics-")), True
    else:
        path, temporary = settings.metrics_dir, False
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
    os.environ[MULTIPROC_ENV] = str(path)
    # prometheus_client picks the value class when first imported (here, by this module): pick again now that the
    # directory is set, so metrics created from now on, here and in forked workers, write to files.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    from app.core.metrics import adopt_multiprocess_values  # noqa: PLC0415 - it imports this module

    adopt_multiprocess_values()
    return path, temporary


def remove_multiprocess_dir(path: Path, temporary: bool) -> None:
    if temporary:
        shutil.rmtree(path, ignore_errors=True)


class LiveMultiProcessCollector(MultiProcessCollector):
    """prometheus_client's collector, first dropping the live gauges of workers that have exited (a respawned or
    crashed worker's in-flight requests or open streams must not be counted for ever). Its counters stay: they are
    what it did, and a counter must not go down."""

    def collect(self) -> Iterable[Metric]:
        for path in Path(self._path).glob("gauge_live*_*.db"):
            pid = path.stem.rsplit("_", 1)[-1]
            if pid.isdigit() and not _alive(int(pid)):
                mark_process_dead(int(pid), self._path)  # type: ignore[no-untyped-call]
        return super().collect()  # type: ignore[no-untyped-call,no-any-return]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class MetricsListener:
    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self.server = server
        self.thread = thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.server.shutdown()
            self.server.server_close()
        self.thread.join(timeout=5)


def start_listener(settings: Settings, multiprocess_dir: Path | None) -> MetricsListener | None:
    """Serve `/metrics` on `metrics_host:metrics_port` in a daemon thread (None when metrics are off). With a
    multiprocess directory it reports the sum over every worker's files; without, this process's own registry."""
    if settings.metrics_port is None:
        return None
    registry = REGISTRY
    if multiprocess_dir is not None:
        registry = CollectorRegistry()
        LiveMultiProcessCollector(registry, path=str(multiprocess_dir))  # type: ignore[no-untyped-call]
    server, thread = start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=registry)
    return MetricsListener(server, thread)
