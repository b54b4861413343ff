"""The track record's replay memory (app/signals/replay_memory.py) against real Redis: each replay stores the
calibrated model's prediction at every bar, the next one after a new bar copies them and is still exactly the
engine's evaluation of the stored bars from scratch; a memory that does not decode is ignored."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from redis.asyncio import Redis

from app.analytics import AnalysisParams, SignalParams
from app.analytics.model import ModelParams, Predictions
from app.signals import replay_memory
from tests.signals.test_signals import close_bar, seed_walk
from tests.signals.test_track_record import TRACK, _expected

KEY = replay_memory.memory_key("binance", "BTCUSDT", "1m", AnalysisParams())


async def _stored(redis: Redis) -> bytes | None:
    blob = await redis.get(KEY)
    assert blob is None or isinstance(blob, bytes)
    return blob


async def test_a_replay_stores_its_predictions_and_the_next_one_after_a_close_equals_a_fresh_replay(
    signals_client: AsyncClient, app: FastAPI, redis_client: Redis
) -> None:
    rows = await seed_walk(redis_client, closed=420)  # past the model's ~324-bar warm-up: decided bars exist
    first = await signals_client.get(TRACK, params={"horizon": 24})
    assert first.status_code == 200, first.text
    assert first.json()["evaluation"] == _expected(rows, horizons=(24,))
    memory = replay_memory.decode(await _stored(redis_client))
    assert memory is not None
    assert memory.open_time.tolist() == [r["t"] for r in rows[:-1]]
    assert int(np.isfinite(memory.predictions.probability).sum()) > 50, "the model stated something at many bars"
    assert 0 < await redis_client.ttl(KEY) <= app.state.settings.track_record_memory_ttl_s
    await close_bar(redis_client, rows[-1], app)
    second = await signals_client.get(TRACK, params={"horizon": 24})
    assert second.status_code == 200, second.text
    assert second.json()["as_of"] == first.json()["as_of"] + 60_000
    closed = [*rows[:-1], {**rows[-1], "closed": True}]
    assert second.json()["evaluation"] == _expected(closed, horizons=(24,))  # the remembered bars changed nothing
    grown = replay_memory.decode(await _stored(redis_client))
    assert grown is not None
    assert grown.open_time.tolist() == [r["t"] for r in rows]


@pytest.mark.parametrize("blob", [b"garbage", b"\x00" * 34])
async def test_a_memory_that_does_not_decode_is_ignored(
    signals_client: AsyncClient, redis_client: Redis, blob: bytes
) -> None:
    rows = await seed_walk(redis_client, closed=360)
    await redis_client.set(KEY, blob)
    response = await signals_client.get(TRACK, params={"horizon": 24})
    assert response.status_code == 200, response.text
    assert response.json()["evaluation"] == _expected(rows, horizons=(24,))


def test_the_codec_round_trips_and_keeps_the_newest_bars() -> None:
    n = 10
    open_time = np.arange(n, dtype=np.int64) * 60_000
    rng = np.random.default_rng(3)
    predictions = Predictions(
        rng.choice([-1, 1], n).astype(np.int8), rng.choice([-1, 0, 1], n).astype(np.int8),
        rng.random(n), rng.standard_normal(n) / 100, rng.standard_normal(n),
    )  # fmt: skip
    predictions.probability[0] = np.nan  # "no model" survives the trip
    blob = replay_memory.encode(open_time, predictions, keep=6)
    assert len(blob) == 6 * replay_memory.RECORD.itemsize
    known = replay_memory.decode(blob)
    assert known is not None
    assert known.open_time.tolist() == open_time[4:].tolist()
    assert known.predictions.side.tolist() == predictions.side[4:].tolist()
    assert known.predictions.probability.tolist() == predictions.probability[4:].tolist()
    assert replay_memory.decode(None) is None
    assert replay_memory.decode(blob[:-1]) is None


def test_the_key_changes_with_the_analysis_parameters() -> None:
    other = AnalysisParams(signal=SignalParams(model=ModelParams(horizon=12)))
    assert replay_memory.memory_key("binance", "BTCUSDT", "1m", other) != KEY
    assert replay_memory.memory_key("binance", "BTCUSDT", "5m", AnalysisParams()) != KEY
