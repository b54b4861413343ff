"""Schemathesis against a real server: every check and every phase (examples, coverage, fuzzing, stateful), with a
real operator key, over stored market data, must find no server error and no response that breaks the OpenAPI
document. Settings the fuzzer needs (seeded feed, documented 422 exceptions) live in schemathesis.toml.

`FUZZ_MAX_EXAMPLES` (default 25) bounds the examples per operation; `FUZZ_SEED` fixes the run (default: fixed,
so CI is reproducible; set it to explore)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from app.auth.scopes import Role
from app.core.db import create_engine, create_session_factory
from app.keys.admin import ensure_tenant, issue_key
from app.market.aggregation import TIMEFRAMES
from app.market.keys import FeedKeys
from bench.synthetic import stored_walk
from tests.conftest import TEST_REDIS_URL, make_settings
from tests.e2e.test_serve import serve

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
MAX_EXAMPLES = os.environ.get("FUZZ_MAX_EXAMPLES", "25")
SEED = os.environ.get("FUZZ_SEED", "20261125")
BARS = 300


async def seed_market(redis: Redis) -> None:
    keys = FeedKeys("sim", "BTCUSDT")
    for n, (timeframe, interval) in enumerate(TIMEFRAMES.items()):
        rows = stored_walk(BARS, interval_ms=interval, end_ms=1_795_000_000_000, seed=n, step=30, wick=5, trades=20)
        await redis.zadd(keys.bars[timeframe], {orjson.dumps(r): r["t"] for r in rows})
    book = {"bids": [[59_990.0, 1.0], [59_989.5, 2.0]], "asks": [[59_990.5, 1.5]], "last_update_id": 7, "ts": 1}
    await redis.set(keys.book, orjson.dumps(book))


async def operator_key(database_url: str) -> str:
    settings = make_settings(database_url=database_url, redis_url=TEST_REDIS_URL)
    engine = create_engine(settings)
    try:
        async with create_session_factory(engine)() as session:
            tenant = await ensure_tenant(session, "fuzz")
            _key, secret = await issue_key(session, settings, tenant_id=tenant.id, name="fuzz", role=Role.OPERATOR)
            await session.commit()
    finally:
        await engine.dispose()
    return secret


@pytest.mark.slow
async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    postgres_url: str, redis_client: Redis
) -> None:
    await seed_market(redis_client)
    key = await operator_key(postgres_url)
    env = {
        "DELTAFLOW_DATABASE_URL": postgres_url,
        "DELTAFLOW_REDIS_URL": TEST_REDIS_URL,
        "DELTAFLOW_FEEDS": "sim:BTCUSDT",
        "DELTAFLOW_ACCESS_LOG": "false",
        "DELTAFLOW_LOG_LEVEL": "WARNING",
        "DELTAFLOW_BACKGROUND_JOBS": "false",
        # The fuzzer is one tenant sending thousands of requests: a budget it never spends keeps it exploring the
        # routes rather than the 429 (which tests/keys/test_ratelimit.py covers).
        "DELTAFLOW_RATE_LIMIT_PER_SECOND": "100000",
        "DELTAFLOW_RATE_LIMIT_BURST": "1000000",
    }
    async with serve(workers=1, env=env) as (_process, base_url):
        fuzzer = await asyncio.create_subprocess_exec(
            SCHEMATHESIS, "--no-color", "run", f"{base_url}/openapi.json",
            "--checks", "all", "--phases", "examples,coverage,fuzzing,stateful",
            "--max-examples", MAX_EXAMPLES, "--seed", SEED, "--workers", "1",
            "-H", f"Authorization: Bearer {key}",
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await asyncio.wait_for(fuzzer.communicate(), timeout=600)
    report = output.decode(errors="replace")
    assert fuzzer.returncode == 0, report[-12_000:]
    # Every operation was exercised (a filter or config mistake must not pass by testing nothing).
    selected = re.search(r"Selected: (\d+)/(\d+)", report)
    tested = re.search(r"Tested: (\d+)", report)
    assert selected is not None, report[-4000:]
    assert tested is not None, report[-4000:]
    assert selected.group(1) == selected.group(2) == tested.group(1), report[-4000:]
    generated = re.search(r"(\d+) generated", report)
    assert generated is not None, report[-4000:]
    assert int(generated.group(1)) >= 20 * int(tested.group(1)), report[-4000:]
