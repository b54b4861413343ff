"""``DELTAFLOW_FEEDS``: what to ingest, as ``venue:SYM,SYM;venue:SYM`` (empty = nothing).

Imported by ``app.config`` to validate the setting when it is read, so this module imports nothing from the app
but the event types (no cycle with the settings).
"""

from __future__ import annotations

import re
from typing import Final

from app.market.events import VENUES, Venue

Feed = tuple[Venue, str]
_SYMBOL: Final = re.compile(r"^[A-Z0-9][A-Z0-9._-]{0,31}$")
FORMAT_HINT: Final = "expected 'venue:SYM,SYM;venue:SYM', e.g. 'binance:BTCUSDT,ETHUSDT;sim:BTCUSDT'"


class FeedSpecError(ValueError):
    """A malformed ``DELTAFLOW_FEEDS`` value; the message says what and where."""


def parse_feeds(spec: str) -> tuple[Feed, ...]:
    """(venue, SYMBOL) pairs in the order given; symbols are upper-cased; duplicates are an error."""
    feeds: list[Feed] = []
    for index, raw in enumerate(spec.split(";")):
        group = raw.strip()
        if not group:
            continue
        venue, colon, symbols = group.partition(":")
        venue = venue.strip().lower()
        if not colon:
            raise FeedSpecError(f"feed group {index + 1} {group!r} has no ':'; {FORMAT_HINT}")
        if venue not in VENUES:
            raise FeedSpecError(f"unknown venue {venue!r} in {group!r}; valid venues: {', '.join(VENUES)}")
        names = [s.strip().upper() for s in symbols.split(",") if s.strip()]
        if not names:
            raise FeedSpecError(f"venue {venue!r} lists no symbols; {FORMAT_HINT}")
        for symbol in names:
            if not _SYMBOL.match(symbol):
                raise FeedSpecError(
                    f"invalid symbol {symbol!r} for {venue!r}: letters, digits, '.', '_' or '-', up to 32 characters"
                )
            feed: Feed = (venue, symbol)
            if feed in feeds:
                raise FeedSpecError(f"feed {venue}:{symbol} is listed twice")
            feeds.append(feed)
    return tuple(feeds)
