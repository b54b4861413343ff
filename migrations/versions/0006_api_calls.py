"""The call log: every authenticated /v1 request, partitioned by day on PostgreSQL.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

PostgreSQL gets a declaratively partitioned table (RANGE on `at`) with a DEFAULT partition, so a row never fails to
land even before its day's partition exists; daily partitions (`api_calls_YYYYMMDD`) are created ahead and dropped
at the retention by `app.usage.calls.maintenance`, which runs at start-up and hourly. Indexes are declared on the
parent and so exist on every partition: BRIN on `at` (tiny, for time ranges), btree on (tenant, at) and
(tenant, key, at) for the tenant's searches, and on `request_id`. SQLite gets a plain table with the same columns.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POSTGRES_TABLE = """
CREATE TABLE api_calls (
    at timestamp with time zone NOT NULL,
    id uuid NOT NULL,
    tenant_id uuid NOT NULL,
    api_key_id uuid NOT NULL,
    method varchar(8) NOT NULL,
    route varchar(200) NOT NULL,
    status smallint NOT NULL,
    latency_ms double precision NOT NULL,
    response_bytes bigint NOT NULL,
    client_address varchar(45),
    request_id varchar(128) NOT NULL,
    user_agent varchar(200),
    cache varchar(4),
    CONSTRAINT pk_api_calls PRIMARY KEY (at, id)
) PARTITION BY RANGE (at)
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRES_TABLE)
        op.execute("CREATE TABLE api_calls_default PARTITION OF api_calls DEFAULT")
        op.execute("CREATE INDEX ix_api_calls_at_brin ON api_calls USING brin (at)")
    else:
        op.create_table(
            "api_calls",
            sa.Column("at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("id", sa.Uuid(), nullable=False),
            sa.Column("tenant_id", sa.Uuid(), nullable=False),
            sa.Column("api_key_id", sa.Uuid(), nullable=False),
            sa.Column("method", sa.String(length=8), nullable=False),
            sa.Column("route", sa.String(length=200), nullable=False),
            sa.Column("status", sa.SmallInteger(), nullable=False),
            sa.Column("latency_ms", sa.Float(), nullable=False),
            sa.Column("response_bytes", sa.BigInteger(), nullable=False),
            sa.Column("client_address", sa.String(length=45), nullable=True),
            sa.Column("request_id", sa.String(length=128), nullable=False),
            sa.Column("user_agent", sa.String(length=200), nullable=True),
            sa.Column("cache", sa.String(length=4), nullable=True),
            sa.PrimaryKeyConstraint("at", "id", name=op.f("pk_api_calls")),
        )
        op.create_index("ix_api_calls_at_brin", "api_calls", ["at"], unique=False)
    op.create_index("ix_api_calls_tenant_id_at", "api_calls", ["tenant_id", "at"], unique=False)
    op.create_index(
        "ix_api_calls_tenant_id_api_key_id_at", "api_calls", ["tenant_id", "api_key_id", "at"], unique=False
    )
    op.create_index("ix_api_calls_request_id", "api_calls", ["request_id"], unique=False)


def downgrade() -> None:
    op.drop_table("api_calls")  # on PostgreSQL this drops every partition with it
