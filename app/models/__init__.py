"""Every SQLAlchemy table, one module each; alembic's env.py imports this package for autogenerate.

The naming convention gives every constraint a deterministic name, so migrations can drop or alter them on
Postgres and (through batch mode) on SQLite alike.
"""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# Imported after Base exists so every table registers on the metadata (alembic autogenerate sees them all).
from app.models.alert_event import AlertEvent  # noqa: E402
from app.models.alert_rule import AlertRule  # noqa: E402
from app.models.api_call import ApiCall  # noqa: E402
from app.models.api_key import ApiKey, KeyExpiryNotice  # noqa: E402
from app.models.audit_event import AuditEvent  # noqa: E402
from app.models.tenant import Tenant  # noqa: E402
from app.models.usage import UsageCount  # noqa: E402
from app.models.user import User  # noqa: E402
from app.models.webhook import WebhookDelivery, WebhookEndpoint  # noqa: E402

__all__ = [
    "NAMING_CONVENTION",
    "AlertEvent",
    "AlertRule",
    "ApiCall",
    "ApiKey",
    "AuditEvent",
    "Base",
    "KeyExpiryNotice",
    "Tenant",
    "UsageCount",
    "User",
    "WebhookDelivery",
    "WebhookEndpoint",
]
