"""The call log and usage reports at scale: every query's p50/p95 on PostgreSQL with 10 million calls.

Seeds `BENCH_SCALE_CALLS` calls (default 10 000 000) over 100 tenants and 30 days into the partitioned
`api_calls`, with the matching `usage_counts`, in a database kept between runs (`deltaflow_bench_calls_scale`,
re-seeded only when its size differs; seeding takes a few minutes once). Tenants are skewed as real ones are:
(log-uniform: the busiest holds ~15 % of all calls), and every query is measured on the
busiest tenant (the worst case) and on random tenants.

Prints, measured in this run, for each query the route runs (the repository functions themselves): p50, p95 and
max over `BENCH_SCALE_ROUNDS` (default 60) runs with varied arguments, against the target p95 < 100 ms; then COPY
ingestion into the full table (target >= 20 000 calls/s per process) and a usage report served from its Redis
cache beside the same report from the database.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.auth.principal import Principal
from app.auth.scopes import ROLE_SCOPES, Role
from app.config import Settings
from app.core.db import create_engine, create_session_factory
from app.core.migrations import upgrade_to_head
from app.keys.service import Actor
from app.usage import repository as usage_repository
from app.usage.cache import UsageReportCache
from app.usage.calls import repository
from app.usage.calls.repository import CallFilter, CallRow, ensure_partitions
from app.usage.repository import UsageGrouping
from app.usage.service import UsageService

ADMIN_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
CALLS = int(os.environ.get("BENCH_SCALE_CALLS", "10000000"))
ROUNDS = int(os.environ.get("BENCH_SCALE_ROUNDS", "60"))
DATABASE = "deltaflow_bench_calls_scale"
TENANTS = 100
KEYS_PER_TENANT = 5
DAYS = 30
TARGET_MS = 100.0
ROUTES = ("/v1/signals/{venue}/{symbol}", "/v1/candles/{venue}/{symbol}", "/v1/me", "/v1/usage", "/v1/keys")


def _dsn(database: str) -> str:
    return make_url(ADMIN_URL).set(drivername="postgresql", database=database).render_as_string(hide_password=False)


def _url(database: str) -> str:
    return make_url(ADMIN_URL).set(database=database).render_as_string(hide_password=False)


def tenant_id(rank: int) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"bench-tenant-{rank}")


def key_id(rank: int, key: int) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"bench-key-{rank}-{key}")


SEED_DAY = """
INSERT INTO api_calls (at, id, tenant_id, api_key_id, method, route, status, latency_ms, response_bytes,
                       client_address, request_id, user_agent, cache)
SELECT $1::timestamptz + make_interval(secs => 86400.0 * n / $2), gen_random_uuid(),
       ($3::uuid[])[rank + 1], ($4::uuid[])[rank * $5 + n % $5 + 1], CASE WHEN n % 10 = 0 THEN 'POST' ELSE 'GET' END,
       ($6::text[])[n % 5 + 1],
       CASE WHEN n % 211 = 0 THEN 500 WHEN n % 37 = 0 THEN 429 WHEN n % 13 = 0 THEN 404
            WHEN n % 5 = 0 THEN 304 ELSE 200 END,
       -- mostly a few ms, with a long tail: 0.1 % of calls above 1 s
       CASE WHEN n % 1000 = 0 THEN 1000 + (n % 4000) ELSE exp(random() * 4) END,
       200 + (n % 5000), '203.0.113.' || (n % 250), md5(n::text || $1::text), 'bench-client/1.0',
       CASE WHEN n % 3 = 0 THEN 'miss' ELSE 'hit' END
-- The tenant's rank is log-uniform: P(rank r) = ln((r + 2) / (r + 1)) / ln(101), ~15 % for the busiest.
FROM (SELECT n, least(99, floor(exp(random() * ln(101.0)) - 1))::int AS rank FROM generate_series(0, $2 - 1) AS n) d
"""

SEED_USAGE = """
INSERT INTO usage_counts (day, tenant_id, api_key_id, route, status_class, requests)
SELECT (at AT TIME ZONE 'UTC')::date, tenant_id, api_key_id, route, status / 100, count(*)
FROM api_calls GROUP BY 1, 2, 3, 4, 5
"""


async def _seeded(first: date) -> bool:
    admin = await asyncpg.connect(_dsn("postgres"))
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE)
        if exists:
            connection = await asyncpg.connect(_dsn(DATABASE))
            try:
                marker = await connection.fetchval(
                    "SELECT value FROM bench_marker WHERE name = 'calls'"
                    " AND EXISTS (SELECT 1 FROM bench_marker WHERE name = 'first' AND value = $1)",
                    first.toordinal(),
                )
            except asyncpg.UndefinedTableError:
                marker = None
            finally:
                await connection.close()
            if marker == CALLS:
                return True
            await admin.execute(f'DROP DATABASE "{DATABASE}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
        return False
    finally:
        await admin.close()


async def seed(first: date) -> None:
    if await _seeded(first):
        # Migrations added since the seeding (an index, say) still apply: the numbers are of today's schema.
        await asyncio.to_thread(upgrade_to_head, _url(DATABASE))
        print(f"reusing {DATABASE} ({CALLS:,} calls seeded earlier)")
        return
    started = time.perf_counter()
    await asyncio.to_thread(upgrade_to_head, _url(DATABASE))
    settings = Settings(database_url=_url(DATABASE), log_level="WARNING")
    engine = create_engine(settings)
    async with create_session_factory(engine)() as session, session.begin():
        await ensure_partitions(session, first, DAYS)
    await engine.dispose()
    connection = await asyncpg.connect(_dsn(DATABASE))
    try:
        tenants = [tenant_id(rank) for rank in range(TENANTS)]
        await connection.executemany(
            "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, now())",
            [(tenant, f"bench-{rank}") for rank, tenant in enumerate(tenants)],
        )
        keys = [key_id(rank, key) for rank in range(TENANTS) for key in range(KEYS_PER_TENANT)]
        per_day = CALLS // DAYS
        for offset in range(DAYS):
            day = datetime.combine(first + timedelta(days=offset), datetime.min.time(), UTC)
            await connection.execute(SEED_DAY, day, per_day, tenants, keys, KEYS_PER_TENANT, list(ROUTES))
            print(f"  seeded day {offset + 1}/{DAYS} ({time.perf_counter() - started:.0f} s)", flush=True)
        await connection.execute(SEED_USAGE)
        await connection.execute("ANALYZE")
        await connection.execute("CREATE TABLE bench_marker (name text PRIMARY KEY, value bigint)")
        await connection.execute(
            "INSERT INTO bench_marker VALUES ('calls', $1), ('first', $2)", CALLS, first.toordinal()
        )
    finally:
        await connection.close()
    print(f"seeded {per_day * DAYS:,} calls in {time.perf_counter() - started:.0f} s")


Query = Callable[[random.Random], Awaitable[object]]


async def measure(label: str, query: Query, rng: random.Random) -> tuple[str, float, float, float]:
    await query(rng)  # warm the plan cache and the buffers the first run touches
    timings = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        await query(rng)
        timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    p95 = timings[min(len(timings) - 1, int(len(timings) * 0.95))]
    return label, statistics.median(timings), p95, timings[-1]


def _queries(factory: async_sessionmaker[AsyncSession], first: date) -> dict[str, Query]:
    last = first + timedelta(days=DAYS - 1)

    def tenant(rng: random.Random, busiest: bool) -> int:
        return 0 if busiest else rng.randrange(TENANTS)

    def page(busiest: bool, **extra: object) -> Query:
        async def run(rng: random.Random) -> object:
            rank = tenant(rng, busiest)
            fields: dict[str, object] = {}
            for name, value in extra.items():
                fields[name] = value(rng, rank) if callable(value) else value
            async with factory() as session:
                return await repository.page(session, CallFilter(tenant_id(rank), **fields), after=None, limit=51)  # type: ignore[arg-type]

        return run

    def hour(rng: random.Random, _rank: int) -> datetime:
        day = first + timedelta(days=rng.randrange(DAYS))
        return datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=rng.randrange(24))

    def deep(busiest: bool) -> Query:
        async def run(rng: random.Random) -> object:
            rank = tenant(rng, busiest)
            after = (hour(rng, rank), uuid.UUID(int=2**127))
            async with factory() as session:
                return await repository.page(session, CallFilter(tenant_id(rank)), after=after, limit=51)

        return run

    def by_request(busiest: bool) -> Query:
        async def run(rng: random.Random) -> object:
            async with factory() as session:
                return await repository.by_request_id(session, tenant_id(tenant(rng, busiest)), "no-such-id")

        return run

    def report(busiest: bool, group: UsageGrouping) -> Query:
        async def run(rng: random.Random) -> object:
            async with factory() as session:
                return await usage_repository.count_by(
                    session, tenant_id(tenant(rng, busiest)), start=first, end=last, group=group, key_id=None
                )

        return run

    queries: dict[str, Query] = {}
    for busiest in (True, False):
        who = "busiest" if busiest else "random"
        queries[f"calls newest 50 ({who})"] = page(busiest)
        queries[f"calls in one hour ({who})"] = page(
            busiest, since=hour, until=lambda rng, rank: hour(rng, rank) + timedelta(hours=1)
        )
        queries[f"calls of one key ({who})"] = page(
            busiest, key_id=lambda rng, rank: key_id(rank, rng.randrange(KEYS_PER_TENANT))
        )
        queries[f"calls of one route ({who})"] = page(busiest, route=lambda rng, _r: rng.choice(ROUTES))
        queries[f"calls with status 500 ({who})"] = page(busiest, status=500)
        queries[f"calls slower than 1 s ({who})"] = page(busiest, min_latency_ms=1000.0)
        queries[f"calls page after a cursor ({who})"] = deep(busiest)
        queries[f"call by request id ({who})"] = by_request(busiest)
        for group in UsageGrouping:
            queries[f"usage 30 days by {group.value} ({who})"] = report(busiest, group)
    return queries


async def ingestion(sessions: async_sessionmaker[AsyncSession]) -> float:
    now = datetime.now(UTC)
    tenant, key = tenant_id(0), key_id(0, 0)
    batches: list[list[CallRow]] = [
        [
            (now, uuid.uuid4(), tenant, key, "GET", ROUTES[0], 200, 0.4, 1800, "203.0.113.7", uuid.uuid4().hex,
             "bench/1.0", "hit")
            for _ in range(5_000)
        ]
        for _ in range(10)
    ]  # fmt: skip
    async with sessions() as session, session.begin():
        await ensure_partitions(session, now.date(), 1)
    started = time.perf_counter()
    for batch in batches:
        async with sessions() as session, session.begin():
            await repository.insert_calls(session, batch)
    rate = sum(map(len, batches)) / (time.perf_counter() - started)
    async with sessions() as session, session.begin():  # keep the seeded table as it was for the next run
        await session.execute(
            text("DELETE FROM api_calls WHERE user_agent = 'bench/1.0'"),
        )
    return rate


async def cached_report(sessions: async_sessionmaker[AsyncSession], first: date) -> tuple[float, float]:
    settings = Settings(database_url=_url(DATABASE), log_level="WARNING")
    redis = Redis.from_url(REDIS_URL)
    cache = UsageReportCache(redis, settings.usage_cache_ttl_seconds)
    tenant = tenant_id(0)
    await cache.invalidate([tenant])
    principal = Principal(
        key_id=key_id(0, 0), tenant_id=tenant, role=Role.ADMIN, scopes=ROLE_SCOPES[Role.ADMIN],
        expires_at=datetime.now(UTC) + timedelta(days=1), name="bench",
    )  # fmt: skip
    actor = Actor(principal=principal, request_id=None)
    timings: dict[bool, list[float]] = {False: [], True: []}
    for use_cache in (False, True):
        for _ in range(ROUNDS):
            async with sessions() as session:
                service = UsageService(session, settings, cache=cache if use_cache else None)
                started = time.perf_counter()
                await service.report(
                    actor, start=first, end=first + timedelta(days=DAYS - 1), group_by=UsageGrouping.DAY,
                    key_id=None, tenant_id=None,
                )  # fmt: skip
                timings[use_cache].append((time.perf_counter() - started) * 1000)
    await redis.aclose()
    return statistics.median(timings[False]), statistics.median(timings[True])


async def run() -> None:
    first = datetime.now(UTC).date() - timedelta(days=DAYS - 1)
    await seed(first)
    engine = create_engine(Settings(database_url=_url(DATABASE), log_level="WARNING"))
    sessions = create_session_factory(engine)
    rng = random.Random(20261202)
    try:
        print(f"\n{CALLS:,} calls, {TENANTS} tenants (busiest ~15 %), {DAYS} days; {ROUNDS} runs per query")
        print(f"{'query':<44} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}  target p95 < {TARGET_MS:.0f} ms")
        worst = 0.0
        for label, query in _queries(sessions, first).items():
            _, p50, p95, high = await measure(label, query, rng)
            worst = max(worst, p95)
            print(f"{label:<44} {p50:>8.1f} {p95:>8.1f} {high:>8.1f}  {'met' if p95 < TARGET_MS else 'MISSED'}")
        print(f"worst p95 {worst:.1f} ms -> {'met' if worst < TARGET_MS else 'MISSED'}")
        rate = await ingestion(sessions)
        print(f"\nCOPY into the {CALLS:,}-call table: {rate:,.0f} calls/s (target >= 20 000 -> "
              f"{'met' if rate >= 20_000 else 'MISSED'})")  # fmt: skip
        database, cached = await cached_report(sessions, first)
        print(f"usage report, busiest tenant, 30 days by day: database {database:.1f} ms, Redis cache {cached:.2f} ms"
              f" (p50)")  # fmt: skip
    finally:
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(run())
