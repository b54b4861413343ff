"""`deltaflow study`: the signal quality study (issue 19) on the real candles in ``../shared/data``, as Markdown.

Reads ``coinbase_btcusd_1h.csv`` and ``coinbase_btcusd_1d.csv`` (CryptoDataDownload: a banner line, then the header
``date,symbol,open,high,low,close,volume_btc,volume``, newest first). Volume is ``volume_btc``, the base currency,
as the live venues report it (``deltaflow evaluate``'s reader takes the column named ``volume``, which is USD here).
Series: 1 h as read, 4 h built from it (``study.complete_buckets``: UTC 4 h boundaries, incomplete buckets dropped)
and 1 d from the daily file. ``--max-bars N`` keeps the last N bars of each series and ``--horizon H``
(repeatable) restricts the model's configurations to those horizons: quick runs (CI uses both); the report counts
only the configurations run.
The walk-forward refits the model once a day of bars (24 bars at 1 h, 6 at 4 h, 1 at 1 d): see ``model.walkforward``.
Costs: the track record's fee and slippage per side (settings). The analytics are pure (``app.analytics.study``);
this module reads the files, times the fit, renders and writes the report.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from app.analytics import Candles
from app.analytics.model import ModelParams, fit_window
from app.analytics.study import (
    HORIZONS,
    complete_buckets,
    component_ics,
    configurations,
    deflate,
    keep,
    run_trial,
    study_inputs,
)
from app.analytics.study.markdown import render
from app.analytics.types import FloatArray
from app.config import Settings

HOUR_MS, DAY_MS = 3_600_000, 86_400_000
FILES = {"1h": "coinbase_btcusd_1h.csv", "1d": "coinbase_btcusd_1d.csv"}
STRIDES = {"1h": 24, "4h": 6, "1d": 1}  # one refit per day of bars
DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"  # ../shared/data from the project root
TIMED_FITS = 50


def add_study_parser(commands: Any) -> None:
    parser = commands.add_parser("study", help="signal quality study on ../shared/data (writes a Markdown table)")
    parser.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA, help="folder holding candles/ (default: %(default)s)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("docs/signal-study.md"), help="report file (default: %(default)s)"
    )
    parser.add_argument("--max-bars", type=int, help="keep only the last N bars of each series (a quick run)")
    parser.add_argument(
        "--horizon", type=int, action="append", choices=HORIZONS, help="only these model horizons (a quick run)"
    )


def read_cryptodatadownload(path: Path, interval_ms: int) -> Candles:
    with path.open(newline="") as handle:
        rows = [row for row in list(csv.reader(handle))[2:] if row]  # a banner line, then the header
    stamp = "%Y-%m-%d %I-%p" if interval_ms < DAY_MS else "%Y-%m-%d"
    times = np.array([int(datetime.strptime(r[0], stamp).replace(tzinfo=UTC).timestamp() * 1000) for r in rows])
    values = np.array([[float(r[i]) for i in (2, 3, 4, 5, 6)] for r in rows])
    order = np.argsort(times, kind="stable")  # newest first in the file, a few rows out of order
    keep_rows = order[np.concatenate(([True], np.diff(times[order]) > 0))]  # the first row of a repeated time
    table = values[keep_rows]
    return Candles.from_arrays(
        open_time=times[keep_rows], open=table[:, 0], high=table[:, 1], low=table[:, 2], close=table[:, 3],
        volume=table[:, 4], interval_ms=interval_ms,
    )  # fmt: skip


def _last(candles: Candles, bars: int | None) -> Candles:
    if bars is None or bars >= len(candles):
        return candles
    cut = slice(len(candles) - bars, None)
    return Candles.from_arrays(
        open_time=candles.open_time[cut], open=candles.open[cut], high=candles.high[cut], low=candles.low[cut],
        close=candles.close[cut], volume=candles.volume[cut], interval_ms=candles.interval_ms,
    )  # fmt: skip


def load_series(data_dir: Path, max_bars: int | None) -> dict[str, Candles]:
    folder = data_dir / "candles"
    hourly = read_cryptodatadownload(folder / FILES["1h"], HOUR_MS)
    daily = read_cryptodatadownload(folder / FILES["1d"], DAY_MS)
    four = complete_buckets(hourly, 4 * HOUR_MS)
    return {"1h": _last(hourly, max_bars), "4h": _last(four, max_bars), "1d": _last(daily, max_bars)}


def fit_time_ms(features: FloatArray, forward: FloatArray, params: ModelParams) -> float | None:
    """Median wall time of one fit on a 1 000-bar window (``TIMED_FITS`` consecutive windows), or None when the
    series is too short."""
    window = replace(params, window=1_000)
    ends = range(len(features) - TIMED_FITS, len(features))
    if ends.start < window.window:
        return None
    timings = []
    for end in ends:
        started = time.perf_counter()
        fit_window(features, forward, end, window)
        timings.append(time.perf_counter() - started)
    return float(np.median(timings)) * 1000


def run_study(settings: Settings, args: argparse.Namespace) -> int:
    if args.max_bars is not None and args.max_bars < 300:
        message = "--max-bars must be at least 300 (100 warm-up bars, then the model needs 200 known rows)"
        print(f"deltaflow study: {message}", file=sys.stderr)
        return 2
    try:
        series = load_series(args.data_dir, args.max_bars)
    except (OSError, ValueError, IndexError) as exc:
        print(f"deltaflow study: cannot read the candles in {args.data_dir}: {exc}", file=sys.stderr)
        return 2
    cost = (settings.track_record_fee_bps + settings.track_record_slippage_bps) / 10_000
    inputs = {name: study_inputs(candles, HORIZONS) for name, candles in series.items()}
    ics = {name: component_ics(found, HORIZONS) for name, found in inputs.items()}
    trials = []
    horizons = tuple(sorted(set(args.horizon))) if args.horizon else HORIZONS
    for number, params in enumerate(configurations(cost, horizons=horizons), start=1):
        trials.append(run_trial(params, inputs, STRIDES))
        shrink = f"x{params.outcome_spacing:g}" if params.shrink else "off"
        print(
            f"configuration {number}: h={params.horizon} window={params.window} l2={params.l2} shrink={shrink}",
            file=sys.stderr,
        )
    kept = keep(trials)
    hourly = inputs["1h"]
    timing = fit_time_ms(hourly.features, hourly.forward[kept.params.horizon], kept.params)
    document = render(
        series=series, ics=ics, trials=trials, kept=kept, deflated=deflate(trials, kept), strides=STRIDES,
        cost_per_side=cost, fit_ms=timing, timed_fits=TIMED_FITS,
    )  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(document)
    print(f"wrote {args.out}")
    return 0
