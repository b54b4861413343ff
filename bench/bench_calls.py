"""The call log's cost: how fast calls are written, and what logging every call costs the hot route.

Prints, measured in this run:
- ingestion into PostgreSQL's partitioned `api_calls`: calls per second written by COPY (the recorder's path) beside
  a multi-row INSERT of the same batches (target: COPY >= 20 000 calls/s per process);
- cached `GET /v1/signals` throughput through a real server (2 workers) with the call log on and off, alternated
  three times in the same run (target: on >= 0.9 x off).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import redis
from sqlalchemy import insert
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.config import Settings
from app.core.db import create_engine, create_session_factory
from app.core.migrations import upgrade_to_head
from app.models import ApiCall
from app.usage.calls import repository
from app.usage.calls.maintenance import maintain
from app.usage.calls.repository import COLUMNS, CallRow
from bench.bench_signals import PATH, stored_bars
from bench.bench_signals import seed as seed_bars
from bench.server import alternated_load, bench_key

ADMIN_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "50"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
BATCH = 5_000
BATCHES = 20


def _rows(count: int) -> list[CallRow]:
    tenant, key, now = uuid.uuid4(), uuid.uuid4(), datetime.now(UTC)
    return [
        (now, uuid.uuid4(), tenant, key, "GET", "/v1/signals/{venue}/{symbol}", 200, 0.42, 1800, "203.0.113.7",
         f"{index:032x}", "bench/1.0", "hit")
        for index in range(count)
    ]  # fmt: skip


async def _admin(statement: str) -> None:
    dsn = make_url(ADMIN_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def _database() -> tuple[str, str]:
    name = f"deltaflow_bench_calls_{uuid.uuid4().hex[:8]}"
    await _admin(f'CREATE DATABASE "{name}"')
    return name, make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


async def _drop(name: str) -> None:
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def ingestion(url: str) -> list[tuple[str, float]]:
    settings = Settings(database_url=url, log_level="WARNING")
    engine = create_engine(settings)
    sessions = create_session_factory(engine)
    await maintain(sessions, settings)
    results = []
    try:
        for label in ("COPY (the recorder's path)", "multi-row INSERT"):
            batches = [_rows(BATCH) for _ in range(BATCHES)]
            started = time.perf_counter()
            for batch in batches:
                async with sessions() as session, session.begin():
                    if label.startswith("COPY"):
                        await repository.insert_calls(session, batch)
                    else:
                        await session.execute(insert(ApiCall), [dict(zip(COLUMNS, row, strict=True)) for row in batch])
            results.append((label, BATCH * BATCHES / (time.perf_counter() - started)))
    finally:
        await engine.dispose()
    return results


def throughput(url: str) -> list[tuple[str, float]]:
    client = redis.Redis.from_url(REDIS_URL)
    seed_bars(client, stored_bars(1000))
    client.close()
    env = {
        "DELTAFLOW_DATABASE_URL": url,
        "DELTAFLOW_REDIS_URL": REDIS_URL,
        "DELTAFLOW_FEEDS": "binance:BTCUSDT",
        "DELTAFLOW_ACCESS_LOG": "false",
    }
    headers = {"X-API-Key": bench_key(env, tenant="bench-calls")}
    values = {"call log on": "true", "call log off": "false"}
    rows = alternated_load(env, "DELTAFLOW_CALL_LOG_ENABLED", values, PATH, headers)
    return [(label, rate) for label, _health, rate in rows]


def main() -> None:
    name, url = asyncio.run(_database())
    try:
        upgrade_to_head(url)
        speeds = asyncio.run(ingestion(url))
        print(f"call-log ingestion into partitioned api_calls, {BATCHES} batches of {BATCH}")
        print(f"{'path':<28} {'calls/s':>10}")
        for label, rate in speeds:
            print(f"{label:<28} {rate:>10.0f}")
        verdict = "met" if speeds[0][1] >= 20_000 else "MISSED"
        print(f"target: COPY >= 20 000 calls/s -> {verdict}\n")
        rows = throughput(url)
    finally:
        asyncio.run(_drop(name))
    print(f"cached GET /v1/signals, {CONNECTIONS} connections, {SECONDS:.0f} s each, 2 workers")
    for label, rate in rows:
        print(f"{label:<14} {rate:>10.0f} req/s")
    on = statistics.mean(rate for label, rate in rows if label == "call log on")
    off = statistics.mean(rate for label, rate in rows if label == "call log off")
    ratio = on / off
    print(f"on / off = {ratio:.3f} (target >= 0.9 -> {'met' if ratio >= 0.9 else 'MISSED'})")


if __name__ == "__main__":
    main()
