"""`deltaflow ingest | record | replay` as real processes, and in-process ingestion in the app's lifespan."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from app.config import Settings
from app.main import create_app
from app.market.events import BUY, BookUpdate, Trade
from app.market.recording import RecordingError, decode_event, encode_event, read_recording
from app.market.store import read_candles, read_feed_status
from tests.conftest import TEST_REDIS_URL
from tests.helpers import running

DELTAFLOW = str(Path(sys.executable).parent / "deltaflow")


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DELTAFLOW_")}
    environment.update(env)
    return subprocess.run([DELTAFLOW, *args], capture_output=True, text=True, env=environment, timeout=60, check=False)


def test_events_round_trip_through_the_recording_format() -> None:
    trade = Trade("sim", "BTCUSDT", 1, 2, 100.5, 0.25, BUY, 7)
    diff = BookUpdate("sim", "BTCUSDT", 1, 2, 10, 11, 9, ((99.0, 1.0),), ((101.0, 0.0),))
    assert decode_event(encode_event(trade)) == trade
    assert decode_event(encode_event(diff)) == diff
    with pytest.raises(RecordingError):
        decode_event(b'{"k": "nope", "e": {}}')


def test_a_file_that_is_not_a_recording_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"format": "other"}\n')
    with pytest.raises(RecordingError, match="not a"):
        read_recording(path)
    result = _run("replay", str(path), DELTAFLOW_REDIS_URL=TEST_REDIS_URL)
    assert result.returncode == 2
    assert "not a deltaflow-market-recording" in result.stderr


@pytest.mark.e2e
async def test_a_recorded_session_replays_through_the_pipeline_into_redis(redis_client: Redis, tmp_path: Path) -> None:
    path = tmp_path / "session.jsonl"
    recorded = _run("record", str(path), "--seconds", "1.5", DELTAFLOW_FEEDS="sim:BTCUSDT", DELTAFLOW_SIM_RATE="400")
    assert recorded.returncode == 0, recorded.stderr
    lines = path.read_bytes().splitlines()
    trades = [orjson.loads(line) for line in lines[1:] if b'"k":"trade"' in line]
    assert len(trades) > 100
    for _ in range(2):  # a second replay changes no closed bar
        replayed = _run("replay", str(path), "--speed", "0", DELTAFLOW_REDIS_URL=TEST_REDIS_URL)
        assert replayed.returncode == 0, replayed.stderr
        assert f"replayed {len(lines) - 1} events" in replayed.stdout
    candles = await read_candles(redis_client, "sim", "BTCUSDT", "1m", 10)
    assert sum(c["trades"] for c in candles) == len(trades)
    assert sum(c["v"] for c in candles) == pytest.approx(sum(t["e"]["quantity"] for t in trades))


def test_ingest_refuses_an_empty_or_unmappable_feed_list() -> None:
    empty = _run("ingest", DELTAFLOW_FEEDS="", DELTAFLOW_REDIS_URL=TEST_REDIS_URL)
    assert empty.returncode == 2
    assert "nothing to ingest" in empty.stderr
    unmapped = _run("ingest", DELTAFLOW_FEEDS="coinapi:XYZ", DELTAFLOW_REDIS_URL=TEST_REDIS_URL)
    assert unmapped.returncode == 2
    assert "DELTAFLOW_COINAPI_SYMBOL_MAP" in unmapped.stderr
    bad = _run("ingest", DELTAFLOW_FEEDS="binance BTCUSDT")
    assert bad.returncode == 2
    assert "has no ':'" in bad.stderr
    assert "Traceback" not in bad.stderr


async def test_the_app_lifespan_runs_in_process_ingestion(settings: Settings, redis_client: Redis) -> None:
    app = create_app(settings.model_copy(update={"ingest_in_process": True, "feeds": "sim:BTCUSDT", "sim_rate": 300.0}))
    async with running(app):
        async with asyncio.timeout(10):
            while not await read_candles(redis_client, "sim", "BTCUSDT", "1m", 1):  # noqa: ASYNC110 - polls Redis
                await asyncio.sleep(0.05)
    (status,) = await read_feed_status(redis_client)
    assert status["state"] == "stopped", "shutdown stops ingestion before Redis closes"
