"""`deltaflow evaluate --csv FILE`: the signal's track record on a CSV of candles, printed as a table.

The same engine call as `POST /v1/analyze` with `evaluate` and the track-record route. The CSV needs a header
naming a time column (`t`, `time`, `timestamp`, `date` or `open_time`: epoch seconds or milliseconds, ISO 8601,
or CryptoDataDownload's `2024-01-31 05-PM`) and `open`, `high`, `low`, `close`, `volume` (or `o h l c v`);
`taker_buy_volume` / `buy_v` is used when present. A banner line before the header (CryptoDataDownload's) is
skipped; rows are sorted by time and exact duplicates of a time keep the first. `--timeframe` aggregates the bars
into longer ones (1h → 4h, 1d …) before the replay; a bucket missing bars is still one bar (the gaps are counted).
The signal replayed is the default one, calibrated (its model at the defaults the study kept): a refit at every
bar, ~1 ms a bar, and no bar limit here (the CPU is yours). `--heuristic` replays the heuristic signal instead
(``params.signal.calibrated`` false).
"""

from __future__ import annotations

import argparse
import csv
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from app.analytics import AnalysisParams, Candles, SignalParams
from app.analytics.evaluation import EvaluationParams
from app.analytics.track_record import track_record
from app.config import Settings
from app.market.aggregation import TIMEFRAMES

TIME_COLUMNS = ("t", "time", "timestamp", "date", "open_time")
COLUMNS = {"open": ("open", "o"), "high": ("high", "h"), "low": ("low", "l"), "close": ("close", "c")}
VOLUME_COLUMNS = ("volume", "v")
TAKER_COLUMNS = ("taker_buy_volume", "taker_buy_v", "buy_v")
SECONDS_CUTOFF = 10**11  # epoch values below this are seconds (10^11 s is the year 5138), above milliseconds


class CsvInvalid(ValueError):
    """The file cannot be read as candles; the message says where."""


def add_evaluate_parser(commands: Any) -> None:
    parser = commands.add_parser("evaluate", help="the signal's track record on a CSV of candles (a table)")
    parser.add_argument("--csv", required=True, type=Path, help="candles with a header row (see the README)")
    parser.add_argument("--timeframe", choices=list(TIMEFRAMES), help="aggregate into bars this long first")
    parser.add_argument(
        "--horizon", type=int, action="append", help="bars to follow each signal (repeatable; default: settings)"
    )
    parser.add_argument("--fees-bps", type=float, help="fee per side (default DELTAFLOW_TRACK_RECORD_FEE_BPS)")
    parser.add_argument("--slippage-bps", type=float, help="slippage per side (default …_SLIPPAGE_BPS)")
    parser.add_argument("--json", action="store_true", help="print the full evaluation as JSON instead")
    parser.add_argument(
        "--heuristic", action="store_true", help="replay the heuristic signal, not the calibrated default"
    )


def run_evaluate(settings: Settings, args: argparse.Namespace) -> int:
    try:
        candles = read_candles(args.csv)
        if args.timeframe:
            candles = aggregate(candles, TIMEFRAMES[args.timeframe])
        params = EvaluationParams(
            horizons=tuple(sorted(set(args.horizon or settings.track_record_horizons))),
            fee_bps=settings.track_record_fee_bps if args.fees_bps is None else args.fees_bps,
            slippage_bps=settings.track_record_slippage_bps if args.slippage_bps is None else args.slippage_bps,
            permutations=settings.track_record_permutations,
        )
    except (OSError, ValueError) as exc:
        print(f"deltaflow evaluate: {exc}", file=sys.stderr)
        return 2
    signal = AnalysisParams(signal=SignalParams(calibrated=False)) if args.heuristic else None
    evaluation = track_record(candles, params, params=signal).evaluation
    document = evaluation.to_dict()
    if args.json:
        print(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(render_table(document, len(candles)))
    return 0


def _pick(header: list[str], names: tuple[str, ...], *, required: bool = True) -> int | None:
    lowered = [name.strip().lower() for name in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    if required:
        raise CsvInvalid(f"no column named {' or '.join(names)} in the header {header}")
    return None


def _epoch_ms(text: str, line: int) -> int:
    value = text.strip()
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        return int(number * 1000) if number < SECONDS_CUTOFF else int(number)
    for text_format in (None, "%Y-%m-%d %I-%p"):  # ISO 8601, then CryptoDataDownload's hourly stamps
        try:
            if text_format is None:
                moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            else:
                moment = datetime.strptime(value, text_format)
        except ValueError:
            continue
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)
    raise CsvInvalid(f"line {line}: {value!r} is not a time")


def read_candles(path: Path) -> Candles:
    with path.open(newline="") as handle:
        lines = list(csv.reader(handle))
    start = next((i for i, row in enumerate(lines[:2]) if any(c.strip().lower() in TIME_COLUMNS for c in row)), None)
    if start is None:
        raise CsvInvalid(f"{path}: no header with a time column ({', '.join(TIME_COLUMNS)}) in the first two lines")
    header, rows = lines[start], [row for row in lines[start + 1 :] if row]
    if not rows:
        raise CsvInvalid(f"{path}: no candles after the header")
    at = _pick(header, TIME_COLUMNS)
    picks = {name: _pick(header, names) for name, names in COLUMNS.items()}
    volume, taker = _pick(header, VOLUME_COLUMNS), _pick(header, TAKER_COLUMNS, required=False)
    try:
        times = np.array([_epoch_ms(row[at], start + 2 + i) for i, row in enumerate(rows)], dtype=np.int64)  # type: ignore[index]
        values = {name: np.array([float(row[i]) for row in rows]) for name, i in picks.items()}  # type: ignore[index]
        volumes = np.array([float(row[volume]) for row in rows])  # type: ignore[index]
        takers = None if taker is None else np.array([float(row[taker]) for row in rows])
    except (IndexError, ValueError) as exc:
        raise CsvInvalid(f"{path}: {exc}") from None
    order = np.argsort(times, kind="stable")
    keep = np.concatenate(([True], np.diff(times[order]) > 0))  # the first of rows sharing a time
    chosen = order[keep]
    return Candles.from_arrays(
        open_time=times[chosen], open=values["open"][chosen], high=values["high"][chosen],
        low=values["low"][chosen], close=values["close"][chosen], volume=volumes[chosen],
        taker_buy_volume=None if takers is None else takers[chosen],
    )  # fmt: skip


def aggregate(candles: Candles, interval_ms: int) -> Candles:
    """Bars of ``interval_ms`` (aligned to the epoch, as the ingestion aligns them): first open, highest high,
    lowest low, last close, summed volumes."""
    if interval_ms < candles.interval_ms:
        raise CsvInvalid(f"--timeframe is shorter than the file's bars ({candles.interval_ms // 1000} s)")
    bucket = candles.open_time // interval_ms
    starts = np.flatnonzero(np.concatenate(([True], np.diff(bucket) != 0)))
    ends = np.concatenate((starts[1:], [len(candles)])) - 1
    taker = candles.taker_buy_volume
    return Candles.from_arrays(
        open_time=bucket[starts] * interval_ms, open=candles.open[starts],
        high=np.maximum.reduceat(candles.high, starts), low=np.minimum.reduceat(candles.low, starts),
        close=candles.close[ends],
        volume=np.add.reduceat(candles.volume, starts),
        taker_buy_volume=None if taker is None else np.add.reduceat(taker, starts), interval_ms=interval_ms,
    )  # fmt: skip


def _number(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render_table(document: dict[str, Any], bars: int) -> str:
    lines = [
        f"{bars} bars, {document['gaps']} gaps; costs {document['fee_bps']} + {document['slippage_bps']} bps per "
        "side; replayed signal (each bar's signal from the bars up to it), entry next open",
        f"{'h':>4} {'group':<12} {'n':>6} {'hit':>6} {'mean %':>8} {'median %':>8} {'PF':>6} {'E[R]':>7} "
        f"{'E[R] 95% CI':>17} {'sharpe':>7} {'maxDD %':>8} {'p(rand)':>7}",
    ]
    for horizon, figures in document["horizons"].items():
        rows = [(group, figures[group]) for group in ("all", "long", "short")]
        rows += [("always_long", figures["baselines"]["always_long"]), ("random", figures["baselines"]["random"])]
        for name, group in rows:
            interval = group.get("expectancy_r_ci") or [None, None]
            ci = f"[{_number(interval[0], '.2f')}, {_number(interval[1], '.2f')}]" if interval[0] is not None else "-"
            mean = group.get("mean_return")
            median, drawdown = group.get("median_return"), group.get("max_drawdown")
            p_value = figures["baselines"]["random"].get("p_value") if name == "all" else None
            lines.append(
                f"{horizon:>4} {name:<12} {group.get('n', 0):>6} {_number(group.get('hit_rate'), '.3f'):>6} "
                f"{_number(None if mean is None else mean * 100, '.3f'):>8} "
                f"{_number(None if median is None else median * 100, '.3f'):>8} "
                f"{_number(group.get('profit_factor'), '.2f'):>6} {_number(group.get('expectancy_r'), '.3f'):>7} "
                f"{ci:>17} {_number(group.get('sharpe'), '.3f'):>7} "
                f"{_number(None if drawdown is None else drawdown * 100, '.2f'):>8} {_number(p_value, '.3f'):>7}"
            )
        ic = figures["ic"]
        spearman, t_stat = _number(ic.get("spearman"), ".4f"), _number(ic.get("t_stat"), ".2f")
        lines.append(f"{horizon:>4} IC (Spearman, score vs forward return) {spearman} t={t_stat} (n={ic.get('n')})")
    lines.append("'-': not defined, or fewer than 30 signals. Past and hypothetical, after the costs above.")
    return "\n".join(lines)
