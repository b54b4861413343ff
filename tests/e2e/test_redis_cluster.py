"""The service on a real 3-master Redis Cluster (redis-server in cluster mode on loopback ports, started here), so
the hash-tag layout is proven rather than assumed: two app instances in-process (A ingests, B only serves), real
Postgres, `DELTAFLOW_REDIS_CLUSTER=true`.

Ingestion (a Binance look-alike with REST klines and live trades, and simulated feeds) stores bars through cluster
pipelines and the bar-closing script, whose PUBLISH reaches a subscriber on another node; a signal computed on A is
served from the Redis cache on B; a tenant budget is one bucket for both instances; a key verified on A is a Redis
cache hit on B and, once revoked through A, refused by B within a second (the invalidation script's PUBLISH); a
usage report cached by A is a hit on B; the console signs in on both instances, lists the sessions (one GET per
session, across slots) and signs out everywhere; `publish_all` keeps its order across nodes. Finally the keys
are counted per node: they spread over the masters, and every key sharing a hash tag sits on one node."""

from __future__ import annotations

import asyncio
import random
import re
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from httpx import AsyncClient
from prometheus_client import REGISTRY

from app.auth.scopes import Role
from app.auth.verifier import cache_key, generation_key
from app.config import Settings
from app.core import tally
from app.core.redis import RedisClient, create_redis, publish_all
from app.core.security import hash_api_key
from app.main import create_app
from app.market.store import read_candles, read_feed_status
from tests.conftest import make_settings, truncate_all
from tests.console.conftest import browser, hidden, sign_in, user_maker
from tests.helpers import running
from tests.keys.conftest import key_maker
from tests.market.mock_exchange import MockExchange
from tests.market.test_runtime import _capture_with_trades
from tests.redis_cluster import REDIS_CLI, REDIS_SERVER, LocalRedisCluster

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        REDIS_SERVER is None or REDIS_CLI is None, reason="needs redis-server and redis-cli (apt install redis-server)"
    ),
]

SYMBOL = "TESTUSDT"  # the Binance look-alike's symbol
SIM_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "BNBUSDT")
MIN = 60_000
KLINES = 300
T = TypeVar("T")


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRedisCluster]:
    directory = Path(tempfile.mkdtemp(prefix="deltaflow-cluster-"))
    nodes = LocalRedisCluster(directory)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _walk_klines(end_minute: int) -> list[list[object]]:
    """Closed one-minute klines in Binance's REST layout, a random walk near 100, ending three minutes before
    `end_minute` (the minutes after are the capture's live trades)."""
    rng = random.Random(7)  # reproducible test data
    rows: list[list[object]] = []
    close = 100.0
    for i in range(KLINES + 2, 2, -1):
        open_time = end_minute - i * MIN
        price = close
        close = max(1.0, price + rng.gauss(0, 0.4))
        high, low = max(price, close) + rng.random() * 0.2, min(price, close) - rng.random() * 0.2
        volume = round(5 + rng.random() * 5, 3)
        buy = round(volume * rng.random(), 3)
        rows.append([open_time, f"{price:.2f}", f"{high:.2f}", f"{low:.2f}", f"{close:.2f}", str(volume),
                     open_time + MIN - 1, str(volume * 100), 10, str(buy), str(buy * 100), "0"])  # fmt: skip
    return rows


def _settings(cluster: LocalRedisCluster, postgres_url: str, mock: MockExchange, *, ingest: bool) -> Settings:
    return make_settings(
        database_url=postgres_url,
        redis_url=cluster.url,
        redis_cluster=True,
        feeds=f"binance:{SYMBOL};sim:{','.join(SIM_SYMBOLS)}",
        ingest_in_process=ingest,
        binance_ws_url=mock.ws_url,
        binance_rest_url=mock.rest_url,
        market_status_interval_seconds=0.05,
        market_lease_ttl_seconds=1.0,
        sim_rate=200.0,
        signal_bars=200,
        analyze_workers=0,  # signals computed in a thread: no worker processes on the shared machine
        background_jobs=False,
        # The readiness assertion is about pinging every master, not about probe latency: on a saturated CI
        # machine the database check once took 834 ms against the default 500 ms cut-off.
        readiness_check_timeout_seconds=10.0,
        # B must find A's Redis entry still fresh: it is used only within the TTL of A's database read, and on a
        # saturated machine A's signal request (the read first, then the analysis) once took longer than 5 s.
        auth_cache_ttl_seconds=60.0,
        # And A must get its entry stored: in the full suite this process's event loop is slow enough that the
        # 250 ms default cut A's Redis round trip off (then the key is verified from the database, correctly, but
        # not cached in Redis, which is what this test looks at).
        auth_redis_timeout_seconds=5.0,
        # A usage flush (every 10 s by default) committed between A's usage report and B's read of it bumps the
        # tenant's generation and drops the cached report: under load one landed there and B missed. Nothing here
        # reads flushed counts, and shutdown flushes what is left.
        usage_flush_seconds=3600.0,
    )


async def _until(check: Callable[[], Awaitable[T | None]], what: str, limit_s: float = 15.0) -> T:
    deadline = time.monotonic() + limit_s
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def _lookups(cache: str, result: str) -> float:
    tally.flush()  # cache lookups are tallied in memory between scrapes
    return REGISTRY.get_sample_value("deltaflow_cache_lookups_total", {"cache": cache, "result": result}) or 0.0


async def test_ingestion_signals_rate_limits_and_key_cache_run_on_a_three_master_cluster(
    cluster: LocalRedisCluster, postgres_url: str
) -> None:
    started = time.monotonic()
    now = int(time.time() * 1000)
    minute = now - now % MIN
    capture, _live_volume = _capture_with_trades(now)
    probe = create_redis(make_settings(redis_url=cluster.url, redis_cluster=True))
    closes = probe.pubsub(ignore_subscribe_messages=True)
    try:
        # Subscribed before ingestion starts: bar closes are published from the bar-closing script in a cluster
        # pipeline, on whichever node holds the feed's slot.
        await closes.psubscribe("md:{*}:closed")
        async with MockExchange(capture, klines={"1m": _walk_klines(minute)}) as mock:
            app_a = create_app(_settings(cluster, postgres_url, mock, ingest=True))
            app_b = create_app(_settings(cluster, postgres_url, mock, ingest=False))
            async with running(app_a) as a, running(app_b) as b:
                await _ingestion_stores_bars(probe, closes)
                await _flows(app_a, app_b, a, b, probe)
        await _layout_is_spread_and_tags_hold(cluster)
        await _publish_all_keeps_order_across_nodes(probe)
    finally:
        await closes.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves this unannotated
        await probe.aclose()
        await truncate_all(postgres_url)
    assert time.monotonic() - started < 60, "the cluster test must stay within its 60 s budget"


async def _ingestion_stores_bars(redis: RedisClient, closes: Any) -> None:
    async def backfilled() -> list[Any] | None:
        candles = await read_candles(redis, "binance", SYMBOL, "1m", KLINES + 10)
        closed = [c for c in candles if c["closed"]]
        return candles if len(closed) >= KLINES + 2 else None  # the klines and the live minutes after them

    candles = await _until(backfilled, "backfilled and live-closed bars")
    assert [c["t"] for c in candles] == sorted({c["t"] for c in candles}), "one bar per open time, in order"

    async def every_sim_feed() -> list[dict[str, Any]] | None:
        statuses = await read_feed_status(redis)
        streaming = [s for s in statuses if s["venue"] == "sim" and s.get("state") == "streaming"]
        forming = [await read_candles(redis, "sim", symbol, "1m", 1) for symbol in SIM_SYMBOLS]
        return statuses if len(streaming) == len(SIM_SYMBOLS) and all(forming) else None

    await _until(every_sim_feed, "every simulated feed streaming with a forming bar")

    async def bar_close() -> dict[str, Any] | None:
        message: dict[str, Any] | None = await closes.get_message(timeout=0.2)  # None also for the confirmation
        return message

    message = await _until(bar_close, "a bar close published across the cluster", limit_s=5.0)
    assert message["channel"] == f"md:{{binance:{SYMBOL}}}:closed".encode()


async def _flows(app_a: Any, app_b: Any, a: AsyncClient, b: AsyncClient, redis: RedisClient) -> None:
    settings: Settings = app_a.state.settings
    ready = await b.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert "ping ok" in ready.text, "readiness pings every master"
    nodes = app_b.state.redis.get_nodes()  # discovered from the one node in the URL
    assert len(nodes) == 3
    assert {node.connection_class.__name__ for node in nodes} == {"CountedConnection"}, "every node counts errors"
    make_key = key_maker(app_a, settings)
    operator = (await make_key(Role.OPERATOR, tenant="cluster-ops")).headers
    reader = await make_key(Role.READER, tenant="cluster-ops")

    # A signal computed on A, stored under the feed's tag, served on B from Redis. B verifies the key from the
    # Redis cache entry A wrote (the generation compare-and-set script, two keys of one slot), not the database.
    path = f"/v1/signals/binance/{SYMBOL}?timeframe=1m"
    first = await a.get(path, headers=reader.headers)
    assert first.status_code == 200, first.text
    assert first.headers["x-cache"] == "miss"
    key_hash = hash_api_key(reader.secret, settings.secret_key.get_secret_value())
    assert await redis.get(cache_key(key_hash)) is not None, "A did not cache the verification in Redis"
    assert await redis.get(generation_key(key_hash)) is not None
    hits = _lookups("api_key_redis", "hit")
    second = await b.get(path, headers=reader.headers)
    assert second.status_code == 200, second.text
    assert second.headers["x-cache"] == "hit"
    assert second.headers["etag"] == first.headers["etag"]
    assert _lookups("api_key_redis", "hit") == hits + 1, "B did not verify the key from its Redis cache entry"

    # Revoked through A while B holds it in process (for 60 s): B refuses it at once, within a second on a quiet
    # machine, 3 s allowed here (the invalidation script's PUBLISH, sent on A's node, reaches B's subscription on
    # whichever node it is; the cache TTL cannot be what refuses it).
    revoked = await a.post(f"/v1/keys/{reader.key_id}/revoke", headers=operator)
    assert revoked.status_code == 200, revoked.text

    async def refused_on_b() -> bool:
        return (await b.get("/v1/me", headers=reader.headers)).status_code == 401

    await _until(refused_on_b, "B refusing the revoked key", limit_s=3.0)
    refusal = await b.get("/v1/me", headers=reader.headers)
    assert refusal.json()["type"] == "/problems/api-key-revoked"

    # One bucket for both instances: six requests at once, then one per 1 000 s.
    budget = {"name": "cluster-budgeted", "rate_limit": {"per_second": 0.001, "burst": 6}}
    tenant = (await a.post("/v1/tenants", json=budget, headers=operator)).json()["id"]
    created = await a.post(
        "/v1/keys", params={"tenant_id": tenant}, json={"name": "client", "role": "reader"}, headers=operator
    )
    assert created.status_code == 201, created.text
    client = {"X-API-Key": created.json()["secret"]}
    answers = [await (a if i % 2 else b).get("/v1/markets", headers=client) for i in range(12)]
    statuses = [answer.status_code for answer in answers]
    assert statuses.count(200) == 6, statuses
    assert statuses[-4:] == [429] * 4
    assert int(answers[-1].headers["retry-after"]) > 0

    # A usage report computed on A is stored with its tenant's generation (a script over two keys of one slot) and
    # served from Redis on B.
    report = await a.get("/v1/usage", headers=operator)
    assert report.status_code == 200, report.text
    assert report.headers["x-cache"] == "miss"
    cached = await b.get("/v1/usage", headers=operator)
    assert (cached.status_code, cached.headers["x-cache"]) == (200, "hit")

    await _console_sessions_on_both_instances(app_a, app_b, settings)


async def _console_sessions_on_both_instances(app_a: Any, app_b: Any, settings: Settings) -> None:
    account = await user_maker(app_a, settings)(tenant="cluster-ops", email="grace@example.com")
    async with browser(app_a) as laptop, browser(app_b) as phone:
        assert (await sign_in(laptop, account.email)).status_code == 303
        assert (await sign_in(phone, account.email)).status_code == 303
        page = await phone.get("/console/account")
        assert page.status_code == 200, page.text
        listed = set(re.findall(r"/console/account/sessions/([0-9a-f]{64})/revoke", page.text))
        assert len(listed) == 2, "both sessions are listed (one GET per session, across slots)"
        form = await laptop.get("/console/account")
        ended = await laptop.post("/console/account/sessions/revoke-all", data={"csrf": hidden(form.text)})
        assert ended.status_code == 303, ended.text
        assert (await phone.get("/console/keys")).status_code == 303, "the session on B outlived sign-out everywhere"
        assert (await laptop.get("/console/keys")).status_code == 303


async def _layout_is_spread_and_tags_hold(cluster: LocalRedisCluster) -> None:
    per_node = await asyncio.to_thread(cluster.keys_per_node)
    holding = [port for port, keys in per_node.items() if keys]
    assert len(holding) > 1, f"every key hashed to one node: {per_node}"
    assert len(holding) == len(cluster.ports), f"a master holds none of the service's keys: {per_node}"
    node_of_tag: dict[bytes, set[int]] = defaultdict(set)
    for port, keys in per_node.items():
        for key in keys:
            tagged = re.search(rb"\{([^}]+)\}", key)
            if tagged:
                node_of_tag[tagged.group(1)].add(port)
    feeds = [f"binance:{SYMBOL}", *(f"sim:{symbol}" for symbol in SIM_SYMBOLS)]
    missing = [feed for feed in feeds if not node_of_tag[feed.encode()]]
    assert not missing, f"feeds without keys under their hash tag: {missing}"
    assert len(set().union(*(node_of_tag[feed.encode()] for feed in feeds))) > 1, "every feed on one node"


async def _publish_all_keeps_order_across_nodes(redis: RedisClient) -> None:
    """The helper for messages a cluster pipeline refuses to carry: one keyless script, in order."""
    channels = ["alerts:a", "alerts:b", "alerts:c"]  # three slots; PUBLISH reaches every node's subscribers
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    try:
        await pubsub.subscribe(*channels)
        sent = [(channels[i % 3], f"m{i}".encode()) for i in range(9)]
        await publish_all(redis, sent)
        received: list[tuple[str, bytes]] = []

        async def all_received() -> bool:
            message = await pubsub.get_message(timeout=0.2)
            if message is not None:
                received.append((message["channel"].decode(), message["data"]))
            return len(received) == len(sent)

        await _until(all_received, "the published messages", limit_s=5.0)
        assert received == sent
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves this unannotated
