"""Answers of the replay routes (both 202: the worker delivers later)."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class RedeliveryAccepted(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "delivery_id": "0b6f3e2a-4c1d-4e8f-9a7b-2c5d8e1f4a3b",
                    "event_id": "7d1e9c4b-2a3f-4b5c-8d6e-9f0a1b2c3d4e",
                    "message_id": "msg_7d1e9c4b2a3f4b5c8d6e9f0a1b2c3d4e",
                    "queued": True,
                }
            ]
        }
    )

    delivery_id: uuid.UUID = Field(description="The delivery that carries the event again.")
    event_id: uuid.UUID
    message_id: str = Field(description="Its `webhook-id`: the event's, as on every earlier delivery of it.")
    queued: bool = Field(
        description="False when a delivery of the event to this destination was already queued and not yet tried: "
        "that one is returned instead of a second."
    )


class RecoveryAccepted(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"requeued": 3, "since": "2026-12-02T08:00:00Z"}]})

    requeued: int = Field(description="Failed deliveries put back in the queue, due now.")
    since: datetime
