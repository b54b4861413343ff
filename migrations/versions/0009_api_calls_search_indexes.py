"""Call-log indexes for every search filter, measured on 10 million calls (bench/bench_calls_scale.py).

- (tenant, at, id) replaces (tenant, at): it matches the pages' ORDER BY at DESC, id DESC, so a page reads its
  rows in order and stops at the limit, keyset cursor included;
- (tenant, status, at, id), (tenant, route, at, id) and (tenant, key, at, id): a rare status, route or key (a
  tenant's few 500s among a million 200s) is found directly instead of by walking the tenant's calls newest first,
  and in the pages' order, so each partition's scan stops at the limit (with (tenant, key, at) alone a key's
  calls were all read and sorted: p95 1.6 s for a small tenant's key at 10M calls);
- (tenant, latency_ms): "calls slower than X" reads only the slow ones when they are few; and (tenant, at, id) of
  the calls of at least 1 s only (partial): "slower than 1 s" or more reads them in page order and stops at the
  limit (the busiest tenant's 1 500 slow calls fetched and sorted took p95 ~110 ms at 10M calls; this, 2 ms);
- (tenant, request_id) replaces (request_id): every lookup is tenant-scoped.

On PostgreSQL an index on the partitioned parent is created on every partition. The table is new in this release
(0006); on a table already holding months of calls, build each partition's index CONCURRENTLY and attach them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW = {
    "ix_api_calls_tenant_id_at_id": ["tenant_id", "at", "id"],
    "ix_api_calls_tenant_id_api_key_id_at_id": ["tenant_id", "api_key_id", "at", "id"],
    "ix_api_calls_tenant_id_status_at_id": ["tenant_id", "status", "at", "id"],
    "ix_api_calls_tenant_id_route_at_id": ["tenant_id", "route", "at", "id"],
    "ix_api_calls_tenant_id_latency_ms": ["tenant_id", "latency_ms"],
    "ix_api_calls_tenant_id_request_id": ["tenant_id", "request_id"],
}
OLD = {
    "ix_api_calls_tenant_id_at": ["tenant_id", "at"],
    "ix_api_calls_tenant_id_api_key_id_at": ["tenant_id", "api_key_id", "at"],
    "ix_api_calls_request_id": ["request_id"],
}


SLOW = "ix_api_calls_tenant_id_at_id_slow"
SLOW_WHERE = "latency_ms >= 1000"  # app.models.api_call.SLOW_CALL_MS


def upgrade() -> None:
    for name, columns in NEW.items():
        op.create_index(name, "api_calls", columns, unique=False)
    where = sa.text(SLOW_WHERE)
    op.create_index(SLOW, "api_calls", ["tenant_id", "at", "id"], postgresql_where=where, sqlite_where=where)
    for name in OLD:
        op.drop_index(name, table_name="api_calls")


def downgrade() -> None:
    for name, columns in OLD.items():
        op.create_index(name, "api_calls", columns, unique=False)
    op.drop_index(SLOW, table_name="api_calls")
    for name in NEW:
        op.drop_index(name, table_name="api_calls")
