"""Recorded sessions: normalised events as JSON lines, written by ``deltaflow record`` and fed back through the
same pipeline by ``deltaflow replay``.

The first line is a header (format, version, feeds); every other line is ``{"k": kind, "e": {fields}}``. Recording
the normalised events (not raw frames) makes a session replayable for every venue, including ``sim``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Final

import orjson

from app.config import Settings
from app.core.redis import RedisClient
from app.market.events import BookSnapshot, BookUpdate, Kline, Liquidation, MarketEvent, Trade
from app.market.feeds import Feed, parse_feeds
from app.market.pipeline import Pipeline
from app.market.runtime import configured_feeds, pipeline_limits, store_limits
from app.market.sources import Shared, build_source

FORMAT: Final = "deltaflow-market-recording"
VERSION: Final = 1
_KINDS: Final[dict[str, type[MarketEvent]]] = {
    "trade": Trade,
    "book_snapshot": BookSnapshot,
    "book_update": BookUpdate,
    "liquidation": Liquidation,
    "kline": Kline,
}
_KIND_OF: Final = {cls: kind for kind, cls in _KINDS.items()}


class RecordingError(ValueError):
    """Not a recording, or a line that does not decode to an event."""


def encode_event(event: MarketEvent) -> bytes:
    return orjson.dumps({"k": _KIND_OF[type(event)], "e": event})


def decode_event(line: bytes) -> MarketEvent:
    try:
        data = orjson.loads(line)
        cls = _KINDS[data["k"]]
        fields: dict[str, Any] = data["e"]
        for side in ("bids", "asks"):
            if side in fields:
                fields[side] = tuple((float(p), float(q)) for p, q in fields[side])
        return cls(**fields)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise RecordingError(f"bad recording line: {exc}") from exc


class Recorder:
    """An event sink that appends to an open file; ``limit`` events at most, then ``done`` is set."""

    def __init__(self, out: IO[bytes], limit: int) -> None:
        self._out = out
        self.limit = limit
        self.count = 0
        self.done = asyncio.Event()

    async def __call__(self, event: MarketEvent) -> None:
        if self.count >= self.limit:
            self.done.set()
            return
        self._out.write(encode_event(event) + b"\n")
        self.count += 1


def write_header(out: IO[bytes], feeds: list[Feed]) -> None:
    header = {"format": FORMAT, "version": VERSION, "feeds": [f"{v}:{s}" for v, s in feeds], "at": time.time()}
    out.write(orjson.dumps(header) + b"\n")


def read_recording(path: Path) -> tuple[list[Feed], Iterator[MarketEvent]]:
    """The feeds a recording holds and a lazy iterator over its events (the file is read line by line)."""
    with path.open("rb") as handle:
        try:
            header = orjson.loads(handle.readline())
        except orjson.JSONDecodeError as exc:
            raise RecordingError(f"{path} is not a recording: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise RecordingError(f"{path} is not a {FORMAT} file")
    feeds = [parse_feeds(f)[0] for f in header["feeds"]]

    def events() -> Iterator[MarketEvent]:
        with path.open("rb") as handle:
            handle.readline()
            for line in handle:
                if line.strip():
                    yield decode_event(line)

    return feeds, events()


async def replay(path: Path, redis: RedisClient, settings: Settings, *, speed: float = 1.0) -> int:
    """Feed a recording through the pipeline into Redis; ``speed`` times real time (0 = as fast as possible).

    Bars close by the recorded events' own times (no wall clock), so a fast replay builds the same bars.
    Returns the number of events replayed.
    """
    feeds, events = read_recording(path)
    pipeline = Pipeline(
        redis,
        feeds,
        limits=pipeline_limits(settings),
        store_limits=store_limits(settings),
        tick_sizes=settings.market_tick_sizes,
        clock=None,
    )
    pipeline.start()
    count = 0
    first_ts: int | None = None
    started = time.monotonic()
    try:
        for event in events:
            if speed > 0:
                ts = event.exchange_ts
                first_ts = ts if first_ts is None else first_ts
                delay = (ts - first_ts) / 1000 / speed - (time.monotonic() - started)
                if delay > 0:
                    await asyncio.sleep(delay)
            elif count % 256 == 0:
                await asyncio.sleep(0)
            await pipeline.submit(event)
            count += 1
    finally:
        with contextlib.suppress(asyncio.CancelledError):
            await pipeline.aclose(flush_timeout_s=30.0)
    return count


async def record(settings: Settings, path: Path, *, seconds: float, max_events: int) -> int:
    """Record the configured feeds' normalised events to ``path`` for ``seconds`` or ``max_events`` events.

    No lease and no Redis: recording only listens. Returns the number of events written.
    """
    feeds = list(configured_feeds(settings))
    shared = Shared(rest_budget_per_minute=settings.market_rest_budget_per_minute)
    with path.open("wb") as out:
        write_header(out, feeds)
        recorder = Recorder(out, max_events)
        sources = [build_source(settings, venue, symbol, recorder, shared) for venue, symbol in feeds]
        for source in sources:
            source.start()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await recorder.done.wait()
        finally:
            for source in sources:
                await source.stop()
            await shared.http.aclose()
    return recorder.count
