"""Pinning the benchmark's processes to cores apart: on one machine, the closest thing to running the API, and the
evaluator with the database, on machines of their own. Linux only (`os.sched_setaffinity`); needs the right to pin
the local PostgreSQL and Redis servers' processes (root here), and restores every pinning afterwards."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


def _pids(command: str) -> list[int]:
    found = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with suppress(OSError):
            if comm.read_text().strip() == command:
                found.append(int(comm.parent.name))
    return found


@contextmanager
def cores_apart() -> Iterator[set[int] | None]:
    """A core of its own for the API process (this one, with Redis, which its requests read), the other cores
    for PostgreSQL and the evaluating process (which pins itself to the yielded set): as when the evaluator and the
    database run on other machines, as far as one machine can show it. None (nothing pinned) with one core or
    without the local servers' processes; restored afterwards."""
    cores = sorted(os.sched_getaffinity(0))
    postgres, redis_server = _pids("postgres"), _pids("redis-server")
    if len(cores) < 2 or not postgres:
        yield None
        return
    api, rest = {cores[0]}, set(cores[1:])
    pinned = [(pid, api) for pid in [os.getpid(), *redis_server]] + [(pid, rest) for pid in postgres]
    try:
        for pid, where in pinned:
            with suppress(OSError):  # a backend that ended meanwhile
                os.sched_setaffinity(pid, where)
        yield rest
    finally:
        for pid, _ in pinned:
            with suppress(OSError):
                os.sched_setaffinity(pid, set(cores))
        for pid in _pids("postgres"):  # backends started meanwhile inherited the postmaster's pinning
            with suppress(OSError):
                os.sched_setaffinity(pid, set(cores))
