"""Soak the ingestion: the full runtime (lease, sim feed, pipeline, status writer) into a real Redis for N minutes,
reporting RSS, open file descriptors and asyncio tasks over time. Growth in any column is a leak.

    python bench/soak_ingest.py --minutes 30 [--rate 20000] [--every 10]

Not part of `make bench` (it runs for minutes); `--minutes 0.2` is a smoke run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from redis.asyncio import Redis

from app.config import Settings
from app.market.runtime import start_ingestion

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:  # not Linux: the peak is the best available
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


async def soak(minutes: float, rate: float, every: float) -> None:
    settings = Settings(redis_url=REDIS_URL, feeds="sim:BTCUSDT", sim_rate=rate, market_lease_ttl_seconds=5)
    redis = Redis.from_url(REDIS_URL)
    await redis.flushdb()
    handle = start_ingestion(settings, redis)
    started = time.monotonic()
    print(f"soak: sim:BTCUSDT at {rate:.0f} trades/s for {minutes} min into {REDIS_URL}")
    columns = (("elapsed s", 9), ("messages", 10), ("msg/s", 8), ("RSS MB", 8), ("FDs", 5), ("tasks", 6))
    print(" ".join(f"{name:>{width}}" for name, width in columns), f"{'queue':>6} {'coalesced':>10}")
    last_count, last_time = 0, started
    try:
        while (now := time.monotonic()) - started < minutes * 60:
            await asyncio.sleep(min(every, max(0.1, minutes * 60 - (now - started))))
            (ingestor,) = handle.ingestors
            pipeline = ingestor.pipeline
            count = pipeline.stats.received if pipeline else 0
            now = time.monotonic()
            print(
                f"{now - started:>9.0f} {count:>10} {(count - last_count) / (now - last_time):>8.0f} {rss_mb():>8.1f}"
                f" {open_fds():>5} {len(asyncio.all_tasks()):>6} {pipeline.queue_depth if pipeline else 0:>6}"
                f" {pipeline.stats.coalesced if pipeline else 0:>10}",
                flush=True,
            )
            last_count, last_time = count, now
    finally:
        await handle.aclose()
        await redis.flushdb()
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=20_000.0, help="simulated trades per second")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between report lines")
    args = parser.parse_args()
    asyncio.run(soak(args.minutes, args.rate, args.every))


if __name__ == "__main__":
    main()
