"""100 000 alert rules over 100 markets (1 000 each, 10 % firing), and whether evaluating them moves `/v1` latency:
``python bench/bench_alerts_scale.py``. Prints, measured in this run:

- the pure part (evaluate + step + sentences) per market close and for all 100;
- on PostgreSQL through the real engine (`AlertEngine._evaluate`; the snapshots given, as the analysis pool hands
  them): all 100 closes, first (loading and compiling the rules) and after;
- cached `GET /v1/signals` latency (in-process clients) with the engine idle and evaluating every market's closes
  back to back (alternated), twice: the engine in the API process (`DELTAFLOW_ALERTS_EVALUATE=true`, the embedded
  default), then in a process of its own, as a deployment runs it: the API instances set
  `DELTAFLOW_ALERTS_EVALUATE=false` and one instance outside the load balancer evaluates. On one 2-core machine the
  two processes still share the cores and the database; on separate machines only the database is shared.

The closes run back to back, about 60 times the real cadence of 1-minute bars: the worst case, not the typical minute.
Environment: BENCH_DATABASE_URL, BENCH_REDIS_URL (as bench_alerts)."""

from __future__ import annotations

import asyncio
import functools
import math
import multiprocessing
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

ALTERNATIONS = 5  # idle and busy halves of each p99 comparison, interleaved
HALF_SECONDS = 1.5
CLIENTS = 8  # concurrent in-process pollers


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
    async def one() -> list[float]:
        samples = []
        deadline = time.perf_counter() + seconds
        while (started := time.perf_counter()) < deadline:
            response = await client.get(PATH, headers=headers)
            samples.append(time.perf_counter() - started)  # seconds, as `percentile` takes them
            assert response.status_code == 200, response.text
        return samples

    return [s for samples in await asyncio.gather(*(one() for _ in range(CLIENTS))) for s in samples]


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
    url: str, symbols: list[str], first_bar: int, go: Any, resting: Any, stop: Any, rounds: Any
) -> None:
    """A dedicated evaluating instance (DELTAFLOW_ALERTS_EVALUATE=true there, false on the API instances): every
    market's closes, back to back, whenever `go` is set."""

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


async def engine_scale() -> list[tuple[str, float]]:
    """100 000 rules over 100 markets through the real engine on Postgres, and `/v1` latency beside it: the engine
    in a process of its own, then in the API process."""
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
                bar = {"ms": FIRST_BAR + 1000 * MINUTE}
                all_closes = closes_of(app.state.alert_engine, symbols, bar)
                first = await all_closes()  # loads and compiles the 100 markets' rules
                totals = [await all_closes() for _ in range(2)]
                freeze_startup_heap()  # the compiled rules are long-lived, as after a served process's start-up
                here = await in_this_process(http, headers, all_closes)
    return [
        ("all 100 closes through the engine, first (loads, compiles the rules)", first),
        ("all 100 closes through the engine (mean of the next 2)", statistics.mean(totals)),
        *latency_rows("engine in the API process", here),
        *latency_rows("engine in its own process", away),
    ]


@dataclass
class Samples:
    """Cached-signal latencies (seconds) of each idle and each busy half, and how many rounds of 100 closes ran."""

    idle: list[list[float]] = field(default_factory=list)
    busy: list[list[float]] = field(default_factory=list)
    rounds: int = 0


async def alternate(
    http: AsyncClient, headers: dict[str, str], busy: Callable[[], AbstractAsyncContextManager[None]]
) -> list[list[float]]:
    """ALTERNATIONS idle halves and busy halves, interleaved: drift in the machine's load shows as spread between
    halves of one kind, not as a difference between the kinds. Returns idle and busy halves, alternately."""
    halves: list[list[float]] = []
    for _ in range(ALTERNATIONS):
        halves.append(await poll(http, headers, HALF_SECONDS))
        async with busy():
            halves.append(await poll(http, headers, HALF_SECONDS))
    return halves


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

    halves = await alternate(http, headers, busy)
    samples.idle, samples.busy = halves[::2], halves[1::2]
    return samples


async def in_own_process(
    http: AsyncClient, headers: dict[str, str], url: str, symbols: list[str], first_bar: int
) -> Samples:
    context = multiprocessing.get_context("spawn")
    go, resting, stop, rounds = context.Event(), context.Event(), context.Event(), context.Value("i", -1)
    child = context.Process(target=closes_in_own_process, args=(url, symbols, first_bar, go, resting, stop, rounds))
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
        halves = await alternate(http, headers, busy)
        return Samples(idle=halves[::2], busy=halves[1::2], rounds=int(rounds.value))
    finally:
        stop.set()
        await asyncio.to_thread(child.join, 120)


def latency_rows(where: str, samples: Samples) -> list[tuple[str, float]]:
    idle = [s for half in samples.idle for s in half]
    busy = [s for half in samples.busy for s in half]
    rows = [
        (f"{where}: cached GET /v1/signals ({CLIENTS} in-process clients), engine idle: p50", percentile(idle, 0.5)),
        ("  p99", percentile(idle, 0.99)),
        (f"  engine evaluating every market's closes back to back ({samples.rounds} rounds of 100): p50",
         percentile(busy, 0.5)),
        ("  p99", percentile(busy, 0.99)),
    ]  # fmt: skip
    for kind, halves in (("idle", samples.idle), ("busy", samples.busy)):
        p99s = sorted(percentile(half, 0.99) for half in halves)
        rows += [(f"  p99 of each {kind} {HALF_SECONDS:g} s: lowest", p99s[0]),
                 ("    median", statistics.median(p99s)), ("    highest", p99s[-1])]  # fmt: skip
    return rows


def verdicts(rows: list[tuple[str, float]]) -> list[str]:
    """Per placement: did the busy engine move `/v1` p99? Not if the busy halves' median p99 is within 1.5 x the idle
    halves' median and below the highest idle half: the run's own spread, measured beside it."""
    lines = []
    for where in ("engine in its own process", "engine in the API process"):
        at = next(i for i, (label, _) in enumerate(rows) if label.startswith(where))
        idle_median, idle_highest, busy_median = rows[at + 5][1], rows[at + 6][1], rows[at + 8][1]
        moved = busy_median > 1.5 * idle_median or busy_median > idle_highest
        lines.append(f"{where}: median p99 of the halves {idle_median:.1f} ms idle (highest {idle_highest:.1f}), "
                     f"{busy_median:.1f} ms busy -> {'MOVED' if moved else 'not moved'}")  # fmt: skip
    return lines


def main() -> int:
    started = time.perf_counter()
    rows = [(f"{MARKETS * PER_MARKET} rules over {MARKETS} markets, 10 % firing", float("nan")), *pure_scale()]
    rows += asyncio.run(engine_scale())
    print(f"{'':<96} {'ms':>9}")
    for label, value in rows:
        print(f"{label:<96} {'' if math.isnan(value) else f'{value:9.1f}'}")
    for line in verdicts(rows):
        print(line)
    print(f"this benchmark ran {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
