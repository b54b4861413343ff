"""Baseline: an empty schema stamped with a revision, so readiness can compare it with the code's head.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Nothing to create yet: tenants, keys and audit arrive with their own revision."""


def downgrade() -> None:
    """Nothing to drop."""
