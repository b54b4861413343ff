"""`deltaflow` console script: serve, migrate, check. Later issues add subcommands here."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import orjson

from app.config import Settings, get_settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deltaflow", description="Deltaflow trading-signal API")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the HTTP API")
    serve.add_argument("--host", help="bind address (default: DELTAFLOW_HOST)")
    serve.add_argument("--port", type=int, help="port (default: DELTAFLOW_PORT)")
    serve.add_argument("--workers", type=int, help="worker processes (default: DELTAFLOW_WORKERS)")

    commands.add_parser("migrate", help="apply database migrations up to the code's head revision")
    commands.add_parser("check", help="print the configuration (secrets masked) and test connectivity")

    args = parser.parse_args(argv)
    try:
        settings = get_settings()
    except ValueError as exc:  # pydantic ValidationError: print it plainly, not as a traceback
        print(f"deltaflow: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return _serve(settings, args.host, args.port, args.workers)
    if args.command == "migrate":
        return _migrate(settings)
    return asyncio.run(_check(settings))


def _serve(settings: Settings, host: str | None, port: int | None, workers: int | None) -> int:
    import uvicorn  # imported here: `deltaflow migrate` and `check` do not need the server

    uvicorn.run(
        "app.main:create_served_app",
        factory=True,
        host=host or settings.host,
        port=settings.port if port is None else port,
        workers=workers or settings.workers,
        log_config=None,  # app.core.logging configures every logger as JSON
        access_log=False,  # our RequestContextMiddleware writes the access log (with the request id)
        timeout_graceful_shutdown=int(settings.shutdown_timeout_seconds),
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        server_header=False,
    )
    return 0


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


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
