from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.models import Base
from app.models.types import UtcDateTime, utcnow

# RFC 5321's limit on a forward path: the longest address mail can be delivered to.
EMAIL_MAX_LENGTH = 254


class User(Base):
    """A person who signs in to the console. Acts with exactly the scopes an API key of the same role holds
    (`viewer` = a reader key). Emails are stored lowercased, so the unique constraint is case-insensitive on both
    backends."""

    __tablename__ = "users"
    __table_args__ = (Index("ix_users_tenant_id", "tenant_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(EMAIL_MAX_LENGTH), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    password_changed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    disabled_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    # Failed-login bookkeeping: failures counted in a window from the first one; `locked_until` after too many.
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    failed_window_started_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    lockouts: Mapped[int] = mapped_column(Integer, default=0)  # consecutive: each lockout lasts twice the last
