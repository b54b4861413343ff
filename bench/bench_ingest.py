"""Market-data ingestion into a real Redis on one core: throughput (target ≥ 50 000 trade messages/s) and
queue-to-Redis latency at 10 000 messages/s (target p99 < 50 ms), measured side by side in one run.

Rows:
- `frames, per message`: raw Binance aggTrade frames parsed and submitted one by one, the reader yielding to the
  loop after each (as a socket reader does), so the queue rarely fills and nothing is coalesced: the honest
  per-message cost of parse + queue + aggregation (6 timeframes, footprints) + batched Redis writes;
- `events, per message`: the same without parsing;
- `events, burst`: a reader that never yields: the queue fills and trades are coalesced, which is what a burst
  costs;
- latency: 10 000 messages/s paced in 1 ms slices for BENCH_SECONDS; latency = Redis write acknowledged minus the
  message's submit time.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
from redis.asyncio import Redis

from app.market.events import Trade
from app.market.pipeline import Pipeline
from app.market.venues.binance import parse_frame

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
MESSAGES = int(os.environ.get("BENCH_MESSAGES", "200000"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
FEED = [("binance", "BTCUSDT")]
T0 = 1_700_000_040_000


def _frames(n: int) -> list[bytes]:
    """aggTrade frames as Binance sends them: ~40 trades/s of exchange time, a random walk around 60 000."""
    out, price = [], 60_000.0
    for i in range(n):
        price += ((i * 7919) % 11 - 5) * 0.1
        data = {"e": "aggTrade", "E": T0 + i * 25, "s": "BTCUSDT", "a": i, "p": f"{price:.2f}",
                "q": f"{0.001 * (1 + i % 50):.3f}", "f": i, "l": i, "T": T0 + i * 25, "m": i % 3 == 0}  # fmt: skip
        out.append(orjson.dumps({"stream": "btcusdt@aggTrade", "data": data}))
    return out


async def _throughput(redis: Redis, frames: list[bytes], *, parse: bool, yield_each: bool) -> tuple[float, int]:
    await redis.flushdb()
    events = None if parse else [parse_frame(f, "binance", T0) for f in frames]
    pipeline = Pipeline(redis, FEED, clock=None)
    pipeline.start()
    started = time.perf_counter()
    if events is None:
        for frame in frames:
            event = parse_frame(frame, "binance", T0)
            assert event is not None
            await pipeline.submit(event)
            if yield_each:
                await asyncio.sleep(0)
    else:
        for event in events:
            assert event is not None
            await pipeline.submit(event)
            if yield_each:
                await asyncio.sleep(0)
    await pipeline.aclose(flush_timeout_s=60)
    elapsed = time.perf_counter() - started
    stored = await redis.zcard("md:{binance:BTCUSDT}:bars:1m") + 1
    assert stored > 1
    return len(frames) / elapsed, pipeline.stats.coalesced


async def _latency(redis: Redis, rate: int, seconds: float) -> list[float]:
    await redis.flushdb()
    latencies: list[float] = []

    def flushed(stamps: list[int]) -> None:
        now = time.time() * 1000
        latencies.extend(now - ts for ts in stamps)

    pipeline = Pipeline(redis, FEED, clock=None, on_flush=flushed)
    pipeline.start()
    per_slice = rate // 1000
    started = time.perf_counter()
    i = 0
    while (elapsed := time.perf_counter() - started) < seconds:
        due = int(elapsed * rate)
        while i < due:
            now_ms = int(time.time() * 1000)
            for _ in range(min(per_slice, due - i)):
                await pipeline.submit(Trade("binance", "BTCUSDT", T0 + i, now_ms, 60_000.0 + i % 50, 0.01, 1, i))
                i += 1
        await asyncio.sleep(0.001)
    await pipeline.aclose()
    return sorted(latencies)


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def main() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the target says
    redis = Redis.from_url(REDIS_URL)
    frames = _frames(MESSAGES)
    try:
        rows = [
            ("frames, per message", *await _throughput(redis, frames, parse=True, yield_each=True)),
            ("events, per message", *await _throughput(redis, frames, parse=False, yield_each=True)),
            ("events, burst", *await _throughput(redis, frames, parse=False, yield_each=False)),
        ]
        latencies = await _latency(redis, 10_000, SECONDS)
    finally:
        await redis.flushdb()
        await redis.aclose()
    print(f"{MESSAGES} trade messages per run, one core, Redis {REDIS_URL}, queue 100, batch 500 / 20 ms")
    print(f"{'throughput':<22} {'msg/s':>10} {'coalesced':>10} {'target':>12} {'ok':>4}")
    for name, rate, coalesced in rows:
        print(f"{name:<22} {rate:>10.0f} {coalesced:>10} {'>= 50000':>12} {'yes' if rate >= 50_000 else 'NO':>4}")
    p50, p99, top = _pct(latencies, 0.5), _pct(latencies, 0.99), (latencies[-1] if latencies else float("nan"))
    print(f"{'latency @ 10000 msg/s':<22} {'p50 ms':>10} {'p99 ms':>10} {'max ms':>8} {'target':>10} {'ok':>4}")
    print(
        f"{f'{len(latencies)} msgs, {SECONDS:.0f} s':<22} {p50:>10.1f} {p99:>10.1f} {top:>8.1f} {'p99 < 50':>10}"
        f" {'yes' if p99 < 50 else 'NO':>4}"
    )


if __name__ == "__main__":
    asyncio.run(main())
