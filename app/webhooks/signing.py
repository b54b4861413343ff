"""The tenant's Standard Webhooks secret and the headers of one attempt.

The secret is derived from the server pepper and the endpoint's `secret_version` (never stored): 32 bytes of
HMAC-SHA256, shown as `whsec_<base64>`, the form every Standard Webhooks library takes. Rotating
(`PUT /v1/webhook` with `rotate_secret`) bumps the version and the old secret stops at once, as it always did: there
is no grace period to sign with both (`sign_headers` would take both if one is added).
"""

from __future__ import annotations

import uuid

from app.config import Settings
from app.core.security import derive_key
from app.core.standard_webhooks import encode_secret, sign_headers

USER_AGENT = "Deltaflow-Webhooks/2"


def webhook_secret(settings: Settings, tenant_id: uuid.UUID, version: int) -> str:
    return encode_secret(derive_key(settings.secret_key.get_secret_value(), f"webhook:{tenant_id}:{version}"))


def attempt_headers(secret: str, message_id: str, timestamp: int, event: str, body: bytes) -> dict[str, str]:
    """Everything an attempt sends besides the body. `timestamp` is this attempt's wall-clock time (receivers
    refuse one more than 5 minutes from their own clock), while `webhook-id` is the message's, the same on every
    attempt and redelivery. `deltaflow-event` (also in the body) lets a receiver route before parsing."""
    return {
        **sign_headers([secret], message_id, timestamp, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "deltaflow-event": event,
    }
