"""Standard Webhooks (https://www.standardwebhooks.com): the signing format of outgoing webhooks.

Three headers travel with the body: `webhook-id` (the message id, the same on every retry: receivers use it as the
idempotency key), `webhook-timestamp` (unix seconds of this attempt) and `webhook-signature`: `v1,<base64
HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`, several space-separated when a secret is being rotated. The secret is
shown to the receiver as `whsec_<base64 key>`; the HMAC key is the decoded bytes, not the text. Receivers refuse
timestamps more than the tolerance (5 minutes in the spec's libraries) away from their clock, which bounds replay.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_SECONDS = 300
# 24 bytes is what the spec's reference implementations generate; at most 64 (the spec's upper bound).
SECRET_BYTES = 24
MAX_SECRET_BYTES = 64


class WebhookVerificationFailed(ValueError):
    """Missing or malformed headers, a timestamp outside the tolerance, or no signature that matches."""


def generate_secret(nbytes: int = SECRET_BYTES) -> str:
    return encode_secret(secrets.token_bytes(nbytes))


def encode_secret(key: bytes) -> str:
    if not 0 < len(key) <= MAX_SECRET_BYTES:
        raise ValueError(f"a webhook key has 1 to {MAX_SECRET_BYTES} bytes")
    return SECRET_PREFIX + base64.b64encode(key).decode("ascii")


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a `whsec_…` secret (the prefix is optional, padding may be missing, as the spec allows)."""
    text = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a webhook secret is base64 after `whsec_`") from exc
    if not 0 < len(key) <= MAX_SECRET_BYTES:
        raise ValueError(f"a webhook key has 1 to {MAX_SECRET_BYTES} bytes")
    return key


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`."""
    signed = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def sign_headers(secrets_: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers for one attempt; every secret given signs (during a rotation the old and the new)."""
    signatures = [signature(decode_secret(secret), msg_id, timestamp, body) for secret in secrets_]
    if not signatures:
        raise ValueError("at least one secret signs a webhook")
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": " ".join(signatures)}


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> None:
    """What a receiver does (used by our tests and offered to anyone receiving our webhooks in Python)."""
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id, stamp, signed = (lowered.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not (msg_id and stamp and signed):
        raise WebhookVerificationFailed("missing webhook-id, webhook-timestamp or webhook-signature")
    if not stamp.isascii() or not stamp.isdigit():
        raise WebhookVerificationFailed("webhook-timestamp is not unix seconds")
    timestamp = int(stamp)
    if abs(now - timestamp) > tolerance_seconds:
        raise WebhookVerificationFailed("webhook-timestamp is outside the tolerance")
    expected = signature(decode_secret(secret), msg_id, timestamp, body).encode()
    for candidate in signed.split(" "):
        if hmac.compare_digest(candidate.encode(), expected):
            return
    raise WebhookVerificationFailed("no signature matches")
