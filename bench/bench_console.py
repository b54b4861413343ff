"""The console's cost: none for the API, and pages fast enough for a large tenant.

Prints, measured in this run:
- cached `GET /v1/signals` throughput as a ratio of `GET /healthz` through a real server (2 workers, granian),
  with the console mounted and with it switched off (`DELTAFLOW_CONSOLE_ENABLED=false`), side by side: the
  console's middleware touches only `/console` paths, so the two ratios must agree within noise;
- console pages rendered in-process for a tenant with 1 000 keys and a year of usage: p50 / p95 over 200 requests
  each of the keys page (first 100 keys), the usage page (30 days and 365 days) and the audit page (target p95 < 50 ms).
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
from httpx import ASGITransport, AsyncClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.auth.scopes import Role
from app.config import Settings
from app.console.passwords import PasswordHasher
from app.console.service import ConsoleRole, UserService
from app.core.heap import freeze_startup_heap
from app.core.migrations import upgrade_to_head
from app.keys.admin import ensure_tenant, issue_key
from app.main import create_app
from app.models import UsageCount
from bench.bench_signals import PATH, stored_bars
from bench.bench_signals import seed as seed_bars
from bench.server import alternated_load, bench_key

CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "50"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
KEYS = 1000
DAYS = 365
REQUESTS = 200
ROUTES = ("GET /v1/signals/{venue}/{symbol}", "GET /v1/candles/{venue}/{symbol}", "GET /v1/me")
PASSWORD = "bench console passphrase"  # noqa: S105 - a throwaway account in a temporary database


def api_ratios(database_url: str) -> list[tuple[str, float, float, float]]:
    client = redis.Redis.from_url(REDIS_URL)
    seed_bars(client, stored_bars(1000))
    client.close()
    env = {
        "DELTAFLOW_DATABASE_URL": database_url,
        "DELTAFLOW_REDIS_URL": REDIS_URL,
        "DELTAFLOW_FEEDS": "binance:BTCUSDT",
        "DELTAFLOW_ACCESS_LOG": "false",
    }
    headers = {"X-API-Key": bench_key(env, tenant="bench-console")}
    values = {"console mounted": "true", "console off": "false"}
    rows = alternated_load(env, "DELTAFLOW_CONSOLE_ENABLED", values, PATH, headers)
    return [(label, health, cached, cached / health) for label, health, cached in rows]


async def seed_tenant(settings: Settings) -> None:
    app = create_app(settings)
    async with app.router.lifespan_context(app), app.state.session_factory() as session:
        tenant = await ensure_tenant(session, "large")
        await UserService(session, settings, PasswordHasher(settings)).create(
            tenant, "admin@large.example", PASSWORD, ConsoleRole.ADMIN, via="bench"
        )
        key_ids = []
        for index in range(KEYS):
            key, _ = await issue_key(session, settings, tenant_id=tenant.id, name=f"key-{index}", role=Role.READER)
            key_ids.append(key.id)
        today = datetime.now(UTC).date()
        for offset in range(DAYS):
            day = today - timedelta(days=offset)
            for key_id in key_ids[offset % 50 :: 50]:  # 20 keys busy each day
                for route in ROUTES:
                    for status_class, requests in ((2, 900), (4, 12)):
                        session.add(UsageCount(day=day, tenant_id=tenant.id, api_key_id=key_id, route=route,
                                               status_class=status_class, requests=requests))  # fmt: skip
        await session.commit()


async def page_times(settings: Settings) -> list[tuple[str, float, float]]:
    app = create_app(settings)
    year_ago = (datetime.now(UTC).date() - timedelta(days=DAYS - 1)).isoformat()
    pages = [  # the last is the longest range a user can ask for, reported beside the default views
        ("keys (first 100 of 1 000)", "/console/keys"),
        ("usage (default: 30 days)", "/console/usage"),
        ("audit (first 50)", "/console/audit"),
        ("usage, a whole year", f"/console/usage?from={year_ago}"),
    ]
    rows = []
    async with app.router.lifespan_context(app):
        # As a served process does after start-up (app/core/heap.py): without it the full collections that walk
        # the start-up heap (~100 ms each) land in the tail of whatever request is running.
        freeze_startup_heap()
        transport = ASGITransport(app=app)
        async with AsyncClient(
            transport=transport, base_url="https://bench", headers={"sec-fetch-site": "same-origin"}
        ) as client:
            form = await client.get("/console/login")
            token = re.search(r'name="csrf" value="([^"]*)"', form.text)
            assert token is not None
            signed = await client.post(
                "/console/login", data={"csrf": token.group(1), "email": "admin@large.example", "password": PASSWORD}
            )
            assert signed.status_code == 303, signed.text
            for label, path in pages:
                for _ in range(10):  # warm the template cache and the connection pool
                    assert (await client.get(path)).status_code == 200
                samples = []
                for _ in range(REQUESTS):
                    started = time.perf_counter()
                    response = await client.get(path)
                    samples.append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 200
                samples.sort()
                rows.append((label, statistics.median(samples), samples[int(len(samples) * 0.95) - 1]))
    return rows


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        database_url = f"sqlite+aiosqlite:///{scratch}/bench.db"
        upgrade_to_head(database_url)
        settings = Settings(database_url=database_url, redis_url=f"memory://bench-console-{uuid.uuid4().hex}",
                            background_jobs=False, access_log=False, log_level="WARNING")  # fmt: skip
        asyncio.run(seed_tenant(settings))
        pages = asyncio.run(page_times(settings))
        print(f"console pages in-process, tenant with {KEYS} keys and {DAYS} days of usage, {REQUESTS} requests each")
        print(f"{'page':<28} {'p50 ms':>8} {'p95 ms':>8}")
        for label, p50, p95 in pages:
            print(f"{label:<28} {p50:>8.2f} {p95:>8.2f}")
        worst = max(p95 for _, _, p95 in pages[:-1])
        verdict = "met" if worst < 50 else "MISSED"
        print(f"target: every page as it opens, p95 < 50 ms -> {verdict} (worst {worst:.1f} ms)\n")

        ratios = api_ratios(database_url)
    print(f"cached GET /v1/signals vs GET /healthz, {CONNECTIONS} connections, {SECONDS:.0f} s each, 2 workers")
    print(f"{'run':<18} {'healthz req/s':>14} {'signals req/s':>14} {'ratio':>7}")
    for label, health, cached, ratio in ratios:
        print(f"{label:<18} {health:>14.0f} {cached:>14.0f} {ratio:>7.2f}")
    mounted = [r[3] for r in ratios if r[0] == "console mounted"]
    off = [r[3] for r in ratios if r[0] == "console off"]
    spread = max(max(group) - min(group) for group in (mounted, off))
    print(
        f"mean ratio mounted {statistics.mean(mounted):.2f}, off {statistics.mean(off):.2f}; "
        f"difference {statistics.mean(mounted) - statistics.mean(off):+.2f} (run-to-run spread {spread:.2f})"
    )


if __name__ == "__main__":
    main()
