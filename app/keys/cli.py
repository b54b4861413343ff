"""`deltaflow keys …`: bootstrap the first operator key, and operator key management at a shell.

The secret of a created or rotated key is printed exactly once, on stdout; everything else goes to stderr so
`KEY=$(deltaflow keys create …)` captures only the key.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from app.auth.scopes import ROLE_SCOPES, Role, Scope
from app.auth.verifier import KeyCacheInvalidator, KeyVerifier
from app.config import Settings
from app.core.db import create_engine, create_session_factory, run_post_commit
from app.core.errors import AppError
from app.core.redis import create_redis
from app.keys.admin import bootstrap, ensure_tenant, issue_key
from app.keys.repository import KeyStatus
from app.keys.schemas import ApiKeyRotate
from app.keys.service import Actor, KeyService

CONSOLE_KEY_ID = uuid.UUID(int=0)  # the operator at the console, in audit events and escalation checks


def add_keys_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("keys", help="API keys: bootstrap, create, list, rotate, revoke")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    boot = actions.add_parser("bootstrap", help="create the first tenant and an operator key (printed once)")
    boot.add_argument("--tenant", default="default", help="tenant name (default: default)")
    boot.add_argument("--force", action="store_true", help="issue another operator key even if one exists")
    boot.add_argument("--if-missing", action="store_true", help="exit 0 quietly when an operator key exists")
    create = actions.add_parser("create", help="create a key (printed once)")
    create.add_argument("--tenant", required=True, help="tenant name (created if missing)")
    create.add_argument("--name", help="a label for the key (default: <role>-key)")
    create.add_argument("--role", choices=[r.value for r in Role], default=Role.READER.value)
    create.add_argument("--scope", action="append", choices=[s.value for s in Scope], help="repeat; default: all")
    listing = actions.add_parser("list", help="list a tenant's keys")
    listing.add_argument("--tenant", required=True)
    listing.add_argument("--status", choices=[s.value for s in KeyStatus])
    rotate = actions.add_parser("rotate", help="rotate a key (the successor is printed once)")
    rotate.add_argument("key_id", type=uuid.UUID)
    rotate.add_argument("--grace-seconds", type=int)
    revoke = actions.add_parser("revoke", help="revoke a key now")
    revoke.add_argument("key_id", type=uuid.UUID)


def run_keys_command(settings: Settings, args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(settings, args))
    except AppError as error:
        if args.keys_command == "bootstrap" and args.if_missing and error.status == 409:
            print("deltaflow: an operator key exists already (not printing it again)", file=sys.stderr)
            return 0
        print(f"deltaflow keys {args.keys_command}: {error.detail}", file=sys.stderr)
        return 1


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    engine = create_engine(settings)
    sessions = create_session_factory(engine)
    redis = create_redis(settings)
    # Revoke and rotate from the console must reach running servers' caches too.
    verifier = KeyVerifier(
        pepper=settings.secret_key.get_secret_value(),
        redis=redis,
        session_factory=sessions,
        cache_ttl_seconds=settings.auth_cache_ttl_seconds,
        local_cache_size=0,
        redis_timeout_seconds=settings.auth_redis_timeout_seconds,
    )
    try:
        async with sessions() as session:
            if args.keys_command == "bootstrap":
                key, secret = await bootstrap(session, settings, tenant_name=args.tenant, force=args.force)
                await session.commit()
                print(
                    f"operator key {key.id} for tenant {args.tenant!r} (tenant id {key.tenant_id}); "
                    "store it now, it is not shown again:",
                    file=sys.stderr,
                )
                print(secret)
                return 0
            if args.keys_command == "create":
                tenant = await ensure_tenant(session, args.tenant)
                scopes = None if not args.scope else frozenset(Scope(s) for s in args.scope)
                key, secret = await issue_key(
                    session,
                    settings,
                    tenant_id=tenant.id,
                    name=args.name or f"{args.role}-key",
                    role=Role(args.role),
                    scopes=scopes,
                )
                await session.commit()
                await KeyCacheInvalidator(redis, verifier).invalidate(key.secret_hash)
                print(f"key {key.id} ({key.role}) for tenant {args.tenant!r}:", file=sys.stderr)
                print(secret)
                return 0
            service = KeyService(session, settings, KeyCacheInvalidator(redis, verifier))
            actor = await _console_actor(session, args)
            if args.keys_command == "list":
                status = KeyStatus(args.status) if args.status else None
                keys, _ = await service.list_keys(actor, status=status, cursor=None, limit=1000, tenant_id=None)
                for item in keys:
                    read = service.to_read(item)
                    print(
                        f"{read.id}  {read.prefix}…{read.last_four}  {read.role:<8} {read.status:<8} "
                        f"expires {read.expires_at:%Y-%m-%d}  {read.name}"
                    )
                return 0
            if args.keys_command == "rotate":
                successor, secret = await service.rotate(
                    actor, args.key_id, ApiKeyRotate(grace_seconds=args.grace_seconds), None
                )
                await run_post_commit(session)
                print(f"successor {successor.id} of {args.key_id}:", file=sys.stderr)
                print(secret)
                return 0
            revoked = await service.revoke(actor, args.key_id, None)
            await run_post_commit(session)
            print(f"revoked {revoked.id} at {revoked.revoked_at}", file=sys.stderr)
            return 0
    finally:
        await redis.aclose()
        await engine.dispose()


async def _console_actor(session: AsyncSession, args: argparse.Namespace) -> Actor:
    """The console acts as an operator; `list` is scoped to the named tenant."""
    tenant_id = uuid.UUID(int=0)
    if getattr(args, "tenant", None):
        tenant_id = (await ensure_tenant(session, args.tenant)).id
    principal = Principal(
        key_id=CONSOLE_KEY_ID,
        tenant_id=tenant_id,
        role=Role.OPERATOR,
        scopes=ROLE_SCOPES[Role.OPERATOR],
        expires_at=datetime.max.replace(tzinfo=UTC),
        name="console",
    )
    return Actor(principal=principal, request_id=None)
