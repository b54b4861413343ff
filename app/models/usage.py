from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy import BigInteger, CheckConstraint, Date, ForeignKey, Index, SmallInteger, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.models import Base


class UsageCount(Base):
    """Requests per (UTC day, tenant, key, route template, status class), added to by every instance's flushes.

    `status_class` is the status code's hundreds digit (2 = 2xx … 5 = 5xx). `api_key_id` has no foreign key on
    purpose: keys are never deleted (revoked keys keep their row), the tenant's cascade already removes a deleted
    tenant's counts, and the flush's upserts stay free of a second key lookup per row.
    """

    __tablename__ = "usage_counts"
    __table_args__ = (
        # The primary key leads with `day` (retention deletes by day); reports read one tenant's range of days.
        Index("ix_usage_counts_tenant_id_day", "tenant_id", "day"),
        CheckConstraint("status_class BETWEEN 2 AND 5", name="status_class"),
    )

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    api_key_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    route: Mapped[str] = mapped_column(String(200), primary_key=True)
    status_class: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger)
