"""Errors the database raises, mapped to problems once, here, so no route can leak one as a 500.

A service checks what it can before writing (a friendly `tenant-name-taken` before the INSERT), but a check and
a write are two statements: a concurrent request can slip in between, and some failures only surface at COMMIT
(deferred constraints). Whatever the database refuses reaches the client as a problem:

- an integrity violation → 409: the problem a domain registered for that constraint (by name on Postgres, by
  `table.column` on SQLite, whose messages carry no constraint name), else the generic `conflict`;
- a value the column cannot hold (too long, out of range) → 422 `value-rejected`: input schemas bound every
  field, so this is a backstop that names no column;
- a lost or refused connection, a statement cancelled by `DELTAFLOW_DB_STATEMENT_TIMEOUT_SECONDS`, a lock not
  granted, a deadlock → 503 with `Retry-After` (nothing was committed: the transaction rolled back).

None of these messages include the database's own text, which may quote other tenants' values.
"""

from __future__ import annotations

import re

from fastapi import FastAPI, Request
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from starlette.responses import Response

from app.core.errors import PROBLEM_TYPES, AppError, ServiceUnavailable, app_error_response, problem_response
from app.core.logging import get_logger

log = get_logger(__name__)


class Conflict(AppError):
    slug = "conflict"
    title = "Conflicting change"
    status = 409
    description = (
        "The change conflicts with the stored state (a value that must be unique is taken, or a concurrent request "
        "changed the same resource first). Nothing was stored; re-read the resource and retry if still wanted."
    )


class ValueRejected(AppError):
    slug = "value-rejected"
    title = "Value rejected by the database"
    status = 422
    description = "A value does not fit the column that stores it. Nothing was stored."


_CONSTRAINT_PROBLEMS: dict[str, type[AppError]] = {}
_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: (?P<columns>[\w., ]+)")


def register_constraint_problem(error: type[AppError], *names: str) -> None:
    """Map a constraint to a domain problem: its Postgres name (`uq_tenants_name`) and/or the `table.column`
    list SQLite reports for it (`tenants.name`; several columns comma-separated as SQLite prints them)."""
    for name in names:
        _CONSTRAINT_PROBLEMS[name] = error


def constraint_of(error: IntegrityError) -> str | None:
    """The violated constraint's name (Postgres) or its `table.column` list (SQLite), when the driver says."""
    original = error.orig
    for candidate in (original, getattr(original, "__cause__", None)):
        name = getattr(candidate, "constraint_name", None)
        if isinstance(name, str) and name:
            return name
    match = _SQLITE_UNIQUE.search(str(original))
    return match.group("columns").strip() if match else None


def problem_for_integrity_error(error: IntegrityError) -> AppError:
    constraint = constraint_of(error)
    mapped = _CONSTRAINT_PROBLEMS.get(constraint or "")
    if mapped is not None:
        return mapped()
    return Conflict("The change conflicts with the stored state; nothing was stored.")


async def _integrity_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, IntegrityError)  # noqa: S101 - registered for IntegrityError only
    log.info("db.integrity_error", path=request.url.path, constraint=constraint_of(exc))
    return app_error_response(request.scope, problem_for_integrity_error(exc))


async def _data_error_handler(request: Request, exc: Exception) -> Response:
    log.warning("db.data_error", path=request.url.path, error=type(exc.__cause__ or exc).__name__)
    return app_error_response(request.scope, ValueRejected("A value does not fit its column; nothing was stored."))


async def _unavailable_handler(request: Request, exc: Exception) -> Response:
    log.warning("db.unavailable", path=request.url.path, error=type(exc).__name__)
    return problem_response(
        request.scope,
        problem=PROBLEM_TYPES[ServiceUnavailable.slug],
        detail="The database is unreachable or busy; nothing was stored. Retry shortly.",
        headers={"retry-after": "2"},
    )


def install_db_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(IntegrityError, _integrity_error_handler)
    app.add_exception_handler(DataError, _data_error_handler)
    app.add_exception_handler(OperationalError, _unavailable_handler)
    # Connection-level failures asyncpg raises outside the DBAPI's error classes (InterfaceError, a closed
    # connection) arrive as a bare DBAPIError with `connection_invalidated`.
    app.add_exception_handler(DBAPIError, _dbapi_error_handler)


# SQLSTATEs that say "not now" rather than "wrong": a statement cancelled by `statement_timeout` (or by an
# operator), a lock not granted, a serialization failure or a deadlock victim. The transaction was rolled back.
_RETRYABLE_SQLSTATES = frozenset({"57014", "55P03", "40001", "40P01"})


def sqlstate_of(error: DBAPIError) -> str | None:
    for candidate in (error.orig, getattr(error.orig, "__cause__", None)):
        state = getattr(candidate, "sqlstate", None)
        if isinstance(state, str):
            return state
    return None


async def _dbapi_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DBAPIError)  # noqa: S101 - registered for DBAPIError only
    # No statement: the server refused a new connection (starting up or shutting down, the database closed to
    # connections, too many clients): asyncpg raises that as a server error, not as a lost connection.
    if exc.connection_invalidated or exc.statement is None or sqlstate_of(exc) in _RETRYABLE_SQLSTATES:
        return await _unavailable_handler(request, exc)
    raise exc  # a genuine server fault: the generic 500 handler logs it with the request id
