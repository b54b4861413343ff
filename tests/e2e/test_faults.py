"""Faults under load, through real nginx (the shipped config; HTTP/1.1 and h2c listeners, gzip) in front of two
`deltaflow serve` processes, with two `deltaflow ingest` processes on ten sim markets, real Postgres and a private
redis-server (the machine's shared Redis cannot be restarted). One topology for the module; each test is one fault
under a small load (pollers with ETags, signal streams), so the whole file stays within a few minutes.

Postgres is not restarted (the server is shared with every other test run): its outage is the test database
refusing connections (`ALTER DATABASE … ALLOW_CONNECTIONS false`) with every backend of it terminated
(`pg_terminate_backend`), which is what the app sees of a restart — its pooled connections break and new ones are
refused — then connections allowed again."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from bench.clients import PollStats, SseStream, follow, poll
from bench.topology import (
    MINUTE_MS,
    NGINX,
    REDIS_SERVER,
    SIM_SYMBOLS,
    Nginx,
    PrivateRedis,
    free_port,
    holder_pid,
    issue_key,
    kill_hard,
    lease_holders,
    nginx_in_front,
    seed_history,
    start_ingest,
    start_serve,
    stop,
    stored_bar_times,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(NGINX is None or REDIS_SERVER is None, reason="needs nginx and redis-server (apt)"),
]

LEASE_TTL_S = 2.0
POLLERS = 60
STREAMS = 20


@dataclass
class Topology:
    env: dict[str, str]
    ports: list[int]
    servers: list[subprocess.Popen[bytes]]
    ingestors: list[subprocess.Popen[bytes]]
    redis: PrivateRedis
    nginx: Nginx
    key: str
    database_url: str
    started_minute: int
    logs: Path  # the ingestors' logs
    events: dict[str, float] = field(default_factory=dict)

    def start_ingestor(self) -> subprocess.Popen[bytes]:
        number = len(list(self.logs.glob("ingest-*.log")))
        return start_ingest(self.env, log=self.logs / f"ingest-{number}.log")

    def ingest_log_tails(self, lines: int = 15) -> str:
        """The last lines of every ingestor's log but debug: what a failure about stored bars needs."""
        tails = []
        for log in sorted(self.logs.glob("ingest-*.log")):
            kept = [line for line in log.read_text(errors="replace").splitlines() if '"level":"debug"' not in line]
            tails.append(f"--- {log.name}\n" + "\n".join(line[:300] for line in kept[-lines:]))
        return "\n".join(tails)

    def restart_server(self, slot: int) -> None:
        self.servers[slot] = start_serve(self.ports[slot], self.env, warm_key=self.key)

    def nginx_errors(self) -> list[str]:
        """nginx's error log, and the access log's unexpected or slow answers: what a failure message needs."""
        log = self.nginx.directory / "error.log"
        errors = log.read_text().splitlines()[-10:] if log.exists() else []
        slow = [e for e in self.nginx.access_log() if e["status"] not in (200, 304) or float(e["request_time"]) > 5]
        return errors + [str(e) for e in slow[-10:]]


def _explain(stats: PollStats, topology: Topology) -> str:
    """A failure message pytest prints whole (it shortens the repr of a tuple, and with it nginx's reason)."""
    lines = [f"statuses {dict(stats.statuses)}, transport errors {dict(stats.transport_errors)}"]
    return "\n".join(lines + [str(bad)[:300] for bad in stats.bad[:5]] + topology.nginx_errors())


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def topology(postgres_url: str) -> Iterator[Topology]:
    scratch = Path(tempfile.mkdtemp(prefix="deltaflow-faults-"))
    redis = PrivateRedis(scratch)
    redis.start()
    started: list[subprocess.Popen[bytes]] = []
    try:
        with redis.client() as client:
            # Not in a minute's last seconds: the ingestors' first bar must be the minute after the seeded ones.
            while time.time() % 60 > 50:
                time.sleep(0.5)
            started_minute = seed_history(client, SIM_SYMBOLS)
        env = {
            "DELTAFLOW_DATABASE_URL": postgres_url,
            "DELTAFLOW_REDIS_URL": redis.url,
            "DELTAFLOW_FEEDS": "sim:" + ",".join(SIM_SYMBOLS),
            "DELTAFLOW_MARKET_LEASE_TTL_SECONDS": str(LEASE_TTL_S),
            "DELTAFLOW_RATE_LIMIT_PER_SECOND": "1000000",
            "DELTAFLOW_RATE_LIMIT_BURST": "10000000",
            "DELTAFLOW_DRAIN_SECONDS": "1",
            "DELTAFLOW_ACCESS_LOG": "false",
            # Longer than the database outage below, so a key verified before it stays cached through it.
            "DELTAFLOW_AUTH_CACHE_TTL_SECONDS": "30",
        }
        ingestors = [start_ingest(env, log=scratch / f"ingest-{number}.log") for number in range(2)]
        started += ingestors
        key = issue_key(env, tenant="faults")
        ports = [free_port(), free_port()]
        servers = [start_serve(port, env, warm_key=key) for port in ports]
        started += servers
        with nginx_in_front(ports, scratch, per_client="rate=100000r/s", burst="burst=100000") as nginx:
            topology = Topology(
                env, ports, servers, ingestors, redis, nginx, key, postgres_url, started_minute, logs=scratch
            )
            try:
                yield topology
            finally:
                # The processes the tests started in place of the ones they killed or restarted.
                started += topology.servers + topology.ingestors
    finally:
        for process in dict.fromkeys(started):
            stop(process, within=15)
        redis.stop(save=False)
        shutil.rmtree(scratch, ignore_errors=True)


def _poll_paths() -> list[str]:
    paths = []
    for symbol in SIM_SYMBOLS:
        paths += [f"/v1/signals/sim/{symbol}", f"/v1/candles/sim/{symbol}?limit=50", f"/v1/orderbook/sim/{symbol}"]
    return paths


@contextlib.asynccontextmanager
async def load(
    topology: Topology, *, streams: int = STREAMS, key: str | None = None
) -> AsyncIterator[tuple[PollStats, list[SseStream]]]:
    """POLLERS pollers and `streams` signal streams through nginx until the block ends."""
    stats, stop_event = PollStats(), asyncio.Event()
    paths = _poll_paths()
    sse = [SseStream(f"/v1/signals/sim/{SIM_SYMBOLS[i % len(SIM_SYMBOLS)]}/stream") for i in range(streams)]
    headers = {"X-API-Key": key or topology.key, "Accept-Encoding": "gzip"}
    limits = httpx.Limits(max_connections=POLLERS + streams + 10, max_keepalive_connections=POLLERS + streams)
    # A generous timeout: after a kill -9 a signal the dead instance was computing stays locked (the cross-instance
    # single flight) until the lock expires (DELTAFLOW_SIGNAL_SINGLEFLIGHT_TIMEOUT_SECONDS, 10 s), and a restarted
    # instance starts its analysis pool on its first signal: slow is not failed.
    async with httpx.AsyncClient(base_url=topology.nginx.url, headers=headers, timeout=30.0, limits=limits) as client:
        tasks = [asyncio.create_task(poll(client, paths[i:] + paths[:i], stats, stop_event, pause=0.02))
                 for i in range(POLLERS)]  # fmt: skip
        tasks += [asyncio.create_task(follow(client, stream, stop_event)) for stream in sse]
        try:
            yield stats, sse
        finally:
            stop_event.set()
            await asyncio.gather(*tasks)


async def _until(seconds: float) -> None:
    await asyncio.sleep(max(0.0, seconds))


def _seconds_to_next_minute() -> float:
    return 60 - time.time() % 60


def _established(port: int) -> int:
    """Established TCP connections accepted on 127.0.0.1:`port` (from /proc/net/tcp)."""
    wanted = f"0100007F:{port:04X}"
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for line in lines if line.split()[1] == wanted and line.split()[3] == "01")


async def test_kill_9_of_an_api_process_fails_no_request_and_streams_resume_without_loss(topology: Topology) -> None:
    # The kill lands just before a minute boundary, so a bar closes while the cut streams reconnect: each stream
    # must then hold exactly the signal before the close and the one of the close, nothing skipped or repeated.
    if _seconds_to_next_minute() < 20:
        await asyncio.sleep(_seconds_to_next_minute() + 1)
    await _until(_seconds_to_next_minute() - 17)
    boundary = (time.time_ns() // 1_000_000 // MINUTE_MS + 1) * MINUTE_MS
    victim = 0
    try:
        async with load(topology) as (stats, streams):
            # Every stream's first event in before the kill (slow on a loaded machine), or a stream cut before it
            # rightly resumes without Last-Event-ID and the cut is not exercised.
            while time.time() < boundary / 1000 - 2 and not all(s.ids for s in streams):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            await _until(boundary / 1000 - time.time() - 2)
            # The instance holding more connections from nginx: the streams' (nginx's keep-alive pool is shared).
            victim = max(range(len(topology.ports)), key=lambda slot: _established(topology.ports[slot]))
            await asyncio.to_thread(kill_hard, topology.servers[victim])
            # The close, its signal and the streams' catch-up: slow on a loaded machine, so wait for it (up to 40 s;
            # the next close is a minute away, so an event lost now would never arrive in this window).
            deadline = boundary / 1000 + 40
            while time.time() < deadline and any(not s.ids or s.ids[-1] < boundary for s in streams):  # noqa: ASYNC110
                await asyncio.sleep(0.25)
            waited = time.time() - boundary / 1000
            await asyncio.sleep(1)  # and nothing after it (no repeat)
    finally:
        await asyncio.to_thread(topology.restart_server, victim)  # the next tests need both instances
    with topology.redis.client() as client:
        stored = {symbol: stored_bar_times(client, symbol, since_ms=boundary - MINUTE_MS) for symbol in SIM_SYMBOLS}
    # What a failure needs to tell a lost event from a slow one: every stream, the stored bars, the wait.
    context = f"waited {waited:.1f} s after the close; bars stored since the previous close: {stored}\n" + "\n".join(
        f"{s.path}: ids {s.ids[-3:]}, connects {s.connects}, resumed {s.resumed}, errors {dict(s.errors)}"
        for s in streams
    )
    assert stats.requests > 50, stats.requests  # load existed (the machine may be slow)
    assert stats.failures() == 0, _explain(stats, topology)
    assert sum(s.resumed for s in streams) > 0, "some streams were cut by the kill and resumed"
    for stream in streams:
        assert not stream.refused, (stream.path, stream.refused)
        # Ends at the close, nothing skipped or repeated. A stream cut before its first event resumed without
        # Last-Event-ID and rightly got only the current signal: it had nothing to miss yet.
        assert stream.ids[-1:] == [boundary], f"{stream.path} missed the close {boundary}\n{context}"
        assert stream.gaps(MINUTE_MS) == [], f"{stream.path} skipped or repeated\n{context}"
    assert sum(s.ids == [boundary - MINUTE_MS, boundary] for s in streams) >= len(streams) // 2, (
        f"the close came mid-stream\n{context}"
    )


async def test_rolling_restart_of_every_api_process_fails_no_request(topology: Topology) -> None:
    async with load(topology) as (stats, streams):
        await asyncio.sleep(1)
        for slot in range(len(topology.servers)):
            # SIGTERM: readiness off, drain, exit; then a new process on the same port before the next one goes.
            old = topology.servers[slot]
            assert await asyncio.to_thread(stop, old, within=20) == 0
            await asyncio.to_thread(topology.restart_server, slot)
            # nginx skips an instance for fail_timeout (2 s in nginx.conf) after it refused connections: wait it
            # out, as a deploy must, or both instances could be skipped at once.
            await asyncio.sleep(3)
    assert stats.requests > 50, stats.requests  # load existed (the machine may be slow)
    assert stats.failures() == 0, _explain(stats, topology)
    assert all(not s.refused for s in streams), [s.refused for s in streams]
    assert sum(s.resumed for s in streams) > 0, "the drained instances ended their streams; clients resumed"
    for stream in streams:
        assert stream.ids, stream.path
        assert stream.gaps(MINUTE_MS) == [], (stream.path, stream.ids)


async def test_killing_the_ingest_lease_holder_hands_every_feed_to_the_standby_within_the_ttl(
    topology: Topology,
) -> None:
    with topology.redis.client() as client:
        holders = lease_holders(client, SIM_SYMBOLS)
        pids = {holder_pid(token) for token in holders.values()}
        by_pid = {process.pid: process for process in topology.ingestors}
        assert None not in pids, holders
        assert pids <= set(by_pid), holders
        victim = max(pids, key=lambda pid: sum(holder_pid(t) == pid for t in holders.values()))
        assert victim is not None
        survivor = next(pid for pid in by_pid if pid != victim)
        await asyncio.to_thread(kill_hard, by_pid[victim])
        killed_at = time.monotonic()
        topology.events["ingest_killed_ms"] = time.time() * 1000
        while True:
            now = {holder_pid(t) for t in lease_holders(client, SIM_SYMBOLS).values()}
            if now == {survivor}:
                break
            assert time.monotonic() - killed_at < LEASE_TTL_S * 4 / 3 + 1.0, f"not taken over: {now}"
            await asyncio.sleep(0.05)
    took = time.monotonic() - killed_at
    # The standby polls every ttl/3 and the dead holder's lease expires within the ttl.
    assert took <= LEASE_TTL_S * 4 / 3 + 0.5, took
    topology.ingestors.append(await asyncio.to_thread(topology.start_ingestor))  # a new standby


async def test_redis_restart_degrades_the_api_then_it_recovers(topology: Topology) -> None:
    # The outage must not span a bar close. The lease holders stop their feeds once they cannot renew (another
    # process may hold the lease by then), so the bar forming at the outage is lost with them; a venue with REST
    # klines backfills it when its feed starts again, the simulated one cannot, and the gap test at the end would
    # then see a hole. Under load the outage lasts up to ~20 s (requests wait for pooled Redis connections).
    if not 2 <= time.time() % 60 <= 25:
        await asyncio.sleep(62 - time.time() % 60)
    http = httpx.AsyncClient(base_url=topology.nginx.url, headers={"X-API-Key": topology.key}, timeout=30.0)
    readiness: list[int] = []
    async with http, load(topology, streams=0) as (stats, _):
        await asyncio.sleep(1)
        topology.events["redis_stopped_ms"] = time.time() * 1000
        await asyncio.to_thread(topology.redis.stop)
        try:
            await asyncio.sleep(0.5)
            stats.reset()
            for _ in range(3):
                ready = await http.get("/readyz")
                readiness.append(ready.status_code)
                if ready.status_code == 200:  # Redis is not required: ready, and says so
                    assert ready.json()["status"] == "degraded", ready.text
                assert (await http.get("/healthz")).status_code == 200
                await asyncio.sleep(0.5)
            signal = await http.get(f"/v1/signals/sim/{SIM_SYMBOLS[0]}")
            assert signal.status_code in {200, 503}, (signal.text, topology.nginx_errors())
            if signal.status_code == 503:
                assert signal.headers["content-type"] == "application/problem+json"
                assert "retry-after" in signal.headers
            during = PollStats(stats.statuses.copy(), stats.transport_errors.copy(), bad=stats.bad.copy())
        finally:
            await asyncio.to_thread(topology.redis.start)
            topology.events["redis_restarted_ms"] = time.time() * 1000
        # Recovered: every signal answers, readiness is ok, and then 2 s of load without a failure. Each instance's
        # pooled connections from before the restart fail once when next used (503, Retry-After): a short tail.
        recovered = False
        deadline = time.monotonic() + 40
        while not recovered and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            try:
                answers = [await http.get(f"/v1/signals/sim/{symbol}") for symbol in SIM_SYMBOLS]
                ready = await http.get("/readyz")
            except httpx.TimeoutException:
                continue  # still catching up (a request may wait for another instance's signal computation)
            if all(a.status_code == 200 for a in answers) and ready.json()["status"] == "ok":
                stats.reset()
                await asyncio.sleep(2)
                recovered = stats.requests > 20 and stats.failures() == 0
        assert recovered, ("the API did not recover after Redis came back", stats.statuses, stats.bad)
    # Without Redis: answers or 503 problems (never a 500, never a dropped connection); after it: all answered.
    assert during.requests > 0, during
    assert set(during.statuses) <= {200, 304, 503}, (during.statuses, during.bad)
    assert not during.transport_errors, during.transport_errors
    assert set(readiness) <= {200, 503}, readiness  # never nginx's 502: both instances stay in the pool
    assert stats.requests > 20, stats.requests
    assert stats.failures() == 0, (stats.statuses, stats.bad)


AUDITED = "SELECT count(*) FROM audit_events WHERE action = 'key.created'"


async def _database_blocked(database_url: str, blocked: bool) -> None:
    name = make_url(database_url).database
    admin = await asyncpg.connect(_asyncpg_dsn(make_url(database_url).set(database="postgres").render_as_string(False)))
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"false" if blocked else "true"}')
        if blocked:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
    finally:
        await admin.close()


async def _count(database_url: str, sql: str, *args: object) -> int:
    connection = await asyncpg.connect(_asyncpg_dsn(database_url))
    try:
        return int(await connection.fetchval(sql, *args))
    finally:
        await connection.close()


async def test_postgres_outage_keeps_cached_keys_working_and_refuses_writes_with_retry_after(
    topology: Topology,
) -> None:
    operator = httpx.AsyncClient(base_url=topology.nginx.url, headers={"X-API-Key": topology.key}, timeout=10.0)
    created: list[str] = []
    keys_before = await _count(topology.database_url, "SELECT count(*) FROM api_keys")
    audits_before = await _count(topology.database_url, AUDITED)
    async with operator:
        first = await operator.post("/v1/keys", json={"name": "before-outage", "role": "admin"})
    assert first.status_code == 201, (first.text, topology.nginx_errors())
    created.append(first.json()["id"])
    # A key verified just before the outage: cached (in each instance and in Redis) for the auth cache TTL, 30 s
    # here, so all of the outage. A key whose entry expires during an outage gets 503: the cache serves nothing stale.
    key = first.json()["secret"]
    http = httpx.AsyncClient(base_url=topology.nginx.url, headers={"X-API-Key": key}, timeout=10.0)
    async with http, load(topology, streams=0, key=key) as (stats, _):
        await asyncio.sleep(1)  # every instance has verified the new key
        await _database_blocked(topology.database_url, blocked=True)
        try:
            stats.reset()
            refused = []
            for attempt in range(5):
                write = await http.post("/v1/keys", json={"name": f"during-outage-{attempt}"})
                refused.append(write)
                await asyncio.sleep(0.5)
            during = PollStats(stats.statuses.copy(), stats.transport_errors.copy(), bad=stats.bad.copy())
        finally:
            await _database_blocked(topology.database_url, blocked=False)
        deadline = time.monotonic() + 15
        while True:
            after = await http.post("/v1/keys", json={"name": "after-outage"})
            if after.status_code == 201:
                created.append(after.json()["id"])
                break
            assert after.status_code == 503, after.text
            assert time.monotonic() < deadline, "writes did not come back"
            await asyncio.sleep(0.5)
    for write in refused:
        assert write.status_code == 503, write.text
        assert write.headers["content-type"] == "application/problem+json"
        assert int(write.headers["retry-after"]) > 0
    # Reads with the cached key went on: signals, candles and books live in Redis.
    assert during.requests > 20, during.requests
    assert during.failures() == 0, (during.statuses, during.bad)
    # Nothing half-written: exactly the two acknowledged keys were stored, each with its audit event.
    keys_after = await _count(topology.database_url, "SELECT count(*) FROM api_keys")
    assert keys_after - keys_before == len(created) == 2
    assert await _count(topology.database_url, AUDITED) - audits_before == 2
    targets = [f"api_key:{key_id}" for key_id in created]
    assert await _count(topology.database_url, AUDITED + " AND target = ANY($1::text[])", targets) == 2


async def test_stored_bars_have_no_gap_across_every_fault(topology: Topology) -> None:
    # The bar that was forming when the lease holder died must be closed too: wait for the close after it.
    killed_ms = topology.events.get("ingest_killed_ms", time.time() * 1000)
    closes_at = (int(killed_ms) // MINUTE_MS + 1) * MINUTE_MS
    await _until(closes_at / 1000 - time.time())
    with topology.redis.client() as client:
        # The close is written when the next minute's first trade arrives; after the Redis restart the feeds'
        # leases are taken again first. Generous on a loaded machine: the next close is a minute away.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(  # noqa: ASYNC110 - polling the store
            stored_bar_times(client, symbol, since_ms=closes_at - MINUTE_MS) == [] for symbol in SIM_SYMBOLS
        ):
            await asyncio.sleep(0.5)
        stored = {s: stored_bar_times(client, s, since_ms=topology.started_minute - 5 * MINUTE_MS) for s in SIM_SYMBOLS}
        context = (
            f"now {time.time() * 1000:.0f}, close awaited {closes_at}, events {topology.events}\n"
            f"newest stored bars { ({s: times[-1:] for s, times in stored.items()}) }\n"
            f"lease holders {lease_holders(client, SIM_SYMBOLS)}\n{topology.ingest_log_tails()}"
        )
    for symbol, times in stored.items():
        assert [b - a for a, b in itertools.pairwise(times)] == [MINUTE_MS] * (len(times) - 1), f"{symbol}\n{context}"
        assert times[-1] >= closes_at - MINUTE_MS, f"{symbol} has no bar closed after the kill\n{context}"
