"""One cursor per market instead of `last_bar_ms` on every rule: a close writes the market's cursor once and only
the rules whose fire state moves, instead of every rule of the market (10 000 rows per close on a busy market).

Each market's cursor starts at the latest bar any of its rules was evaluated at (a market's closes are evaluated
in order, so that is the market's last close); the downgrade gives every rule of the market its market's cursor.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alert_market_cursors",
        sa.Column("venue", sa.String(length=32), nullable=False),
        sa.Column("symbol", sa.String(length=64), nullable=False),
        sa.Column("timeframe", sa.String(length=8), nullable=False),
        sa.Column("last_bar_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("venue", "symbol", "timeframe", name=op.f("pk_alert_market_cursors")),
    )
    op.execute(
        "INSERT INTO alert_market_cursors (venue, symbol, timeframe, last_bar_ms)"
        " SELECT venue, symbol, timeframe, max(last_bar_ms) FROM alert_rules WHERE last_bar_ms IS NOT NULL"
        " GROUP BY venue, symbol, timeframe"
    )
    # Plain ALTER TABLE … DROP COLUMN (SQLite 3.35+), not a batch: a batch recreates `alert_rules` on SQLite, and
    # with foreign keys enforced dropping the old table would null every event's `rule_id` (as 0004 found).
    op.drop_column("alert_rules", "last_bar_ms")


def downgrade() -> None:
    op.add_column("alert_rules", sa.Column("last_bar_ms", sa.BigInteger(), nullable=True))
    op.execute(
        "UPDATE alert_rules SET last_bar_ms = (SELECT c.last_bar_ms FROM alert_market_cursors c"
        " WHERE c.venue = alert_rules.venue AND c.symbol = alert_rules.symbol AND c.timeframe = alert_rules.timeframe)"
    )
    op.drop_table("alert_market_cursors")
