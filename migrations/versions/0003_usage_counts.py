"""Usage counts: requests per UTC day, tenant, key, route template and status class.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

Rows are only ever added to (`INSERT … ON CONFLICT … DO UPDATE SET requests = requests + excluded.requests`) by
each instance's periodic flush, and deleted by day once older than DELTAFLOW_USAGE_RETENTION_DAYS.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "usage_counts",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("api_key_id", sa.Uuid(), nullable=False),
        sa.Column("route", sa.String(length=200), nullable=False),
        sa.Column("status_class", sa.SmallInteger(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("status_class BETWEEN 2 AND 5", name=op.f("ck_usage_counts_status_class")),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_usage_counts_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint(
            "day", "tenant_id", "api_key_id", "route", "status_class", name=op.f("pk_usage_counts")
        ),
    )
    with op.batch_alter_table("usage_counts", schema=None) as batch_op:
        batch_op.create_index("ix_usage_counts_tenant_id_day", ["tenant_id", "day"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("usage_counts", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_counts_tenant_id_day")

    op.drop_table("usage_counts")
