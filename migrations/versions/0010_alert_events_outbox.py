"""Alert events and the Standard Webhooks outbox: `alert_events` (one row per rule firing at a bar close, unique per
rule and bar), deliveries carrying their stable `message_id` (the `webhook-id`), an optional own `url` and the
alert event they deliver, and delivery health on the tenant's endpoint and on rules' own destinations.

Existing deliveries get a message id derived from their own id, so a retry of a delivery queued before the upgrade
carries an id as stable as a new one's.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alert_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("rule_id", sa.Uuid(), nullable=True),
        sa.Column("rule_name", sa.String(length=200), nullable=False),
        sa.Column("venue", sa.String(length=32), nullable=False),
        sa.Column("symbol", sa.String(length=64), nullable=False),
        sa.Column("timeframe", sa.String(length=8), nullable=False),
        sa.Column("bar_ms", sa.BigInteger(), nullable=False),
        sa.Column("sentence", sa.Text(), nullable=False),
        sa.Column("snapshot", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["rule_id"], ["alert_rules.id"], name=op.f("fk_alert_events_rule_id_alert_rules"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_alert_events_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_events")),
        sa.UniqueConstraint("rule_id", "bar_ms", name="uq_alert_events_rule_id_bar_ms"),
    )
    op.create_index(
        "ix_alert_events_tenant_id_created_at_id", "alert_events", ["tenant_id", "created_at", "id"], unique=False
    )
    op.create_index(
        "ix_alert_events_tenant_id_rule_id_bar_ms", "alert_events", ["tenant_id", "rule_id", "bar_ms"], unique=False
    )

    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("message_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("url", sa.String(length=2048), nullable=True))
        batch_op.add_column(sa.Column("alert_event_id", sa.Uuid(), nullable=True))
    own_id = "replace(id::text, '-', '')" if op.get_context().dialect.name == "postgresql" else "replace(id, '-', '')"
    op.execute(f"UPDATE webhook_deliveries SET message_id = 'msg_' || {own_id}")  # noqa: S608 - no input
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.alter_column("message_id", existing_type=sa.String(length=64), nullable=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_webhook_deliveries_alert_event_id_alert_events"),
            "alert_events",
            ["alert_event_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_index("ix_webhook_deliveries_tenant_id_created_at", ["tenant_id", "created_at"], unique=False)
        batch_op.create_index("ix_webhook_deliveries_alert_event_id", ["alert_event_id"], unique=False)

    with op.batch_alter_table("webhook_endpoints", schema=None) as batch_op:
        batch_op.add_column(sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("alert_rules", schema=None) as batch_op:
        batch_op.add_column(sa.Column("destination_failing_since", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("destination_disabled_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alert_rules", schema=None) as batch_op:
        batch_op.drop_column("destination_disabled_at")
        batch_op.drop_column("destination_failing_since")
    with op.batch_alter_table("webhook_endpoints", schema=None) as batch_op:
        batch_op.drop_column("disabled_at")
        batch_op.drop_column("failing_since")
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_deliveries_alert_event_id")
        batch_op.drop_index("ix_webhook_deliveries_tenant_id_created_at")
        batch_op.drop_constraint("fk_webhook_deliveries_alert_event_id_alert_events", type_="foreignkey")
        batch_op.drop_column("alert_event_id")
        batch_op.drop_column("url")
        batch_op.drop_column("message_id")
    op.drop_index("ix_alert_events_tenant_id_rule_id_bar_ms", table_name="alert_events")
    op.drop_index("ix_alert_events_tenant_id_created_at_id", table_name="alert_events")
    op.drop_table("alert_events")
