from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200)] = Field(examples=["acme-quant"])


class TenantRead(BaseModel):
    id: uuid.UUID
    name: str
    created_at: datetime


class WebhookUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: AnyHttpUrl = Field(examples=["https://hooks.example.com/deltaflow"])
    rotate_secret: bool = Field(default=False, description="Issue a new signing secret (the old one stops).")


class WebhookRead(BaseModel):
    url: str
    signing_secret: str = Field(
        description="Verify `Deltaflow-Signature: t=<unix>,v1=<hex>` as HMAC-SHA256(secret, f'{t}.{body}')."
    )
    secret_version: int
    updated_at: datetime


class AuditEventRead(BaseModel):
    id: uuid.UUID
    tenant_id: uuid.UUID
    actor_key_id: uuid.UUID | None
    action: str
    target: str | None
    request_id: str | None
    created_at: datetime
    details: dict[str, Any]


class AuditPage(BaseModel):
    items: list[AuditEventRead]
    next_cursor: str | None
