"""A feed's Prometheus metrics, from the status its ingestor already writes every `market_status_interval_seconds`.

Nothing on the event path: the pipeline and the connectors keep their plain counters, and this turns each status
snapshot into gauge values and counter increments (the status holds cumulative counts since the session began;
a new session — lease taken again, pipeline rebuilt — starts them at 0, so it resets what was seen).
"""

from __future__ import annotations

from typing import Any

from prometheus_client.metrics import Counter

from app.core.metrics import (
    FEED_COALESCED,
    FEED_CONNECTED,
    FEED_LAST_MESSAGE,
    FEED_QUEUE_DEPTH,
    FEED_RECONNECTS,
    FEED_REST_REFUSALS,
    FEED_RESYNCS,
    FEED_WRITE_ERRORS,
)

# The REST budget is one per venue in a process, shared by its feeds: its refusals are counted once, by venue.
_rest_refusals_seen: dict[str, int] = {}


class FeedMetrics:
    def __init__(self, venue: str, symbol: str) -> None:
        self.venue = venue
        self.connected = FEED_CONNECTED.labels(venue, symbol)
        self.last_message = FEED_LAST_MESSAGE.labels(venue, symbol)
        self.queue_depth = FEED_QUEUE_DEPTH.labels(venue, symbol)
        self.counters: dict[str, Counter] = {
            "reconnects": FEED_RECONNECTS.labels(venue, symbol),
            "coalesced": FEED_COALESCED.labels(venue, symbol),
            "resynced": FEED_RESYNCS.labels(venue, symbol),
            "write_errors": FEED_WRITE_ERRORS.labels(venue, symbol),
        }
        self.seen: dict[str, int] = {}
        FEED_REST_REFUSALS.labels(venue)  # exported at 0 from the start, for venues without a REST budget too

    def new_session(self) -> None:
        self.seen.clear()

    def observe(self, status: dict[str, Any], *, stopped: bool = False) -> None:
        self.connected.set(0 if stopped or not status.get("connected") else 1)
        self.queue_depth.set(0 if stopped else int(status.get("queue_depth") or 0))
        last_ms = status.get("last_message_ms")
        if last_ms:
            self.last_message.set(last_ms / 1000)
        for name, counter in self.counters.items():
            counter.inc(_advance(self.seen, name, int(status.get(name) or 0)))
        refusals = status.get("rest_budget_refusals")
        if refusals is not None:
            FEED_REST_REFUSALS.labels(self.venue).inc(_advance(_rest_refusals_seen, self.venue, int(refusals)))


def _advance(seen: dict[str, int], name: str, value: int) -> int:
    """How much a cumulative count grew since last seen (a count that went down restarted from 0)."""
    previous = seen.get(name, 0)
    seen[name] = value
    return value - previous if value >= previous else value
