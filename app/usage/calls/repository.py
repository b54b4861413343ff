"""All SQL for the call log: batched inserts (COPY on PostgreSQL), tenant-scoped keyset pages, partitions."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import and_, delete, insert, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import ApiCall

CallRow = tuple[
    datetime, uuid.UUID, uuid.UUID, uuid.UUID, str, str, int, float, int, str | None, str, str | None, str | None
]
COLUMNS = (
    "at", "id", "tenant_id", "api_key_id", "method", "route", "status", "latency_ms", "response_bytes",
    "client_address", "request_id", "user_agent", "cache",
)  # fmt: skip
PARTITION_PREFIX = "api_calls_"


@dataclass(frozen=True, slots=True)
class CallFilter:
    tenant_id: uuid.UUID
    since: datetime | None = None
    until: datetime | None = None
    key_id: uuid.UUID | None = None
    route: str | None = None
    status: int | None = None
    min_latency_ms: float | None = None


async def insert_calls(session: AsyncSession, rows: Sequence[CallRow]) -> None:
    """One COPY on PostgreSQL (measured in bench: far faster than a multi-row INSERT), executemany elsewhere."""
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None  # noqa: S101 - an open connection has its driver connection
        await driver.copy_records_to_table("api_calls", records=rows, columns=COLUMNS)
        return
    await session.execute(insert(ApiCall), [dict(zip(COLUMNS, row, strict=True)) for row in rows])


def _conditions(where: CallFilter) -> list[object]:
    conditions: list[object] = [ApiCall.tenant_id == where.tenant_id]
    if where.since is not None:
        conditions.append(ApiCall.at >= where.since)
    if where.until is not None:
        conditions.append(ApiCall.at < where.until)
    if where.key_id is not None:
        conditions.append(ApiCall.api_key_id == where.key_id)
    if where.route is not None:
        conditions.append(ApiCall.route == where.route)
    if where.status is not None:
        conditions.append(ApiCall.status == where.status)
    if where.min_latency_ms is not None:
        conditions.append(ApiCall.latency_ms >= where.min_latency_ms)
    return conditions


async def page(
    session: AsyncSession, where: CallFilter, *, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> Sequence[ApiCall]:
    """Newest first, keyset-paginated on (at, id): stable while calls keep arriving."""
    query = select(ApiCall).where(*_conditions(where))  # type: ignore[arg-type]
    if after is not None:
        at, call_id = after
        # `at <= :at` first: a bound the (tenant, at, id) index can seek to; the OR alone would make the planner
        # walk the tenant's calls from the newest (measured: p95 ~1 s for a busy tenant at 10M calls).
        query = query.where(ApiCall.at <= at, or_(ApiCall.at < at, and_(ApiCall.at == at, ApiCall.id < call_id)))
    query = query.order_by(ApiCall.at.desc(), ApiCall.id.desc()).limit(limit)
    return (await session.execute(query)).scalars().all()


async def by_request_id(session: AsyncSession, tenant_id: uuid.UUID, request_id: str) -> Sequence[ApiCall]:
    """Every call of the tenant with this request id (a client may reuse its own ids), newest first."""
    query = (
        select(ApiCall)
        .where(ApiCall.tenant_id == tenant_id, ApiCall.request_id == request_id)
        .order_by(ApiCall.at.desc(), ApiCall.id.desc())
        .limit(100)
    )
    return (await session.execute(query)).scalars().all()


async def ensure_partitions(session: AsyncSession, first: date, days: int) -> list[str]:
    """Daily partitions for `first` and the `days` after it (PostgreSQL); returns those created."""
    created = []
    for offset in range(days + 1):
        day = first + timedelta(days=offset)
        name = f"{PARTITION_PREFIX}{day:%Y%m%d}"
        if not await session.scalar(text("SELECT to_regclass(:name) IS NOT NULL"), {"name": name}):
            await _create_partition(session, name, day)
            created.append(name)
    return created


async def _create_partition(session: AsyncSession, name: str, day: date) -> None:
    """CREATE … PARTITION OF; if calls of that day already sit in the default partition (they arrived before the
    partition existed), PostgreSQL would refuse it: then, in this one transaction, the default partition is
    detached, the day's partition created, its calls moved into it, and the default attached again."""
    low, high = day.isoformat(), (day + timedelta(days=1)).isoformat()
    bounds = f"FOR VALUES FROM ('{low}') TO ('{high}')"
    stranded = await session.scalar(
        text("SELECT EXISTS (SELECT 1 FROM api_calls_default WHERE at >= :low AND at < :high)"),
        {"low": day, "high": day + timedelta(days=1)},
    )
    if not stranded:
        await session.execute(text(f"CREATE TABLE {name} PARTITION OF api_calls {bounds}"))
        return
    await session.execute(text("ALTER TABLE api_calls DETACH PARTITION api_calls_default"))
    await session.execute(text(f"CREATE TABLE {name} PARTITION OF api_calls {bounds}"))
    window = f"at >= '{low}' AND at < '{high}'"
    await session.execute(text(f"INSERT INTO api_calls SELECT * FROM api_calls_default WHERE {window}"))  # noqa: S608
    await session.execute(text(f"DELETE FROM api_calls_default WHERE {window}"))  # noqa: S608
    await session.execute(text("ALTER TABLE api_calls ATTACH PARTITION api_calls_default DEFAULT"))


async def drop_partitions_before(session: AsyncSession, cutoff: date) -> list[str]:
    """Drop the daily partitions of days before `cutoff` (PostgreSQL); returns their names."""
    names = await session.scalars(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent "
            "WHERE p.relname = 'api_calls' AND c.relname ~ '^api_calls_[0-9]{8}$'"
        )
    )
    dropped = [name for name in names if name[len(PARTITION_PREFIX) :] < f"{cutoff:%Y%m%d}"]
    for name in dropped:
        await session.execute(text(f"DROP TABLE {name}"))
    return dropped


async def delete_before(session: AsyncSession, cutoff: datetime) -> None:
    """SQLite (no partitions): the same retention by deleting rows."""
    await session.execute(delete(ApiCall).where(ApiCall.at < cutoff))
