"""`deltaflow evaluate --csv FILE`: the engine's track record on a CSV, as a real process."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.analytics import AnalysisParams, Candles, SignalParams
from app.analytics.evaluation import EvaluationParams
from app.analytics.track_record import track_record
from app.signals.evaluate_cli import aggregate, read_candles
from tests.trading.conftest import candle_rows

DELTAFLOW = str(Path(sys.executable).parent / "deltaflow")
ROWS = candle_rows(240, seed=21)


def _write(path: Path, *, banner: bool = False, rows: list[dict[str, Any]] = ROWS) -> Path:
    lines = ["https://www.cryptodatadownload.com"] if banner else []
    lines.append("date,open,high,low,close,Volume")
    for row in reversed(rows):  # newest first, as CryptoDataDownload writes them
        stamp = str(row["t"] // 1000)  # epoch seconds
        lines.append(f"{stamp},{row['o']!r},{row['h']!r},{row['l']!r},{row['c']!r},{row['v']!r}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _candles(rows: list[dict[str, Any]] = ROWS) -> Candles:
    return Candles.from_arrays(
        open_time=[r["t"] for r in rows], open=[r["o"] for r in rows], high=[r["h"] for r in rows],
        low=[r["l"] for r in rows], close=[r["c"] for r in rows], volume=[r["v"] for r in rows],
    )  # fmt: skip


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DELTAFLOW, "evaluate", *args], capture_output=True, text=True, timeout=120, check=False)


def test_the_json_output_is_the_engine_s_evaluation_of_the_file(tmp_path: Path) -> None:
    done = _run("--csv", str(_write(tmp_path / "c.csv")), "--horizon", "4", "--horizon", "1", "--json")
    assert done.returncode == 0, done.stderr
    expected = track_record(_candles(), EvaluationParams(horizons=(1, 4))).evaluation.to_dict()
    assert orjson.loads(done.stdout) == orjson.loads(orjson.dumps(expected))


def test_the_default_replays_the_calibrated_signal_and_heuristic_the_old_one(tmp_path: Path) -> None:
    rows = candle_rows(700, seed=22)
    csv_file = str(_write(tmp_path / "c.csv", rows=rows))
    calibrated = _run("--csv", csv_file, "--horizon", "24", "--json")
    heuristic = _run("--csv", csv_file, "--horizon", "24", "--heuristic", "--json")
    assert calibrated.returncode == 0, calibrated.stderr
    assert heuristic.returncode == 0, heuristic.stderr
    horizon = EvaluationParams(horizons=(24,))
    expected = track_record(_candles(rows), horizon).evaluation.to_dict()
    assert orjson.loads(calibrated.stdout) == orjson.loads(orjson.dumps(expected))
    old = AnalysisParams(signal=SignalParams(calibrated=False))
    expected_heuristic = track_record(_candles(rows), horizon, params=old).evaluation.to_dict()
    assert orjson.loads(heuristic.stdout) == orjson.loads(orjson.dumps(expected_heuristic))
    assert orjson.loads(calibrated.stdout) != orjson.loads(heuristic.stdout)


def test_the_table_reads_a_bannered_newest_first_file(tmp_path: Path) -> None:
    done = _run("--csv", str(_write(tmp_path / "c.csv", banner=True)), "--fees-bps", "0")
    assert done.returncode == 0, done.stderr
    assert "240 bars" in done.stdout
    assert "costs 0.0 + 5.0 bps" in done.stdout
    for horizon in ("1", "4", "12", "24"):
        assert any(line.split()[:2] == [horizon, "always_long"] for line in done.stdout.splitlines())


def test_hourly_text_stamps_and_aggregation(tmp_path: Path) -> None:
    stamped = tmp_path / "h.csv"
    stamped.write_text(
        "https://www.cryptodatadownload.com\ndate,symbol,open,high,low,close,Volume\n"
        "2024-01-31 01-PM,BTC/USD,3,4,2,3.5,10\n2024-01-31 12-PM,BTC/USD,2,3,1,3,10\n"
        "2024-01-31 11-AM,BTC/USD,1,2,0.5,2,10\n"
    )
    hourly = read_candles(stamped)
    noon = int(datetime(2024, 1, 31, 12, tzinfo=UTC).timestamp() * 1000)
    assert hourly.open_time.tolist() == [noon - 3_600_000, noon, noon + 3_600_000]
    assert hourly.close.tolist() == [2.0, 3.0, 3.5]
    minutes = read_candles(_write(tmp_path / "m.csv"))
    five = aggregate(minutes, 300_000)
    buckets: dict[int, list[dict[str, float]]] = {}
    for row in ROWS:  # bars aligned to the epoch, as the ingestion aligns them
        buckets.setdefault(row["t"] // 300_000 * 300_000, []).append(row)
    assert five.open_time.tolist() == list(buckets)
    assert five.open.tolist() == [rows[0]["o"] for rows in buckets.values()]
    assert five.close.tolist() == [rows[-1]["c"] for rows in buckets.values()]
    assert five.high.tolist() == [max(r["h"] for r in rows) for rows in buckets.values()]
    assert five.low.tolist() == [min(r["l"] for r in rows) for rows in buckets.values()]
    assert five.volume.tolist() == pytest.approx([sum(r["v"] for r in rows) for rows in buckets.values()])


def test_a_bad_file_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("date,open,high,low,close,Volume\n2024-01-01,1,2,0.5,oops,3\n")
    done = _run("--csv", str(bad))
    assert done.returncode == 2
    assert "deltaflow evaluate:" in done.stderr
    assert "Traceback" not in done.stderr
    missing = _run("--csv", str(tmp_path / "absent.csv"))
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr
