"""All SQL for usage counts: additive upserts (PostgreSQL and SQLite), retention deletes, tenant-filtered sums."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any, TypedDict, cast

from sqlalchemy import BigInteger, Table, and_, delete, func, select
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import ApiKey, UsageCount

USAGE_TABLE = cast(Table, UsageCount.__table__)
PRIMARY_KEY = ("day", "tenant_id", "api_key_id", "route", "status_class")


class UsageRow(TypedDict):
    day: date
    tenant_id: uuid.UUID
    api_key_id: uuid.UUID
    route: str
    status_class: int
    requests: int


class UsageGrouping(StrEnum):
    DAY = "day"
    KEY = "key"
    ROUTE = "route"


@dataclass(frozen=True, slots=True)
class GroupCount:
    """Requests of one group (a day, a key or a route) with one status class."""

    group: date | uuid.UUID | str
    status_class: int
    requests: int
    key_name: str | None = None
    key_prefix: str | None = None


async def add_counts(session: AsyncSession, rows: Sequence[UsageRow]) -> None:
    """Add `rows` to the stored counts: `requests = requests + excluded.requests` on an existing primary key.

    Adding (not overwriting) is what makes concurrent flushes from several instances exact. The caller passes
    each primary key once (a statement may not update one row twice) and in a fixed order (no deadlocks).
    """
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        pg = postgresql_insert(USAGE_TABLE)
        statement: Any = pg.on_conflict_do_update(
            index_elements=PRIMARY_KEY, set_={"requests": USAGE_TABLE.c.requests + pg.excluded.requests}
        )
    elif dialect == "sqlite":
        lite = sqlite_insert(USAGE_TABLE)
        statement = lite.on_conflict_do_update(
            index_elements=PRIMARY_KEY, set_={"requests": USAGE_TABLE.c.requests + lite.excluded.requests}
        )
    else:  # create_engine accepts only these two drivers
        raise NotImplementedError(f"usage upserts are not implemented for {dialect}")
    await session.execute(statement, [dict(row) for row in rows])


async def delete_before(session: AsyncSession, day: date) -> int:
    """Retention: drop every tenant's counts of days before `day` (the primary key leads with `day`)."""
    result = await session.execute(delete(UsageCount).where(UsageCount.day < day))
    return int(getattr(result, "rowcount", 0) or 0)


async def count_by(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    *,
    start: date,
    end: date,
    group: UsageGrouping,
    key_id: uuid.UUID | None,
) -> list[GroupCount]:
    """One tenant's requests per group and status class over the days `start`..`end` (inclusive)."""
    requests = sql_cast(func.sum(UsageCount.requests), BigInteger)  # Postgres sums bigint as numeric
    conditions = [UsageCount.tenant_id == tenant_id, UsageCount.day >= start, UsageCount.day <= end]
    if key_id is not None:
        conditions.append(UsageCount.api_key_id == key_id)
    if group is UsageGrouping.KEY:
        # Summed per key first, then joined to the keys for their names: joining every counted row before grouping
        # cost ~2.5x as much over a year of a busy tenant (bench/bench_console.py).
        per_key = (
            select(UsageCount.api_key_id, UsageCount.status_class, requests.label("requests"))
            .where(*conditions)
            .group_by(UsageCount.api_key_id, UsageCount.status_class)
            .subquery()
        )
        key_query = select(
            per_key.c.api_key_id, ApiKey.name, ApiKey.prefix, per_key.c.status_class, per_key.c.requests
        ).outerjoin(ApiKey, and_(ApiKey.id == per_key.c.api_key_id, ApiKey.tenant_id == tenant_id))
        return [
            GroupCount(key, status_class, int(count), name, prefix)
            for key, name, prefix, status_class, count in await session.execute(key_query)
        ]
    column = UsageCount.day if group is UsageGrouping.DAY else UsageCount.route
    query = (
        select(column, UsageCount.status_class, requests).where(*conditions).group_by(column, UsageCount.status_class)
    )
    return [
        GroupCount(cast("date | str", value), status_class, int(count))
        for value, status_class, count in await session.execute(query)
    ]
