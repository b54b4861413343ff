"""Stopping background tasks for certain."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

logger = logging.getLogger(__name__)


async def cancel_and_wait(task: asyncio.Task[Any], *, every_s: float = 5.0) -> None:
    """Cancel ``task`` and wait until it has really ended.

    One ``cancel()`` is not always enough: a cancellation that lands while a library's own timeout fires can be
    turned into a ``TimeoutError`` that a reconnect loop then treats as a failed connection and carries on. So the
    cancellation is repeated until the task is done, instead of awaiting a task that may never end. ``every_s``
    must exceed the task's own clean-up time: a repeated cancel interrupts that clean-up.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=every_s)
    if not task.cancelled() and task.exception() is not None:
        logger.warning("task.failed", extra={"task": task.get_name(), "error": repr(task.exception())})


def cancelling() -> bool:
    """Whether the current task has a cancellation pending.

    Loops that catch and retry connection errors check this after catching: a cancellation that arrived while a
    client library's timeout fired reaches them as a timeout error, and must still end the loop.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class BackgroundRunner:
    """`start()` / `stop()` / `aclose()` around a `run()` coroutine: the lifecycle every connector shares.

    Stopping goes through `cancel_and_wait`, so a cancellation swallowed by a client library's timeout cannot
    leave a connector running.
    """

    task_name = "background-runner"
    _task: asyncio.Task[None] | None = None

    async def run(self) -> None:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name=self.task_name)
        return self._task

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    async def aclose(self) -> None:
        await self.stop()
