"""API-key verification cost: in-process (cache hit, Redis hit, database) and through a real server.

Prints, measured in this run:
- verification per request on the hot path (in-process cache hit) vs a Redis hit vs a database lookup
  (target: cached < 0.3 ms);
- authenticated `GET /v1/me` throughput as a ratio of unauthenticated `GET /healthz`, 2 workers (target >= 0.7).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.auth.scopes import Role
from app.auth.verifier import KeyVerifier
from app.config import Settings
from app.core.db import create_engine, create_session_factory
from app.core.migrations import upgrade_to_head
from app.core.redis import create_redis
from app.keys.admin import ensure_tenant, issue_key
from bench.loadgen import run_load
from bench.server import bench_key, running_server

CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "50"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


async def _per_call_ms(verifier: KeyVerifier, key: str, calls: int, before_each: object = None) -> float:
    samples = []
    for _ in range(calls):
        if callable(before_each):
            before_each()
        started = time.perf_counter()
        await verifier.verify(key)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


async def in_process(database_url: str) -> list[tuple[str, float]]:
    settings = Settings(database_url=database_url, redis_url=REDIS_URL)
    engine = create_engine(settings)
    sessions = create_session_factory(engine)
    redis = create_redis(settings)
    try:
        async with sessions() as session:
            tenant = await ensure_tenant(session, "bench")
            _key, secret = await issue_key(session, settings, tenant_id=tenant.id, name="bench", role=Role.READER)
            await session.commit()
        verifier = KeyVerifier(
            pepper=settings.secret_key.get_secret_value(),
            redis=redis,
            session_factory=sessions,
            cache_ttl_seconds=settings.auth_cache_ttl_seconds,
            local_cache_size=settings.auth_local_cache_size,
            redis_timeout_seconds=settings.auth_redis_timeout_seconds,
        )
        await verifier.verify(secret)
        key_hash = verifier.hash(secret)
        local = await _per_call_ms(verifier, secret, 20_000)
        redis_hit = await _per_call_ms(verifier, secret, 2_000, lambda: verifier._local.pop(key_hash, None))

        async def drop_both() -> None:
            verifier._local.pop(key_hash, None)
            await redis.delete(f"auth:key:{key_hash}")

        database = []
        for _ in range(300):
            await drop_both()
            started = time.perf_counter()
            await verifier.verify(secret)
            database.append(time.perf_counter() - started)
        return [
            ("cache hit (in-process)", local),
            ("Redis hit", redis_hit),
            ("database (cache miss)", statistics.median(database) * 1000),
        ]
    finally:
        await redis.aclose()
        await engine.dispose()


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        database_url = f"sqlite+aiosqlite:///{scratch}/bench.db"
        upgrade_to_head(database_url)
        rows = asyncio.run(in_process(database_url))
        print("verification per request (median)")
        print(f"{'path':<26} {'ms':>8}")
        for name, value in rows:
            print(f"{name:<26} {value:>8.4f}")
        target = "met" if rows[0][1] < 0.3 else "MISSED"
        print(f"target: cached < 0.3 ms -> {target}\n")

        env = {"DELTAFLOW_DATABASE_URL": database_url, "DELTAFLOW_REDIS_URL": REDIS_URL}
        key = bench_key(env, tenant="bench-http")
        with running_server(workers=2, **env) as base_url:
            health = run_load(base_url, "/healthz", connections=CONNECTIONS, seconds=SECONDS)
            me = run_load(base_url, "/v1/me", connections=CONNECTIONS, seconds=SECONDS, headers={"X-API-Key": key})
    ratio = me.requests_per_second / health.requests_per_second
    print(f"{CONNECTIONS} connections, {SECONDS:.0f} s each, 2 workers, load by {health.tool}")
    print(f"{'route':<22} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for label, result in (("GET /healthz", health), ("GET /v1/me (key)", me)):
        print(
            f"{label:<22} {result.requests_per_second:>10.0f} {result.p50_ms:>8.2f} {result.p99_ms:>8.2f}"
            f" {result.errors:>8}"
        )
    print(f"authenticated / unauthenticated = {ratio:.2f} (target >= 0.7 -> {'met' if ratio >= 0.7 else 'MISSED'})")


if __name__ == "__main__":
    main()
