"""HTTP shapes for /v1/alerts. The condition is documented by `app/alerts/condition_schema.py` and checked in full
by `app/alerts/conditions.py` (422 `alert-rule-invalid` pointing at the node)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, UrlConstraints, field_validator

from app.alerts.condition_schema import ConditionJson
from app.alerts.conditions import CONDITION_DESCRIPTION
from app.alerts.frequency import Frequency
from app.core.schemas import DisplayName
from app.market.aggregation import TIMEFRAMES
from app.models.alert_rule import ALERT_DESTINATION_URL_MAX_LENGTH

# Hard bounds of the wire format only (they keep absurd values out of the columns); the market itself is checked
# against the feeds by the service, like the market-data routes do.
Venue = Annotated[str, Field(min_length=1, max_length=32, examples=["binance"])]
Symbol = Annotated[str, Field(min_length=1, max_length=64, examples=["BTCUSDT"])]
Timeframe = Annotated[str, Field(examples=["5m"], json_schema_extra={"enum": list(TIMEFRAMES)})]
Condition = Annotated[ConditionJson, Field(description=CONDITION_DESCRIPTION)]
CooldownBars = Annotated[int, Field(ge=0, le=1_000_000, description="Closes that never fire after a fire (0: none).")]


class WebhookDestination(BaseModel):
    """The tenant's webhook endpoint (`PUT /v1/webhook`), whatever URL it has when the alert fires."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["webhook"] = "webhook"


class UrlDestination(BaseModel):
    """A URL of this rule's own, signed with the tenant's webhook secret; public addresses only."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["url"]
    url: Annotated[AnyHttpUrl, UrlConstraints(max_length=ALERT_DESTINATION_URL_MAX_LENGTH)] = Field(
        examples=["https://bot.example.com/alerts"]
    )

    @field_validator("url")
    @classmethod
    def _normalised_length(cls, url: AnyHttpUrl) -> AnyHttpUrl:
        if len(str(url)) > ALERT_DESTINATION_URL_MAX_LENGTH:
            raise ValueError(f"the URL is longer than {ALERT_DESTINATION_URL_MAX_LENGTH} characters once normalised")
        return url


class NoDestination(BaseModel):
    """Nowhere: the alert's events are recorded (and streamed) only."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["none"]


Destination = Annotated[WebhookDestination | UrlDestination | NoDestination, Field(discriminator="type")]

_RULE_EXAMPLE: dict[str, Any] = {
    "name": "BTC turns long on a CHoCH",
    "venue": "binance",
    "symbol": "BTCUSDT",
    "timeframe": "5m",
    "condition": {
        "all": [
            {"field": "bias", "op": "changes_to", "value": "long"},
            {"event": "choch", "direction": "bullish"},
        ]
    },
    "frequency": "on_change",
    "cooldown_bars": 3,
    "expires_at": None,
    "enabled": True,
    "destination": {"type": "webhook"},
}


class AlertRuleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_RULE_EXAMPLE]})

    name: DisplayName
    venue: Venue
    symbol: Symbol
    timeframe: Timeframe
    condition: Condition
    frequency: Frequency = Field(
        default=Frequency.ON_CHANGE,
        description="`once` (then the rule disables itself), `once_per_bar` (every close while it holds), "
        "`on_change` (when it turns true).",
    )
    cooldown_bars: CooldownBars = 0
    expires_at: datetime | None = Field(default=None, description="After this the rule never fires (aware time).")
    enabled: bool = True
    destination: Destination = Field(default_factory=WebhookDestination)


_REQUIRED_MEMBERS = ("name", "venue", "symbol", "timeframe", "condition", "frequency", "cooldown_bars", "enabled",
                     "destination")  # fmt: skip


def _not_nullable(schema: dict[str, Any]) -> None:
    """The document says what the server accepts: of the optional members only `expires_at` takes null (the
    others are refused by `_refuse_null`)."""
    for name in _REQUIRED_MEMBERS:
        member = schema["properties"][name]
        options = member.pop("anyOf", None)
        if options is not None:
            kept = [option for option in options if option.get("type") != "null"]
            member.update(kept[0] if len(kept) == 1 else {"anyOf": kept})
        member.pop("default", None)
    schema["examples"] = [{"enabled": False}, {"cooldown_bars": 10}]


class AlertRuleUpdate(BaseModel):
    """Members present replace the rule's; absent ones stay. `expires_at: null` removes the expiry."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_not_nullable)

    name: DisplayName | None = None
    venue: Venue | None = None
    symbol: Symbol | None = None
    timeframe: Timeframe | None = None
    condition: Condition | None = None
    frequency: Frequency | None = None
    cooldown_bars: CooldownBars | None = None
    expires_at: datetime | None = Field(default=None, description="null removes the expiry.")
    enabled: bool | None = None
    destination: Destination | None = None

    @field_validator(*_REQUIRED_MEMBERS, mode="before")
    @classmethod
    def _refuse_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may not be null (leave the member out to keep it)")
        return value


class AlertRuleRead(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "3f2b9c1e-7a4d-4e8b-9c6f-1d2e3f4a5b6c",
                    "tenant_id": "5d2c7e91-8a4b-4f3c-b6e1-2a9d0c7f8e3b",
                    **_RULE_EXAMPLE,
                    "description": "bias changes to long and bullish CHoCH",
                    "created_at": "2026-12-02T08:00:00Z",
                    "updated_at": "2026-12-02T08:00:00Z",
                    "last_fired_at": None,
                }
            ]
        }
    )

    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    venue: str
    symbol: str
    timeframe: str
    condition: dict[str, Any] = Field(description="The condition in its canonical form.")
    description: str = Field(description="The condition in words.")
    frequency: Frequency
    cooldown_bars: int
    expires_at: datetime | None
    enabled: bool
    destination: Destination
    created_at: datetime
    updated_at: datetime
    last_fired_at: datetime | None = Field(description="Close time of the last bar that fired it.")


class AlertRulePage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [], "next_cursor": None}]},
    )

    items: list[AlertRuleRead]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")
