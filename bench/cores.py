"""Pinning the benchmark's processes to cores apart: on one machine, the closest thing to running the API, and the
evaluator with the database, on machines of their own. Linux only (`os.sched_setaffinity`, per thread: a process's
threads are pinned one by one); needs the right to pin the local PostgreSQL and Redis servers' processes (root here).
Every thread's own affinity is put back afterwards, on an exception too (not on SIGKILL). Pins every process named
`postgres` or `redis-server` on the machine: run it on a machine that runs nothing else against them."""

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


def _parent(pid: int) -> int:
    with suppress(OSError, ValueError, IndexError):
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return 0


def _threads(pid: int) -> list[int]:
    with suppress(OSError):
        return [int(task.name) for task in Path(f"/proc/{pid}/task").iterdir()]
    return []


def _pin(threads: list[int], where: set[int], saved: dict[int, set[int]]) -> bool:
    """Pin `threads`, remembering each one's affinity first; False when one could not be pinned (no right)."""
    for tid in threads:
        try:
            saved.setdefault(tid, os.sched_getaffinity(tid))
            os.sched_setaffinity(tid, where)
        except ProcessLookupError:  # a thread or backend that ended meanwhile
            continue
        except OSError:
            return False
    return True


@contextmanager
def cores_apart() -> Iterator[set[int] | None]:
    """A core of its own for the API process (this one, with Redis, which its requests read), the other cores
    for PostgreSQL and the evaluating process (which pins itself to the yielded set): as when the evaluator and the
    database run on other machines, as far as one machine can show it. None (nothing left pinned) with one core,
    without the local servers' processes or without the right to pin them."""
    cores = sorted(os.sched_getaffinity(0))
    postgres, redis_server = _pids("postgres"), _pids("redis-server")
    saved: dict[int, set[int]] = {}
    api, rest = {cores[0]}, set(cores[1:])
    try:
        pinned = len(cores) >= 2 and bool(postgres)
        for pids, where in (([os.getpid(), *redis_server], api), (postgres, rest)):
            pinned = pinned and all(_pin(_threads(pid), where, saved) for pid in pids)
    except BaseException:
        _restore(saved, postgres)
        raise
    if not pinned:
        _restore(saved, postgres)
        yield None
        return
    try:
        yield rest
    finally:
        _restore(saved, postgres)


def _restore(saved: dict[int, set[int]], postgres: list[int]) -> None:
    """Every pinned thread back to its own affinity; backends started meanwhile inherited the postmaster's pinning,
    so they go back to the postmaster's own."""
    roots = [pid for pid in postgres if _parent(pid) not in postgres]  # the postmaster: no postgres parent
    postmaster = saved.get(roots[0]) if roots else None
    if postmaster is not None:
        for pid in _pids("postgres"):
            for tid in _threads(pid):
                saved.setdefault(tid, postmaster)
    for tid, affinity in saved.items():
        with suppress(OSError):
            os.sched_setaffinity(tid, affinity)
