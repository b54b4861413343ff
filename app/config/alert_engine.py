"""Settings of alert evaluation at bar close (`app/alerts/engine.py`): the switch, the cross-instance claim, the
catch-up sweep and the bounds of the Redis keys it keeps."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings


class AlertEngineSettings(BaseSettings):
    # Every instance follows bar closes and evaluates the rules of the markets that have some (one instance per
    # close, by a Redis claim). Off: this instance evaluates nothing (others still may).
    alerts_evaluate: bool = True
    # A claim on one (market, timeframe, closed bar): the holder has this long to compute the analysis and commit;
    # past it, without a done mark, the next sweep of any instance takes the close over.
    alert_claim_ttl_seconds: Annotated[float, Field(gt=0, le=600)] = 15.0
    # How long a close stays marked done (the sweep looks back `alert_sweep_bars` bars; the mark must outlive them
    # for every timeframe, or an old close is evaluated again — harmless, its rules' state refuses it, but costly).
    alert_done_ttl_seconds: Annotated[int, Field(ge=60, le=30 * 86_400)] = 4 * 86_400
    # The catch-up sweep: every this often each instance looks at the newest `alert_sweep_bars` closed bars of
    # every market with rules and evaluates those not done (a lost announcement, a reconnect, a dead holder).
    alert_sweep_seconds: Annotated[float, Field(gt=0, le=3600)] = 5.0
    alert_sweep_bars: Annotated[int, Field(ge=1, le=100)] = 3
    # The last evaluated bar's snapshot per market and timeframe (the `previous` of crosses and changes_to), kept
    # this long so the next close need not analyse the bar before it again.
    alert_snapshot_ttl_seconds: Annotated[int, Field(ge=60, le=30 * 86_400)] = 2 * 86_400
    # Firing rules whose sentences are built between two yields to the event loop (a close where 10 000 rules fire
    # must not stall requests for all of them; the evaluation itself is vectorised, a few ms for 10 000 rules).
    alert_evaluate_batch: Annotated[int, Field(ge=10, le=100_000)] = 1000
    # Markets whose closes one process evaluates at once (each holds a database connection for its transaction
    # and queues for the analysis pool): a minute boundary closing 100 markets must not take the request path's
    # connections.
    alert_max_concurrent_closes: Annotated[int, Field(ge=1, le=256)] = 4
    # Polling interval of the bar-close listener's stop flag and of its reconnection after a lost connection.
    alert_listen_poll_seconds: Annotated[float, Field(gt=0, le=10)] = 0.5
