"""`/metrics` of a real `deltaflow serve`: two granian workers summed by the supervisor's own listener, the signal
stream gauge, the sim feed's metrics, and every metric the Grafana dashboard and the alert rules use."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TEST_REDIS_URL
from tests.e2e.test_serve import _wait_for_exit, serve
from tests.helpers import free_port

pytestmark = pytest.mark.e2e

DELTAFLOW = str(Path(sys.executable).parent / "deltaflow")
ROOT = Path(__file__).resolve().parents[2]
SIGNAL = "/v1/signals/sim/BTCUSDT"
FEED = {"venue": "sim", "symbol": "BTCUSDT"}


def issue_key(env: dict[str, str]) -> str:
    result = subprocess.run(
        [DELTAFLOW, "keys", "bootstrap", "--force", "--tenant", "metrics"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip().splitlines()[-1]


async def scrape(port: int) -> str:
    async with httpx.AsyncClient(timeout=5.0) as client:
        answer = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert answer.status_code == 200
    return answer.text


def value(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


async def eventually(port: int, name: str, check: Callable[[float], bool], **labels: str) -> float | None:
    deadline = time.monotonic() + 20.0
    while True:
        found = value(await scrape(port), name, **labels)
        if found is not None and check(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}{labels} is {found} after 20 s")
        await asyncio.sleep(0.2)


def per_process(directory: Path, metric: str, labels: dict[str, str]) -> dict[int, float]:
    """The value each worker process wrote for a sample of `metric`, from the multiprocess files."""
    values: dict[int, float] = {}
    for path in directory.glob("counter_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        entries = MmapedDict.read_all_values_from_file(str(path))  # type: ignore[no-untyped-call]
        for key, sample_value, _timestamp, _pos in entries:
            _family, name, sample_labels, _help = json.loads(key)
            if name == metric and sample_labels == labels:
                values[pid] = values.get(pid, 0.0) + sample_value
    return values


async def workers_started(directory: Path, workers: int) -> None:
    """Until every worker has built its app (each then writes `deltaflow_build_info` to a file of its own pid).
    /startupz answers as soon as one worker is up; a SIGTERM while another still loads its app makes the supervisor
    wait out shutdown_timeout_seconds for it (app.core.serving), which these tests are not about."""
    deadline = time.monotonic() + 30
    while len([name for name in os.listdir(directory) if name.startswith("gauge_livemax_")]) < workers:
        assert time.monotonic() < deadline, "the workers did not start"
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)


def referenced_metrics() -> set[str]:
    dashboard = json.loads((ROOT / "deploy/grafana/deltaflow.json").read_text())
    expressions = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", ()) if "expr" in target
    ]
    expressions += [var.get("query", "") for var in dashboard["templating"]["list"]]
    rules = (ROOT / "deploy/prometheus/alerts.yml").read_text()
    names = set(re.findall(r"\bdeltaflow_[a-z_]+", " ".join(expressions) + rules))
    assert len(names) > 20, names
    return names


@pytest.mark.timeout(180)
async def test_two_granian_workers_are_summed_on_the_separate_listener(postgres_url: str, tmp_path: Path) -> None:
    metrics_port = free_port()
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_999999.db").write_bytes(b"left by an earlier run")
    env = {
        "DELTAFLOW_DATABASE_URL": postgres_url,
        "DELTAFLOW_REDIS_URL": TEST_REDIS_URL,
        "DELTAFLOW_METRICS_PORT": str(metrics_port),
        "DELTAFLOW_METRICS_DIR": str(directory),
        "DELTAFLOW_FEEDS": "sim:BTCUSDT",
        "DELTAFLOW_DRAIN_SECONDS": "0",
        "DELTAFLOW_RATE_LIMIT_PER_SECOND": "100000",
        "DELTAFLOW_RATE_LIMIT_BURST": "1000000",
    }
    async with serve(workers=2, env=env, args=["--with-ingest"]) as (process, base_url):
        assert not (directory / "counter_999999.db").exists(), "the directory is emptied at each start"
        await workers_started(directory, 2)
        before = value(await scrape(metrics_port), "deltaflow_http_requests_total", route="/healthz", status="2xx")
        # A new connection per request: the kernel spreads them over both workers' accept queues.
        for _ in range(60):
            async with httpx.AsyncClient(base_url=base_url, timeout=5.0) as fresh:
                assert (await fresh.get("/healthz")).status_code == 200
        expected = (before or 0) + 60  # written within metrics_flush_seconds (1 s)
        await eventually(metrics_port, "deltaflow_http_requests_total", lambda v: v == expected, route="/healthz")
        text = await scrape(metrics_port)
        total = value(text, "deltaflow_http_requests_total", route="/healthz", method="GET", status="2xx")
        assert total == expected
        assert value(text, "deltaflow_http_request_duration_seconds_count", route="/healthz", status="2xx") == total
        workers = per_process(
            directory, "deltaflow_http_requests_total", {"route": "/healthz", "method": "GET", "status": "2xx"}
        )
        assert len([pid for pid, count in workers.items() if count > 0]) >= 2, workers
        assert sum(workers.values()) == total

        # The API's own port has no /metrics: only the listener the public nginx never proxies serves them.
        async with httpx.AsyncClient(base_url=base_url, timeout=5.0) as client:
            assert (await client.get("/metrics")).status_code == 404

        # The sim feed, ingested by whichever worker holds its lease.
        await eventually(metrics_port, "deltaflow_feed_connected", lambda v: v == 1, **FEED)
        last = await eventually(metrics_port, "deltaflow_feed_last_message_timestamp_seconds", bool, **FEED)
        assert last is not None
        assert abs(time.time() - last) < 30

        # An open signal stream is counted while it is open, whichever worker holds it.
        key = issue_key({**env, "PATH": str(Path(sys.executable).parent)})
        headers = {"authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=base_url, timeout=10.0, headers=headers) as client:
            async with client.stream("GET", f"{SIGNAL}/stream", params={"timeframe": "1m"}) as response:
                assert response.status_code == 200
                await eventually(metrics_port, "deltaflow_signal_streams_open", lambda v: v == 1)
            await eventually(metrics_port, "deltaflow_signal_streams_open", lambda v: v == 0)
            assert (await client.get("/readyz")).status_code == 200

        # Every metric the dashboard and the alert rules name is exported (at 0 when nothing happened yet).
        exported = {
            line.split("{", 1)[0].split(" ", 1)[0]
            for line in (await scrape(metrics_port)).splitlines()
            if line and not line.startswith("#")
        }
        missing = referenced_metrics() - exported
        assert not missing, f"referenced by deploy/ but not exported: {sorted(missing)}"

        process.send_signal(signal.SIGTERM)
        assert await _wait_for_exit(process, within_seconds=30) == 0


@pytest.mark.timeout(60)
async def test_default_directory_is_temporary_and_metrics_are_off_without_a_port(
    postgres_url: str, tmp_path: Path
) -> None:
    metrics_port = free_port()
    env = {
        "DELTAFLOW_DATABASE_URL": postgres_url,
        "DELTAFLOW_REDIS_URL": TEST_REDIS_URL,
        "DELTAFLOW_METRICS_PORT": str(metrics_port),
        "DELTAFLOW_DRAIN_SECONDS": "0",
        "TMPDIR": str(tmp_path),
    }
    async with serve(workers=2, env=env) as (process, _base_url):
        assert value(await scrape(metrics_port), "deltaflow_build_info") == 1
        # Other entries are the analysis pools' own (multiprocessing's forkserver socket directories).
        created = [name for name in os.listdir(tmp_path) if name.startswith("deltaflow-metrics-")]
        assert len(created) == 1
        await workers_started(tmp_path / created[0], 2)
        process.send_signal(signal.SIGTERM)
        assert await _wait_for_exit(process, within_seconds=30) == 0
    assert os.listdir(tmp_path) == [], "the per-start directory is removed at exit"

    off = {key: value for key, value in env.items() if key != "DELTAFLOW_METRICS_PORT"}
    async with serve(workers=1, env=off) as (process, _base_url):
        with pytest.raises(httpx.ConnectError):
            await scrape(metrics_port)
