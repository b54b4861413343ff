from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Float, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.models import Base
from app.models.types import UtcDateTime, utcnow


class Tenant(Base):
    __tablename__ = "tenants"
    __table_args__ = (
        # A tenant's own rate limit is both numbers or neither (neither: the service default applies). Created on
        # PostgreSQL only (migration 0004 says why).
        CheckConstraint(
            "(rate_limit_per_second IS NULL) = (rate_limit_burst IS NULL)"
            " AND (rate_limit_per_second IS NULL OR (rate_limit_per_second > 0 AND rate_limit_burst >= 1))",
            name="rate_limit",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    rate_limit_per_second: Mapped[float | None] = mapped_column(Float, default=None)
    rate_limit_burst: Mapped[int | None] = mapped_column(Integer, default=None)
    # Requests per calendar month (UTC) across all the tenant's keys; null: no quota.
    monthly_quota: Mapped[int | None] = mapped_column(BigInteger, default=None)
