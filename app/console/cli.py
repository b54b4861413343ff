"""`deltaflow users …`: console accounts at a shell (create, list, disable, reset-password, bootstrap).

Passwords come from stdin with `--password-stdin` (one line), are asked for twice at an interactive terminal, or —
for `bootstrap` and `reset-password --generate` — are generated and printed exactly once on stdout. Disabling a
user or resetting a password ends the user's sessions in the configured Redis (with the embedded `memory://`
Redis that is this process's own, so a running `make run` server keeps them until they expire: use a real Redis
for shared sessions).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import secrets
import sys

from app.config import Settings
from app.console import repository
from app.console.passwords import PasswordHasher
from app.console.service import ConsoleRole, UserService, normalise_email
from app.console.sessions import SessionStore
from app.core.db import create_engine, create_session_factory
from app.core.errors import AppError
from app.core.redis import create_redis
from app.keys.admin import ensure_tenant
from app.tenants.repository import get_tenant_by_name

BOOTSTRAP_EMAIL = "operator@deltaflow.local"


def add_users_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    users = commands.add_parser("users", help="console users: create, list, disable, reset-password, bootstrap")
    actions = users.add_subparsers(dest="users_command", required=True)
    create = actions.add_parser("create", help="create a console user")
    create.add_argument("--tenant", required=True, help="tenant name (created if missing)")
    create.add_argument("--email", required=True)
    create.add_argument("--role", choices=[r.value for r in ConsoleRole], default=ConsoleRole.VIEWER.value)
    create.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    listing = actions.add_parser("list", help="list console users")
    listing.add_argument("--tenant", help="only this tenant's users")
    disable = actions.add_parser("disable", help="disable a user and end their sessions")
    disable.add_argument("--email", required=True)
    reset = actions.add_parser("reset-password", help="set a new password and end the user's sessions")
    reset.add_argument("--email", required=True)
    source = reset.add_mutually_exclusive_group()
    source.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    source.add_argument("--generate", action="store_true", help="generate one and print it once")
    boot = actions.add_parser("bootstrap", help="the first operator login (password generated, printed once)")
    boot.add_argument("--tenant", default="default")
    boot.add_argument("--email", default=BOOTSTRAP_EMAIL)
    boot.add_argument("--if-missing", action="store_true", help="exit 0 quietly when an operator login exists")


def run_users_command(settings: Settings, args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(settings, args))
    except AppError as error:
        print(f"deltaflow users {args.users_command}: {error.detail}", file=sys.stderr)
        return 1
    except (EOFError, KeyboardInterrupt):
        print(f"deltaflow users {args.users_command}: no password given", file=sys.stderr)
        return 1


def _read_password(from_stdin: bool) -> str:
    if from_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise EOFError
    return first


def generated_password() -> str:
    return secrets.token_urlsafe(18)  # 24 characters, 144 bits


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    engine = create_engine(settings)
    redis = create_redis(settings)
    sessions = SessionStore(redis, settings)
    try:
        async with create_session_factory(engine)() as session:
            users = UserService(session, settings, PasswordHasher(settings))
            command = args.users_command
            if command == "list":
                tenant = await get_tenant_by_name(session, args.tenant) if args.tenant else None
                for user, owner in await repository.list_users(session, tenant.id if tenant else None):
                    state = "disabled" if user.disabled_at else "active"
                    last = f"{user.last_login_at:%Y-%m-%d %H:%M}" if user.last_login_at else "never"
                    print(f"{user.id}  {user.email:<32} {user.role:<8} {state:<8} last login {last}  {owner.name}")
                return 0
            if command in {"create", "bootstrap"}:
                if command == "bootstrap" and await repository.operator_user_exists(session):
                    if args.if_missing:
                        return 0
                    print("deltaflow users bootstrap: an operator login exists already", file=sys.stderr)
                    return 1
                tenant = await ensure_tenant(session, args.tenant)
                role = ConsoleRole.OPERATOR if command == "bootstrap" else ConsoleRole(args.role)
                password = generated_password() if command == "bootstrap" else _read_password(args.password_stdin)
                user = await users.create(tenant, args.email, password, role, via="cli")
                await session.commit()
                print(f"console user {user.email} ({user.role}) in tenant {tenant.name!r}", file=sys.stderr)
                if command == "bootstrap":
                    print(f"console login: {user.email}  password (shown once): {password}")
                return 0
            account = await repository.get_user_by_email(session, normalise_email(args.email))
            if account is None:
                print(f"deltaflow users {command}: no user {args.email}", file=sys.stderr)
                return 1
            if command == "disable":
                await users.disable(account, None, via="cli")
            else:
                password = generated_password() if args.generate else _read_password(args.password_stdin)
                await users.set_password(account, password, None, via="cli")
                if args.generate:
                    print(password)
            await session.commit()
            ended = await sessions.destroy_all_for_user(account.id)
            print(f"{command}: {account.email}; {ended} session(s) ended", file=sys.stderr)
            return 0
    finally:
        await redis.aclose()
        await engine.dispose()
