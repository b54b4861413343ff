from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, UrlConstraints, field_validator

from app.config.limits import MIN_RATE_LIMIT_PER_SECOND
from app.core.schemas import DisplayName

# The column's own bound, so the schema and the table cannot disagree (Postgres refused longer URLs with a 500).
from app.models.webhook import WEBHOOK_URL_MAX_LENGTH


class RateLimitSpec(BaseModel):
    """A tenant's own request budget: a token bucket of `burst` requests refilled at `per_second`."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"per_second": 50, "burst": 500}]})

    # Same bounds as DELTAFLOW_RATE_LIMIT_PER_SECOND / _BURST (there, 0 per second means "no default").
    per_second: float = Field(
        ge=MIN_RATE_LIMIT_PER_SECOND, le=1_000_000, description="Refill rate: sustained requests per second."
    )
    burst: int = Field(ge=1, le=10_000_000, description="Bucket size: requests that may arrive at once.")


class RateLimitRead(RateLimitSpec):
    source: Literal["tenant", "default"] = Field(
        description="`tenant`: set for this tenant by an operator; `default`: the service's setting."
    )


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: DisplayName = Field(examples=["acme-quant"])
    rate_limit: RateLimitSpec | None = Field(default=None, description="Omitted: the service default applies.")


class TenantRead(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "5d2c7e91-8a4b-4f3c-b6e1-2a9d0c7f8e3b",
                    "name": "acme-quant",
                    "created_at": "2026-11-25T08:00:00Z",
                    "rate_limit": {"per_second": 50, "burst": 500, "source": "tenant"},
                    "monthly_quota": 1_000_000,
                }
            ]
        }
    )

    id: uuid.UUID
    name: str
    created_at: datetime
    rate_limit: RateLimitRead | None = Field(
        description="The budget its keys share (null: not limited: no tenant budget and no service default)."
    )
    monthly_quota: int | None = Field(
        default=None, description="Requests per calendar month (UTC) across its keys; null: no quota."
    )


class QuotaSpec(BaseModel):
    """A tenant's monthly request quota: every `/v1` request of its keys counts; refused with 429 `quota-exceeded`
    once used up, until the first day of the next month (UTC)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"monthly_requests": 1_000_000}]})

    monthly_requests: int = Field(ge=1, le=1_000_000_000_000, description="Requests per calendar month (UTC).")


class WebhookUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Annotated[AnyHttpUrl, UrlConstraints(max_length=WEBHOOK_URL_MAX_LENGTH)] = Field(
        examples=["https://hooks.example.com/deltaflow"],
        description=f"At most {WEBHOOK_URL_MAX_LENGTH} characters, as normalised (punycode, percent-encoding).",
    )
    rotate_secret: bool = Field(default=False, description="Issue a new signing secret (the old one stops).")

    @field_validator("url")
    @classmethod
    def _normalised_length(cls, url: AnyHttpUrl) -> AnyHttpUrl:
        # Normalising can lengthen a URL (an IDN host becomes punycode, spaces become %20): bound what is stored.
        if len(str(url)) > WEBHOOK_URL_MAX_LENGTH:
            raise ValueError(f"the URL is longer than {WEBHOOK_URL_MAX_LENGTH} characters once normalised")
        return url


class WebhookRead(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "url": "https://hooks.example.com/deltaflow",
                    "signing_secret": "whsec_MfKQ9r56vVIPHkbyiSAhTSPzp0a2rW8LkMahZ7kKx1U=",
                    "secret_version": 1,
                    "updated_at": "2026-11-25T08:00:00Z",
                }
            ]
        }
    )

    url: str
    signing_secret: str = Field(
        description="The Standard Webhooks secret (`whsec_<base64 key>`) that signs every delivery: verify "
        "`webhook-signature: v1,<base64>` as HMAC-SHA256(key, f'{webhook-id}.{webhook-timestamp}.{body}') with any "
        "Standard Webhooks library. Shown on every PUT; the same until `rotate_secret`."
    )
    secret_version: int
    updated_at: datetime


class AuditEventRead(BaseModel):
    id: uuid.UUID
    tenant_id: uuid.UUID
    actor_key_id: uuid.UUID | None
    actor_user_id: uuid.UUID | None = Field(
        default=None, description="The console user who acted (then `actor_key_id` is null)."
    )
    action: str
    target: str | None
    request_id: str | None
    created_at: datetime
    details: dict[str, Any]


class AuditPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {
                            "id": "9a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d",
                            "tenant_id": "5d2c7e91-8a4b-4f3c-b6e1-2a9d0c7f8e3b",
                            "actor_key_id": "0f6b8a52-3c1e-4d7a-9b2f-6c8d1e4a5b7c",
                            "action": "key.created",
                            "target": "key:0f6b8a52-3c1e-4d7a-9b2f-6c8d1e4a5b7c",
                            "request_id": "5f0c8b1e9a3d4c7e8f9a0b1c2d3e4f5a",
                            "created_at": "2026-11-25T08:00:00Z",
                            "details": {"role": "reader"},
                        }
                    ],
                    "next_cursor": None,
                }
            ]
        }
    )

    items: list[AuditEventRead]
    next_cursor: str | None
