"""Settings of the signal track record (`GET /v1/signals/{venue}/{symbol}/track-record`, the `track_record` summary in
every signal, `POST /v1/analyze` with `evaluate`, `deltaflow evaluate`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings


class TrackRecordSettings(BaseSettings):
    # Horizons in bars, each evaluated; the summary in every signal uses `track_record_summary_horizon`.
    track_record_horizons: tuple[Annotated[int, Field(ge=1, le=1000)], ...] = (1, 4, 12, 24)
    track_record_summary_horizon: Annotated[int, Field(ge=1, le=1000)] = 24
    # Costs charged per side (entry and exit), in basis points of the price.
    track_record_fee_bps: Annotated[float, Field(ge=0, le=1000)] = 5.0
    track_record_slippage_bps: Annotated[float, Field(ge=0, le=1000)] = 5.0
    # Shuffles of the bias behind the `random` baseline's p-value (seeded, so a record is reproducible).
    track_record_permutations: Annotated[int, Field(ge=1000, le=100_000)] = 1000
    # The stored bars replayed (the newest ones; at most what the store keeps, DELTAFLOW_MARKET_BAR_RETENTION).
    track_record_bars: Annotated[int, Field(ge=50, le=1_000_000)] = 5000
    # How long a feed's replay memory (the calibrated model's prediction at every replayed bar, ~34 bytes a bar, so
    # the next replay fits only the new bars) stays in Redis without a replay; after it, one replay from scratch.
    track_record_memory_ttl_s: Annotated[int, Field(ge=60, le=90 * 86_400)] = 2 * 86_400
