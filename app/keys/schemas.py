"""HTTP shapes for /v1/keys and /v1/me. `ApiKeyCreated` is the only one that carries the secret."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from app.auth.scopes import Role, Scope
from app.core.schemas import DisplayName
from app.keys.repository import KeyStatus
from app.tenants.schemas import RateLimitRead


class ExpiryRequest(BaseModel):
    """Ask for an earlier expiry than the maximum lifetime: seconds from now, or a timestamp (not both)."""

    # The hard upper bounds only keep absurd numbers (which would overflow date arithmetic) out; the configured
    # limits (lifetime, grace) are checked by the service with their own 422.
    expires_in_seconds: Annotated[int, Field(gt=0, le=3650 * 86_400)] | None = Field(
        default=None, description="Seconds from now; at most DELTAFLOW_KEY_MAX_LIFETIME_DAYS (90 days)."
    )
    expires_at: datetime | None = Field(default=None, description="An aware timestamp within the maximum lifetime.")


class ApiKeyCreate(ExpiryRequest):
    model_config = ConfigDict(extra="forbid")

    name: DisplayName = Field(examples=["signals-bot"])
    role: Role = Role.READER
    scopes: list[Scope] | None = Field(
        default=None, description="A subset of the role's scopes (default: all of them). Never more than yours."
    )


class ApiKeyRotate(ExpiryRequest):
    model_config = ConfigDict(extra="forbid")

    grace_seconds: Annotated[int, Field(ge=0, le=3650 * 86_400)] | None = Field(
        default=None,
        description="How long the old key keeps working (default 24 h, 0 = stop now, at most 7 days, "
        "never past its own expiry).",
    )


class ApiKeyRead(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "0f6b8a52-3c1e-4d7a-9b2f-6c8d1e4a5b7c",
                    "tenant_id": "5d2c7e91-8a4b-4f3c-b6e1-2a9d0c7f8e3b",
                    "name": "signals-bot",
                    "prefix": "dfk_7Hq2",
                    "last_four": "x9Qa",
                    "role": "reader",
                    "scopes": ["market:read", "signals:read"],
                    "status": "active",
                    "created_at": "2026-11-25T08:00:00Z",
                    "expires_at": "2027-02-23T08:00:00Z",
                    "revoked_at": None,
                    "rotated_at": None,
                    "rotated_from_id": None,
                    "last_used_at": "2026-11-25T09:12:41Z",
                }
            ]
        }
    )

    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    prefix: str = Field(description="The first characters of the key, for recognising it.")
    last_four: str
    role: Role
    scopes: list[Scope]
    status: KeyStatus
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    rotated_at: datetime | None
    rotated_from_id: uuid.UUID | None
    last_used_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "0f6b8a52-3c1e-4d7a-9b2f-6c8d1e4a5b7c",
                    "tenant_id": "5d2c7e91-8a4b-4f3c-b6e1-2a9d0c7f8e3b",
                    "name": "signals-bot",
                    "prefix": "dfk_7Hq2",
                    "last_four": "x9Qa",
                    "role": "reader",
                    "scopes": ["market:read", "signals:read"],
                    "status": "active",
                    "created_at": "2026-11-25T08:00:00Z",
                    "expires_at": "2027-02-23T08:00:00Z",
                    "revoked_at": None,
                    "rotated_at": None,
                    "rotated_from_id": None,
                    "last_used_at": "2026-11-25T09:12:41Z",
                    "secret": "dfk_7Hq2mZp4Lr8sVt1Wy6Bn3Kd5Fg9Hj0x9QaC1e2F3",
                }
            ]
        }
    )

    secret: str = Field(description="The API key. Shown exactly once: store it now.")


class ApiKeyPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {
                            "id": "0f6b8a52-3c1e-4d7a-9b2f-6c8d1e4a5b7c",
                            "tenant_id": "5d2c7e91-8a4b-4f3c-b6e1-2a9d0c7f8e3b",
                            "name": "signals-bot",
                            "prefix": "dfk_7Hq2",
                            "last_four": "x9Qa",
                            "role": "reader",
                            "scopes": ["market:read", "signals:read"],
                            "status": "active",
                            "created_at": "2026-11-25T08:00:00Z",
                            "expires_at": "2027-02-23T08:00:00Z",
                            "revoked_at": None,
                            "rotated_at": None,
                            "rotated_from_id": None,
                            "last_used_at": "2026-11-25T09:12:41Z",
                        }
                    ],
                    "next_cursor": "eyJjIjoiMjAyNi0xMS0yNVQwODowMDowMFoifQ",
                }
            ]
        }
    )

    items: list[ApiKeyRead]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class Me(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "key_id": "0f6b8a52-3c1e-4d7a-9b2f-6c8d1e4a5b7c",
                    "tenant_id": "5d2c7e91-8a4b-4f3c-b6e1-2a9d0c7f8e3b",
                    "name": "signals-bot",
                    "role": "reader",
                    "scopes": ["market:read", "signals:read"],
                    "expires_at": "2027-02-23T08:00:00Z",
                    "rate_limit": {"per_second": 20, "burst": 100, "source": "default"},
                }
            ]
        }
    )

    key_id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    role: Role
    scopes: list[Scope]
    expires_at: datetime
    rate_limit: RateLimitRead | None = Field(description="The budget the tenant's keys share (null: not limited).")
