"""`deltaflow` console script: serve, migrate, check. Later issues add subcommands here."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

from app.alerts.cli import add_alerts_parser, run_alerts_command
from app.config import ServerKind, Settings, get_settings
from app.console.cli import add_users_parser, run_users_command
from app.core import serving
from app.keys.cli import add_keys_parser, run_keys_command
from app.signals.evaluate_cli import add_evaluate_parser, run_evaluate
from app.signals.study_cli import add_study_parser, run_study


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand and option (the README's command examples are parsed by it in tests/test_readme.py)."""
    parser = argparse.ArgumentParser(prog="deltaflow", description="Deltaflow trading-signal API")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the HTTP API")
    serve.add_argument("--host", help="bind address (default: DELTAFLOW_HOST)")
    serve.add_argument("--port", type=int, help="port (default: DELTAFLOW_PORT)")
    serve.add_argument("--workers", type=int, help="worker processes (default: DELTAFLOW_WORKERS)")
    serve.add_argument(
        "--server", choices=[kind.value for kind in ServerKind], help="HTTP server (default: DELTAFLOW_SERVER)"
    )
    serve.add_argument(
        "--with-ingest", action="store_true", help="also ingest DELTAFLOW_FEEDS in-process (sets INGEST_IN_PROCESS)"
    )

    commands.add_parser("migrate", help="apply database migrations up to the code's head revision")
    commands.add_parser("check", help="print the configuration (secrets masked) and test connectivity")
    add_keys_parser(commands)
    add_users_parser(commands)
    commands.add_parser("ingest", help="ingest DELTAFLOW_FEEDS into Redis (one leased ingestor per feed)")
    commands.add_parser(
        "feeds", help="each configured feed's status; exit 1 if one has no ingestor (a health check for `ingest`)"
    )
    record = commands.add_parser("record", help="record DELTAFLOW_FEEDS' normalised events to a file")
    record.add_argument("file", help="output file (JSON lines)")
    record.add_argument("--seconds", type=float, default=60.0, help="stop after this long (default 60)")
    record.add_argument("--max-events", type=int, default=1_000_000, help="stop after this many events")
    replay = commands.add_parser("replay", help="feed a recorded session through the pipeline into Redis")
    replay.add_argument("file", help="a file written by `deltaflow record`")
    replay.add_argument("--speed", type=float, default=1.0, help="times real time; 0 = as fast as possible")
    add_evaluate_parser(commands)
    add_study_parser(commands)
    add_alerts_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve" and (args.with_ingest or args.server):
        # Server workers read settings themselves: pass the flags through their environment.
        if args.with_ingest:
            os.environ["DELTAFLOW_INGEST_IN_PROCESS"] = "true"
        if args.server:
            os.environ["DELTAFLOW_SERVER"] = args.server
        get_settings.cache_clear()
    try:
        settings = get_settings()
    except ValueError as exc:  # pydantic ValidationError: print it plainly, not as a traceback
        print(f"deltaflow: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    return _dispatch(settings, args)


def _dispatch(settings: Settings, args: argparse.Namespace) -> int:
    commands: dict[str, Callable[[], int]] = {
        "serve": lambda: serving.serve(settings, args.host, args.port, args.workers),
        "migrate": lambda: _migrate(settings),
        "keys": lambda: run_keys_command(settings, args),
        "users": lambda: run_users_command(settings, args),
        "ingest": lambda: _market_command(settings, args),
        "feeds": lambda: asyncio.run(_feeds(settings)),
        "record": lambda: _market_command(settings, args),
        "replay": lambda: _market_command(settings, args),
        "evaluate": lambda: run_evaluate(settings, args),
        "study": lambda: run_study(settings, args),
        "alerts": lambda: run_alerts_command(settings, args),
    }
    command = commands.get(args.command)
    return command() if command is not None else asyncio.run(_check(settings))


def _migrate(settings: Settings) -> int:
    from app.core.logging import configure_logging
    from app.core.migrations import code_head, upgrade_to_head

    configure_logging(settings)
    upgrade_to_head(settings.database_url)
    print(f"database migrated to revision {code_head()}")
    return 0


async def _check(settings: Settings) -> int:
    from app.core.db import create_engine
    from app.core.redis import create_redis
    from app.health.service import readiness

    print(orjson.dumps(settings.public_view(), option=orjson.OPT_INDENT_2).decode())
    engine = create_engine(settings)
    redis = create_redis(settings)
    try:
        results = await readiness(engine, redis, limit_seconds=max(settings.readiness_check_timeout_seconds, 2.0))
    finally:
        await redis.aclose()
        await engine.dispose()
    for result in results:
        print(f"{result.name:<10} {result.status:<5} {result.latency_ms:>9.1f} ms  {result.detail}")
    return 1 if any(r.required and r.status == "fail" for r in results) else 0


async def _feeds(settings: Settings) -> int:
    """Every configured feed's status as the ingestors store it; a feed no ingestor holds fails the check (with two
    `ingest` replicas, one holds each lease and the other stands by: both are healthy while every feed is held)."""
    from app.core.redis import create_redis
    from app.market.feeds import parse_feeds
    from app.market.store import read_feed_status

    redis = create_redis(settings)
    try:
        statuses = await read_feed_status(redis, list(parse_feeds(settings.feeds)))
    finally:
        await redis.aclose()
    for status in statuses:
        age = status.get("last_message_age_s")
        print(
            f"{status['venue']}:{status['symbol']:<14} {status.get('state', '?'):<14} "
            f"connected={str(status.get('connected', False)).lower():<5} "
            f"last message {'-' if age is None else f'{age:.1f} s ago'}"
        )
    orphans = [f"{s['venue']}:{s['symbol']}" for s in statuses if s.get("state") == "no_ingestor"]
    if orphans:
        print(f"deltaflow feeds: no ingestor holds {', '.join(orphans)}", file=sys.stderr)
    return 1 if orphans else 0


def _market_command(settings: Settings, args: argparse.Namespace) -> int:
    from app.core.logging import configure_logging
    from app.market.recording import RecordingError
    from app.market.runtime import FeedConfigError

    configure_logging(settings)
    try:
        if args.command == "ingest":
            from app.core.metrics_server import start_listener

            start_listener(settings, None)  # the feed metrics of this one process, when metrics_port is set
            return asyncio.run(_ingest(settings))
        if args.command == "record":
            from app.market.recording import record

            count = asyncio.run(record(settings, Path(args.file), seconds=args.seconds, max_events=args.max_events))
            print(f"recorded {count} events to {args.file}")
            return 0
        return asyncio.run(_replay(settings, Path(args.file), args.speed))
    except (FeedConfigError, RecordingError, OSError) as exc:
        print(f"deltaflow {args.command}: {exc}", file=sys.stderr)
        return 2


async def _ingest(settings: Settings) -> int:
    """Run the ingestors until SIGTERM/SIGINT, then stop them cleanly (flush, release every lease)."""
    import signal

    from app.core.redis import create_redis
    from app.market.runtime import FeedConfigError, start_ingestion

    if settings.is_memory_redis:
        print("deltaflow ingest: DELTAFLOW_REDIS_URL is memory:// — data stays in this process", file=sys.stderr)
    redis = create_redis(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        handle = start_ingestion(settings, redis)
        if not handle.feeds:
            raise FeedConfigError("DELTAFLOW_FEEDS is empty: nothing to ingest")
        print(f"ingesting {', '.join(f'{v}:{s}' for v, s in handle.feeds)}", flush=True)
        await stop.wait()
        await handle.aclose()
    finally:
        await redis.aclose()
    return 0


async def _replay(settings: Settings, path: Path, speed: float) -> int:
    from app.core.redis import create_redis
    from app.market.recording import replay

    redis = create_redis(settings)
    try:
        count = await replay(path, redis, settings, speed=speed)
    finally:
        await redis.aclose()
    print(f"replayed {count} events from {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
