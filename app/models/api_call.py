from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Float, Index, SmallInteger, String, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models import Base
from app.models.types import UtcDateTime

CALL_ROUTE_MAX_LENGTH = 200
# Calls at least this slow are also indexed in page order (migration 0009): "slower than 1 s" reads only those.
SLOW_CALL_MS = 1000
CALL_USER_AGENT_MAX_LENGTH = 200


class ApiCall(Base):
    """One authenticated `/v1` request, refused ones included: the call log tenants search to debug integrations.

    On PostgreSQL the table is partitioned by day on `at` (migration 0006 creates it with raw DDL; partitions are
    created ahead and dropped at the retention by `app.usage.calls.maintenance`); the primary key includes `at`, as
    a partitioned table's must. No foreign keys: rows are written by COPY at thousands a second, and old ones leave
    by dropping whole partitions. On SQLite it is a plain table with the same columns and indexes.
    """

    __tablename__ = "api_calls"
    __table_args__ = (
        # One per search filter of GET /v1/usage/calls, each led by the tenant (migration 0009 says why).
        Index("ix_api_calls_tenant_id_at_id", "tenant_id", "at", "id"),
        Index("ix_api_calls_tenant_id_api_key_id_at_id", "tenant_id", "api_key_id", "at", "id"),
        Index("ix_api_calls_tenant_id_status_at_id", "tenant_id", "status", "at", "id"),
        Index("ix_api_calls_tenant_id_route_at_id", "tenant_id", "route", "at", "id"),
        Index("ix_api_calls_tenant_id_latency_ms", "tenant_id", "latency_ms"),
        Index(
            "ix_api_calls_tenant_id_at_id_slow",
            "tenant_id",
            "at",
            "id",
            postgresql_where=text(f"latency_ms >= {SLOW_CALL_MS}"),
            sqlite_where=text(f"latency_ms >= {SLOW_CALL_MS}"),
        ),
        Index("ix_api_calls_tenant_id_request_id", "tenant_id", "request_id"),
        Index("ix_api_calls_at_brin", "at", postgresql_using="brin"),
    )

    at: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    api_key_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    method: Mapped[str] = mapped_column(String(8))
    route: Mapped[str] = mapped_column(String(CALL_ROUTE_MAX_LENGTH))
    status: Mapped[int] = mapped_column(SmallInteger)
    latency_ms: Mapped[float] = mapped_column(Float)
    response_bytes: Mapped[int] = mapped_column(BigInteger)
    client_address: Mapped[str | None] = mapped_column(String(45))
    request_id: Mapped[str] = mapped_column(String(128))
    user_agent: Mapped[str | None] = mapped_column(String(CALL_USER_AGENT_MAX_LENGTH))
    cache: Mapped[str | None] = mapped_column(String(4))  # "hit" | "miss" where the route caches, else null
