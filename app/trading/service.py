"""Running analyses off the event loop, with bounded concurrency and admission.

Measured (2 cores, one analysis at a time, event-loop lag sampled every 5 ms): in a thread, the loop stalled
up to 73 ms on 100 000 candles and up to 388 ms on 1 000 000 trades, because JSON decoding and building Python
lists hold the GIL (numpy releases it only in parts); in a worker process the worst stall was ~25 ms (handing
the 72 MB body over) and ~2 ms otherwise. So analyses run in a process pool by default (`analyze_workers`
processes per server process, started lazily on the first request and warmed up once); `analyze_workers = 0`
runs them in one thread for setups that cannot afford extra processes.

Admission happens before the body is read: at most `workers + analyze_max_queued` requests are being read,
waiting or computing per server process (so at most that many bodies are held in memory); beyond that 503.
"""

from __future__ import annotations

import asyncio
import importlib
import multiprocessing
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError

from app.config import Settings
from app.core.errors import ServiceUnavailable
from app.core.logging import get_logger
from app.trading.compute import run_analysis
from app.trading.errors import AnalysisBusy, BodyInvalid
from app.trading.formats import BodyFormat, ResponseFormat
from app.trading.parsing import Limits

log = get_logger(__name__)

RETRY_AFTER_SECONDS = "1"
R = TypeVar("R")
# Modules every worker imports and warms up (each has a `warm_up()`): POST /v1/analyze, stored-data signals and
# stored-data analysis modules.
WORKER_MODULES = ("app.trading.compute", "app.signals.compute", "app.signals.analysis_compute")


def warm_up_workers(modules: tuple[str, ...] = WORKER_MODULES) -> None:
    for name in modules:
        importlib.import_module(name).warm_up()


def _worker_ready() -> bool:
    return True


class AnalysisRunner:
    def __init__(self, settings: Settings) -> None:
        self.limits = Limits(
            max_candles=settings.analyze_max_candles,
            max_trades=settings.analyze_max_trades,
            max_calibrated_evaluate_candles=settings.analyze_evaluate_calibrated_max_candles,
        )
        self.workers = settings.analyze_workers
        self.capacity = max(1, self.workers)
        self.max_admitted = self.capacity + settings.analyze_max_queued
        self._admitted = 0
        self._slots = asyncio.Semaphore(self.capacity)
        self._executor: Executor | None = None

    @asynccontextmanager
    async def admission(self) -> AsyncIterator[None]:
        """Hold a place for one request from before its body is read until its response is ready."""
        if self._admitted >= self.max_admitted:
            raise AnalysisBusy(
                f"{self._admitted} analyses are running or waiting; retry shortly.",
                headers={"retry-after": RETRY_AFTER_SECONDS},
            )
        self._admitted += 1
        try:
            yield
        finally:
            self._admitted -= 1

    async def run(
        self,
        body: bytes,
        body_format: BodyFormat = BodyFormat.JSON,
        response_format: ResponseFormat = ResponseFormat.ROWS,
    ) -> bytes:
        """The encoded response for a raw request body; raises problems for invalid input."""
        try:
            return await self.call(run_analysis, body, self.limits, body_format, response_format)
        except BodyInvalid as error:
            raise RequestValidationError(error.errors) from None

    async def call(self, function: Callable[..., R], *args: Any) -> R:
        """``function(*args)`` in a worker (a module-level function with picklable arguments and result)."""
        async with self._slots:
            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(self._get_executor(), function, *args)
            except BrokenProcessPool:
                # A worker died mid-analysis (e.g. killed for memory). Replace the pool for later requests.
                log.error("analysis.worker_died", function=getattr(function, "__name__", "?"))
                self._discard_executor()
                raise ServiceUnavailable(
                    "The analysis worker stopped unexpectedly; retry.", headers={"retry-after": RETRY_AFTER_SECONDS}
                ) from None

    async def prestart(self) -> None:
        """Start every worker now (each runs ``warm_up_workers`` as it starts), so the first requests after start-up
        do not wait for a worker process to be forked and to import the analytics (the fault tests saw a restarted
        instance's first signals wait for that). One call per worker: the pool forks a worker only when no
        idle one is free, so concurrent calls start them all."""
        if self.workers == 0:
            return
        await asyncio.to_thread(self._start_workers, self._get_executor())

    def _start_workers(self, executor: Executor) -> None:
        # In a thread: a submission that forks a worker blocks until the forkserver has started and preloaded the
        # analytics (seconds under load). On the event loop that stalled the server's start-up, and a signal that
        # came meanwhile could hang a granian worker that was still starting.
        for ready in [executor.submit(_worker_ready) for _ in range(self.workers)]:
            ready.result()

    def _get_executor(self) -> Executor:
        if self._executor is None:
            self._executor = self._new_executor()
        return self._executor

    def _new_executor(self) -> Executor:
        if self.workers == 0:
            return ThreadPoolExecutor(max_workers=1, thread_name_prefix="analysis")
        # forkserver: workers fork from a clean server process that preloaded the analytics, so they start fast
        # and never inherit the event loop's threads and sockets (plain fork from a threaded process can
        # deadlock and is deprecated for that reason).
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(WORKER_MODULES))
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=context, initializer=warm_up_workers)

    def _discard_executor(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    async def aclose(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            # Waiting joins the worker processes; off the loop so other lifespans can shut down meanwhile.
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)


@asynccontextmanager
async def shared_runner(state: Any, settings: Settings) -> AsyncIterator[AnalysisRunner]:
    """The process's one analysis worker pool, whichever router's lifespan asks first.

    POST /v1/analyze and the stored-data routes share the pool (one bound on CPU-heavy work per process). Router
    lifespans run in include order, which follows traffic, not dependencies: the first to enter creates the pool
    and, exiting last, closes it."""
    existing: AnalysisRunner | None = getattr(state, "analysis_runner", None)
    if existing is not None:
        yield existing
        return
    runner = AnalysisRunner(settings)
    state.analysis_runner = runner
    # Served processes start their workers in the background at start-up; tests build many apps and start a pool
    # only when one is used.
    prestart = asyncio.create_task(runner.prestart()) if getattr(state, "served", False) else None
    try:
        yield runner
    finally:
        if prestart is not None:
            prestart.cancel()
            with suppress(asyncio.CancelledError, BrokenProcessPool):
                await prestart
        await runner.aclose()
        del state.analysis_runner
