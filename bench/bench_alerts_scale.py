"""100 000 alert rules over 100 markets (1 000 each, 10 % firing), and whether evaluating them moves `/v1` latency:
``python bench/bench_alerts_scale.py``. Prints, measured in this run:

- the pure part (evaluate + step + sentences) per market close and for all 100;
- on PostgreSQL through the real engine (`AlertEngine._evaluate`; the snapshots given, as the analysis pool hands
  them): all 100 closes, first (loading and compiling the rules) and after;
- cached `GET /v1/signals` latency, open loop (RATE a second, each request timed from when it was due), in idle
  halves and busy halves interleaved, the engine evaluating every market's closes back to back in the busy ones
  (a round every 2-5 s instead of one a minute), and the same weighted to the real cadence (one round a
  minute). Three placements: the engine in a process of its own, as a deployment runs it
  (`DELTAFLOW_ALERTS_EVALUATE=false` on the API instances, one evaluating instance outside the load balancer),
  sharing this machine's cores with the API process and PostgreSQL; the same with the API process (and Redis)
  pinned to one core, PostgreSQL and the evaluator to the others (`bench/cores.py`: the closest one machine comes
  to the evaluator and the database on machines of their own); and the engine in the API process
  (`DELTAFLOW_ALERTS_EVALUATE=true`, the embedded default).

Environment: BENCH_DATABASE_URL, BENCH_REDIS_URL (as bench_alerts)."""

from __future__ import annotations

import asyncio
import functools
import math
import multiprocessing
import os
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis
from httpx import ASGITransport, AsyncClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.alerts.engine import AlertEngine
from app.alerts.evaluator import BarSnapshot
from app.alerts.snapshot_json import snapshot_document
from app.auth.scopes import Role
from app.config import Settings
from app.core.heap import freeze_startup_heap
from app.keys.admin import ensure_tenant, issue_key
from app.main import create_app
from app.market.keys import FeedKeys
from bench.bench_alerts import (
    FIRST_BAR,
    MARKETS,
    MINUTE,
    PER_MARKET,
    REDIS_URL,
    TIMEFRAME,
    VENUE,
    close,
    compiled,
    insert_rules,
    median_ms,
    rule_rows,
    scratch_postgres,
    snapshots,
    steady_state,
)
from bench.bench_signals import PATH, stored_bars
from bench.clients import percentile
from bench.cores import cores_apart

ALTERNATIONS = 5  # idle and busy halves of each p99 comparison, interleaved
HALF_SECONDS = 3.0
RATE = 300  # cached `GET /v1/signals` a second, in process: about a quarter of what the API process serves


def pure_scale() -> list[tuple[str, float]]:
    tenants = [uuid.uuid4() for _ in range(50)]
    markets = [compiled(rule_rows(tenants, 0.1, PER_MARKET, f"S{m:03}USDT", seed=m)) for m in range(MARKETS)]
    bar_ms = FIRST_BAR + MINUTE
    states = [steady_state(rules, bar_ms) for rules in markets]
    pairs = list(zip(markets, states, strict=True))
    per_close = [median_ms(functools.partial(close, rules, state, bar_ms), runs=3) for rules, state in pairs]
    total = median_ms(lambda: [close(rules, state, bar_ms) for rules, state in pairs], runs=3)
    return [
        ("evaluate + step + sentences, one market's close (median)", statistics.median(per_close)),
        ("  all 100 markets' closes, one after the other", total),
    ]


async def poll(client: AsyncClient, headers: dict[str, str], seconds: float) -> list[float]:
    """Open loop: a request every 1/RATE s, each timed from when it was due, not from when it was sent. Closed-loop
    pollers (the previous form) wait for their answer before asking again, so a 300 ms stall of the event loop
    delayed one request per poller and hid in p99.9; here every request due during the stall waits for it
    (coordinated omission, as wrk2 corrects for it)."""
    samples: list[float] = []

    async def one(due: float) -> None:
        response = await client.get(PATH, headers=headers)
        samples.append(time.perf_counter() - due)  # seconds, as `percentile` takes them
        assert response.status_code == 200, response.text

    started = time.perf_counter()
    sent: list[asyncio.Task[None]] = []
    for n in range(int(seconds * RATE)):
        due = started + n / RATE
        if (wait := due - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        sent.append(asyncio.create_task(one(due)))
    await asyncio.gather(*sent)
    return samples


def bench_settings(url: str) -> Settings:
    return Settings(database_url=url, redis_url=REDIS_URL, log_level="WARNING", background_jobs=False,
                    analyze_workers=0, signal_bars=200, rate_limit_per_second=1e6,
                    rate_limit_burst=10**7)  # fmt: skip


def closes_of(engine: AlertEngine, symbols: list[str], bar: dict[str, int]) -> Callable[[], Awaitable[float]]:
    """One close of every market through `engine` (the next bar each call); returns its milliseconds."""

    async def given(market: Any, open_ms: int) -> tuple[dict[str, Any], BarSnapshot, BarSnapshot]:
        current, previous = snapshots(open_ms + MINUTE)
        return snapshot_document(current), current, previous

    engine._snapshots = given  # type: ignore[method-assign]  # the analysis pool's part, off the loop

    async def all_closes() -> float:
        started = time.perf_counter()
        bar["ms"] += MINUTE

        async def one(market: Any) -> None:
            async with engine._slots:  # as `_run_market` does: a few markets at once
                await engine._evaluate(market, bar["ms"] - MINUTE)

        await asyncio.gather(*(one((VENUE, s, TIMEFRAME)) for s in symbols))
        return (time.perf_counter() - started) * 1000

    return all_closes


def closes_in_own_process(
    url: str, symbols: list[str], first_bar: int, events: tuple[Any, Any, Any, Any], cores: set[int] | None
) -> None:
    """A dedicated evaluating instance (DELTAFLOW_ALERTS_EVALUATE=true there, false on the API instances): every
    market's closes, back to back, whenever `go` is set; on `cores` only, when given."""
    go, resting, stop, rounds = events
    if cores:
        os.sched_setaffinity(0, cores)

    async def run() -> None:
        app = create_app(bench_settings(url))
        async with app.router.lifespan_context(app):
            all_closes = closes_of(app.state.alert_engine, symbols, {"ms": first_bar})
            await all_closes()  # loads and compiles the rules
            rounds.value = 0
            while not stop.is_set():
                if go.is_set():
                    resting.clear()
                    await all_closes()
                    rounds.value += 1
                else:
                    resting.set()  # the parent's idle half starts only once the round in progress ended
                    await asyncio.sleep(0.01)

    asyncio.run(run())


async def engine_scale() -> tuple[list[tuple[str, float]], dict[str, Samples]]:
    """100 000 rules over 100 markets through the real engine on Postgres, and `/v1` latency beside it: the engine
    in a process of its own (sharing the cores, then on cores apart from the API's), then in the API process."""
    with redis.Redis.from_url(REDIS_URL) as client:  # the signal the pollers read: 300 stored bars
        client.flushdb()
        client.zadd(FeedKeys("binance", "BTCUSDT").bars["1m"], {orjson.dumps(r): r["t"] for r in stored_bars(300)})
    tenants = [uuid.uuid4() for _ in range(50)]
    symbols = [f"S{m:03}USDT" for m in range(MARKETS)]
    async with scratch_postgres() as url:
        await insert_rules(url, [r for m, s in enumerate(symbols) for r in rule_rows(tenants, 0.1, PER_MARKET, s, m)],
                           tenants)  # fmt: skip
        settings = bench_settings(url)
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            async with app.state.session_factory() as session:
                owner = await ensure_tenant(session, "bench-alerts")
                _, secret = await issue_key(session, settings, tenant_id=owner.id, name="bench", role=Role.READER)
                await session.commit()
            headers = {"X-API-Key": secret}
            async with AsyncClient(transport=ASGITransport(app=app), base_url="http://bench") as http:
                await poll(http, headers, 0.5)  # computes and caches the signal, warms the pools
                freeze_startup_heap()
                # First the engine elsewhere, while this process holds no rules (as an API instance with
                # DELTAFLOW_ALERTS_EVALUATE=false): its closes are the bars before this process's.
                away = await in_own_process(http, headers, url, symbols, FIRST_BAR)
                with cores_apart() as cores:
                    apart = None if cores is None else await in_own_process(
                        http, headers, url, symbols, FIRST_BAR + 500 * MINUTE, cores)  # fmt: skip
                bar = {"ms": FIRST_BAR + 1000 * MINUTE}
                all_closes = closes_of(app.state.alert_engine, symbols, bar)
                first = await all_closes()  # loads and compiles the 100 markets' rules
                totals = [await all_closes() for _ in range(2)]
                here = await in_this_process(http, headers, all_closes)
    placements = {"engine in the API process": here, "engine in its own process": away}
    if apart is not None:
        placements["engine in its own process, API on a core of its own"] = apart
    return [
        ("all 100 closes through the engine, first (loads, compiles the rules)", first),
        ("all 100 closes through the engine (mean of the next 2)", statistics.mean(totals)),
        *(row for where, samples in placements.items() for row in latency_rows(where, samples)),
    ], placements


@dataclass
class Samples:
    """Cached-signal latencies (seconds) of each idle and each busy half, and how many rounds of 100 closes ran."""

    idle: list[list[float]] = field(default_factory=list)
    busy: list[list[float]] = field(default_factory=list)
    rounds: int = 0
    busy_seconds: float = 0.0  # wall time with the engine evaluating

    def at_real_cadence(self, quantile: float) -> float:
        """The quantile over a minute of 1-minute bars: one round of 100 closes (its measured length), then idle;
        the busy and idle samples weighted by those shares."""
        assert self.rounds > 0, "no round of closes ended while measured"
        share = min(1.0, self.busy_seconds / self.rounds / 60)
        idle = [s for half in self.idle for s in half]
        busy = [s for half in self.busy for s in half]
        weighted = sorted([(s, (1 - share) / len(idle)) for s in idle] + [(s, share / len(busy)) for s in busy])
        total = 0.0
        for sample, weight in weighted:
            total += weight
            if total > quantile:  # the rank `percentile` takes: int(q * n) + 1 of n equal weights
                return sample * 1000  # ms, as `percentile`
        return weighted[-1][0] * 1000


async def alternate(
    http: AsyncClient,
    headers: dict[str, str],
    busy: Callable[[], AbstractAsyncContextManager[None]],
    samples: Samples,
) -> Samples:
    """ALTERNATIONS idle halves and busy halves, interleaved, into `samples`: drift in the machine's load shows as
    spread between halves of one kind, not as a difference between the kinds."""
    for _ in range(ALTERNATIONS):
        samples.idle.append(await poll(http, headers, HALF_SECONDS))
        started = time.perf_counter()
        async with busy():
            samples.busy.append(await poll(http, headers, HALF_SECONDS))
        samples.busy_seconds += time.perf_counter() - started
    return samples


async def in_this_process(
    http: AsyncClient, headers: dict[str, str], all_closes: Callable[[], Awaitable[float]]
) -> Samples:
    samples = Samples()

    @asynccontextmanager
    async def busy() -> AsyncIterator[None]:
        stop = asyncio.Event()

        async def closing() -> None:
            while not stop.is_set():
                await all_closes()
                samples.rounds += 1

        worker = asyncio.create_task(closing())
        try:
            yield
        finally:
            stop.set()
            await worker

    return await alternate(http, headers, busy, samples)


async def in_own_process(
    http: AsyncClient,
    headers: dict[str, str],
    url: str,
    symbols: list[str],
    first_bar: int,
    cores: set[int] | None = None,
) -> Samples:
    context = multiprocessing.get_context("spawn")
    go, resting, stop, rounds = context.Event(), context.Event(), context.Event(), context.Value("i", -1)
    child = context.Process(
        target=closes_in_own_process, args=(url, symbols, first_bar, (go, resting, stop, rounds), cores)
    )
    child.start()

    @asynccontextmanager
    async def busy() -> AsyncIterator[None]:
        resting.clear()
        go.set()
        try:
            yield
        finally:
            go.clear()
            while not resting.is_set():  # noqa: ASYNC110 - the round in progress ends first, as in-process
                await asyncio.sleep(0.05)

    try:
        while rounds.value < 0:  # waiting for the child to load and compile the rules
            assert child.is_alive(), "the evaluating process died"
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # the child settles (its first round's garbage collected)
        samples = await alternate(http, headers, busy, Samples())
        samples.rounds = int(rounds.value)
        return samples
    finally:
        stop.set()
        await asyncio.to_thread(child.join, 120)


def latency_rows(where: str, samples: Samples) -> list[tuple[str, float]]:
    idle = [s for half in samples.idle for s in half]
    busy = [s for half in samples.busy for s in half]
    rows = [
        (f"{where}: cached GET /v1/signals ({RATE}/s open loop), engine idle: p50", percentile(idle, 0.5)),
        ("  p99", percentile(idle, 0.99)),
        (f"  engine evaluating every market's closes back to back ({samples.rounds} rounds of 100): p50",
         percentile(busy, 0.5)),
        ("  p99", percentile(busy, 0.99)),
        ("  p99.9 idle", percentile(idle, 0.999)),
        ("  p99.9 busy", percentile(busy, 0.999)),
        ("  at the real cadence (one round of closes a minute, then idle; samples weighted): p99",
         samples.at_real_cadence(0.99)),
        ("  p99.9", samples.at_real_cadence(0.999)),
    ]  # fmt: skip
    for kind, halves in (("idle", samples.idle), ("busy", samples.busy)):
        p99s = sorted(percentile(half, 0.99) for half in halves)
        rows += [(f"  p99 of each {kind} {HALF_SECONDS:g} s: lowest", p99s[0]),
                 ("    median", statistics.median(p99s)), ("    highest", p99s[-1])]  # fmt: skip
    return rows


def verdicts(placements: dict[str, Samples]) -> list[str]:
    """Per placement: did the engine move `/v1` p99? Against the idle halves' own spread, measured beside it: moved
    when the busy figure passes the idle halves' median p99 by more than their spread (highest - lowest). Back to
    back is the worst case (a round every few seconds instead of one a minute); at the real cadence one round a
    minute (a p99 of all samples, weighted, where the others are medians of the halves' p99s: the same quantity
    for the idle samples, which are most of the weight)."""
    lines = []
    for where, samples in placements.items():
        idle = [percentile(half, 0.99) for half in samples.idle]
        limit = statistics.median(idle) + max(idle) - min(idle)
        busy = statistics.median(percentile(half, 0.99) for half in samples.busy)
        minute = samples.at_real_cadence(0.99)
        lines.append(
            f"{where}: p99 idle {statistics.median(idle):.1f} ms (halves {min(idle):.1f}-{max(idle):.1f}: moved past "
            f"{limit:.1f}); back to back {busy:.1f} ms -> {'MOVED' if busy > limit else 'not moved'}; at the real "
            f"cadence {minute:.1f} ms -> {'MOVED' if minute > limit else 'not moved'}"
        )
    return lines


def main() -> int:
    started = time.perf_counter()
    rows = [(f"{MARKETS * PER_MARKET} rules over {MARKETS} markets, 10 % firing", float("nan")), *pure_scale()]
    engine_rows, placements = asyncio.run(engine_scale())
    rows += engine_rows
    print(f"{'':<96} {'ms':>9}")
    for label, value in rows:
        print(f"{label:<96} {'' if math.isnan(value) else f'{value:9.1f}'}")
    for line in verdicts(placements):
        print(line)
    print(f"this benchmark ran {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
