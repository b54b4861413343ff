"""A tenant's own rate limit (both columns null: the service default applies).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28

The check constraint (both numbers or neither, both positive) is created on PostgreSQL only: on SQLite adding a
constraint means recreating `tenants`, and with foreign keys enforced dropping the old table would cascade to every
key. SQLite relies on the application, which validates both numbers before writing them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RATE_LIMIT_CHECK = (
    "(rate_limit_per_second IS NULL) = (rate_limit_burst IS NULL)"
    " AND (rate_limit_per_second IS NULL OR (rate_limit_per_second > 0 AND rate_limit_burst >= 1))"
)


def upgrade() -> None:
    op.add_column("tenants", sa.Column("rate_limit_per_second", sa.Float(), nullable=True))
    op.add_column("tenants", sa.Column("rate_limit_burst", sa.Integer(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.create_check_constraint(op.f("ck_tenants_rate_limit"), "tenants", RATE_LIMIT_CHECK)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(op.f("ck_tenants_rate_limit"), "tenants", type_="check")
    # Plain ALTER TABLE … DROP COLUMN (SQLite 3.35+), not a batch: a batch recreates `tenants` on SQLite, and with
    # foreign keys enforced dropping the old table deletes every key (measured: it did).
    op.drop_column("tenants", "rate_limit_burst")
    op.drop_column("tenants", "rate_limit_per_second")
