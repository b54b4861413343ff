"""Standard Webhooks signing: the spec's published test vector, an independent implementation (the openssl command
line, not Python's hmac), and what a receiver must refuse."""

from __future__ import annotations

import base64
import shutil
import subprocess

import pytest

from app.core.standard_webhooks import (
    WebhookVerificationFailed,
    decode_secret,
    encode_secret,
    generate_secret,
    sign_headers,
    signature,
    verify,
)

# From the Standard Webhooks reference libraries' tests (libraries/python/tests/test_webhooks.py, test_sign_function).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_spec_test_vector() -> None:
    assert signature(decode_secret(SPEC_SECRET), SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE
    headers = sign_headers([SPEC_SECRET], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY)
    assert headers == {"webhook-id": SPEC_ID, "webhook-timestamp": "1614265330", "webhook-signature": SPEC_SIGNATURE}
    verify(SPEC_SECRET, headers, SPEC_BODY, now=SPEC_TIMESTAMP + 10)
    # The prefix is optional on the receiving side, as in the reference libraries.
    verify(SPEC_SECRET.removeprefix("whsec_"), headers, SPEC_BODY, now=SPEC_TIMESTAMP)


def _openssl_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key_hex = base64.b64decode(secret.removeprefix("whsec_")).hex()
    digest = subprocess.run(
        ["openssl", "dgst", "-sha256", "-mac", "HMAC", "-macopt", f"hexkey:{key_hex}", "-binary"],
        input=f"{msg_id}.{timestamp}.".encode() + body,
        capture_output=True,
        check=True,
        timeout=10,
    ).stdout
    return "v1," + base64.b64encode(digest).decode()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command line")
@pytest.mark.parametrize("body", [SPEC_BODY, b"", b'{"sentence": "bias turned long: CHoCH at 64 210"}'])
def test_an_independent_implementation_agrees(body: bytes) -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    headers = sign_headers([secret], "msg_alert_1", 1_764_000_000, body)
    assert headers["webhook-signature"] == _openssl_signature(secret, "msg_alert_1", 1_764_000_000, body)
    assert _openssl_signature(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_a_rotation_signs_with_both_secrets_and_either_verifies() -> None:
    old, new = generate_secret(), generate_secret()
    headers = sign_headers([old, new], "msg_1", 1_000, b"{}")
    assert len(headers["webhook-signature"].split(" ")) == 2
    verify(old, headers, b"{}", now=1_000)
    verify(new, headers, b"{}", now=1_000)


@pytest.mark.parametrize(
    ("change", "now"),
    [
        ({"webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="}, SPEC_TIMESTAMP),  # one bit off
        ({"webhook-signature": SPEC_SIGNATURE.replace("v1,", "v2,")}, SPEC_TIMESTAMP),  # unknown version
        ({"webhook-id": "msg_other"}, SPEC_TIMESTAMP),
        ({"webhook-timestamp": "1614265331"}, SPEC_TIMESTAMP),
        ({"webhook-timestamp": "hello"}, SPEC_TIMESTAMP),
        ({"webhook-id": ""}, SPEC_TIMESTAMP),
        ({}, SPEC_TIMESTAMP + 301),  # too old
        ({}, SPEC_TIMESTAMP - 301),  # too new
    ],
)
def test_the_receiver_refuses(change: dict[str, str], now: int) -> None:
    headers = sign_headers([SPEC_SECRET], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) | change
    with pytest.raises(WebhookVerificationFailed):
        verify(SPEC_SECRET, headers, SPEC_BODY, now=now)


def test_a_changed_body_does_not_verify() -> None:
    headers = sign_headers([SPEC_SECRET], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY)
    with pytest.raises(WebhookVerificationFailed):
        verify(SPEC_SECRET, headers, SPEC_BODY + b" ", now=SPEC_TIMESTAMP)


def test_secrets_round_trip_and_malformed_ones_are_refused() -> None:
    key = bytes(range(24))
    assert decode_secret(encode_secret(key)) == key
    assert decode_secret(encode_secret(key).rstrip("=")) == key  # unpadded, as the spec allows
    for bad in ("whsec_", "whsec_!!!", "whsec_" + base64.b64encode(bytes(65)).decode()):
        with pytest.raises(ValueError, match="webhook"):
            decode_secret(bad)
