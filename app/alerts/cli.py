"""`deltaflow alerts test`: backtest a rule over a market's stored closed bars (Redis) or a CSV of candles.

The rule file is JSON: a rule as `POST /v1/alerts` takes it, or only part of one (at least `condition`);
`--venue/--symbol/--timeframe` name the market (they replace the file's). The evaluation is exactly the one of
`POST /v1/alerts/test` (app/alerts/backtest_run.py); the output is a table of the bars where the rule would have
fired, or the route's JSON document with `--json`. With `--csv` the candles come from the file (the format of
`deltaflow evaluate`), aggregated into `--timeframe` bars when the file's are shorter; venue and symbol then only
label the output. Exit status: 0, or 2 for an invalid rule, file or market.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from app.alerts.backtest_run import BacktestSpec, backtest_document, run_backtest
from app.alerts.conditions import ConditionInvalid, parse_condition, to_json
from app.alerts.evaluator import number
from app.alerts.schemas import AlertRuleCreate
from app.config import Settings
from app.core.redis import create_redis
from app.market.aggregation import TIMEFRAMES
from app.market.store import read_candles_json
from app.signals.evaluate_cli import aggregate, read_candles


class RuleFileInvalid(ValueError):
    """The rule file or the market cannot be used; the message says why (with JSON pointers for the rule)."""


def add_alerts_parser(commands: Any) -> None:
    alerts = commands.add_parser("alerts", help="alert rules: backtest one over stored or CSV candles")
    actions = alerts.add_subparsers(dest="alerts_command", required=True)
    test = actions.add_parser("test", help="list the closed bars where a rule would have fired")
    test.add_argument("--rule-file", required=True, type=Path, help="the rule as JSON (as POST /v1/alerts takes)")
    test.add_argument("--venue", required=True, help="the market's venue (e.g. binance)")
    test.add_argument("--symbol", required=True, help="the market's symbol (e.g. BTCUSDT)")
    test.add_argument("--timeframe", required=True, choices=list(TIMEFRAMES), help="the bars evaluated")
    test.add_argument("--csv", type=Path, help="candles from this CSV instead of the stored bars")
    test.add_argument("--bars", type=int, help="closed bars to replay (default DELTAFLOW_ALERT_TEST_DEFAULT_BARS)")
    test.add_argument("--json", action="store_true", help="print the document POST /v1/alerts/test returns")


def load_rule(path: Path, args: argparse.Namespace, settings: Settings) -> AlertRuleCreate:
    try:
        raw = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise RuleFileInvalid(f"{path}: {exc}") from None
    if not isinstance(raw, dict):
        raise RuleFileInvalid(f"{path}: a rule is a JSON object")
    body = {"name": path.stem[:200] or "rule", **raw}
    body.update(venue=args.venue, symbol=args.symbol, timeframe=args.timeframe)
    try:
        rule = AlertRuleCreate.model_validate(body)
    except ValidationError as exc:
        problems = [f"#/{'/'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()]
        raise RuleFileInvalid("; ".join(problems)) from None
    try:
        parsed = parse_condition(
            rule.condition,
            max_depth=settings.alert_condition_max_depth,
            max_nodes=settings.alert_condition_max_nodes,
        )
    except ConditionInvalid as exc:
        raise RuleFileInvalid("; ".join(f"{e.pointer}: {e.detail}" for e in exc.errors)) from None
    return rule.model_copy(update={"condition": to_json(parsed)})


def _spec(rule: AlertRuleCreate, args: argparse.Namespace, settings: Settings) -> BacktestSpec:
    if args.bars is not None and args.bars < 1:
        raise RuleFileInvalid("--bars must be at least 1")
    bars = min(args.bars or settings.alert_test_default_bars, settings.alert_test_max_bars)
    return BacktestSpec(
        venue=rule.venue,
        symbol=rule.symbol,
        timeframe=rule.timeframe,
        interval_ms=TIMEFRAMES[rule.timeframe],
        condition=dict(rule.condition),
        frequency=rule.frequency.value,
        cooldown_bars=rule.cooldown_bars,
        bars=bars,
        warmup=settings.alert_test_warmup_bars,
        window=settings.signal_bars,
    )


async def _stored(settings: Settings, spec: BacktestSpec) -> dict[str, Any]:
    redis = create_redis(settings)
    try:
        limit = spec.bars + spec.warmup + 1  # the forming bar comes last and is never used
        raw = await read_candles_json(redis, spec.venue, spec.symbol, spec.timeframe, limit, max_limit=limit)
    except ValueError as exc:  # unknown venue, symbol or timeframe (the store's checks)
        raise RuleFileInvalid(str(exc)) from None
    finally:
        await redis.aclose()
    document = orjson.loads(run_backtest(raw, spec))
    if document is None:
        raise RuleFileInvalid(f"no closed {spec.timeframe} bars stored for {spec.venue}:{spec.symbol}")
    result: dict[str, Any] = document
    return result


def _from_csv(path: Path, spec: BacktestSpec) -> dict[str, Any]:
    candles = read_candles(path)
    if candles.interval_ms != spec.interval_ms:
        candles = aggregate(candles, spec.interval_ms)
    return backtest_document(candles, spec)


def render(document: dict[str, Any]) -> str:
    firings = document["firings"]
    lines = [
        f"{document['venue']}:{document['symbol']} {document['timeframe']}: {document['description']} "
        f"({document['frequency']}, cooldown {document['cooldown_bars']} bars)",
        f"{document['bars']} closed bars replayed ({document['from']} to {document['to']}) after "
        f"{document['warmup_bars']} warm-up bars; {len(firings)} firing{'' if len(firings) == 1 else 's'}",
    ]
    if firings:
        lines.append(f"{'bar close':<22} {'close':>14} {'bias':<8} sentence")
        for firing in firings:
            close = "-" if firing["close"] is None else number(firing["close"])
            lines.append(f"{firing['bar_time']:<22} {close:>14} {firing['bias']:<8} {firing['sentence']}")
    return "\n".join(lines)


def run_alerts_command(settings: Settings, args: argparse.Namespace) -> int:
    try:
        rule = load_rule(args.rule_file, args, settings)
        spec = _spec(rule, args, settings)
        document = _from_csv(args.csv, spec) if args.csv else asyncio.run(_stored(settings, spec))
    except (OSError, ValueError) as exc:  # RuleFileInvalid, CsvInvalid and unreadable files are ValueErrors
        print(f"deltaflow alerts test: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render(document))
    return 0
