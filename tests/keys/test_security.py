"""Key material: format, checksum, hashing, webhook signatures."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from app.core.security import (
    KEY_LENGTH,
    derive_key,
    display_prefix,
    generate_api_key,
    hash_api_key,
    is_well_formed,
    last_four,
)


def test_generated_keys_have_the_documented_shape() -> None:
    keys = {generate_api_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert key.startswith("dfk_")
        assert len(key) == KEY_LENGTH == 4 + 32 + 6
        assert key[4:].isalnum()
        assert is_well_formed(key)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda k: k[:-1] + ("A" if k[-1] != "A" else "B"),  # checksum character changed
        lambda k: k[:10] + ("x" if k[10] != "x" else "y") + k[11:],  # random part changed
        lambda k: "dfx_" + k[4:],
        lambda k: k[:-1],
        lambda k: k + "0",
        lambda k: k[:20] + "-" + k[21:],
        lambda k: "",
    ],
)
def test_typos_and_garbage_fail_the_format_check(mutate: object) -> None:
    key = generate_api_key()
    assert callable(mutate)
    assert not is_well_formed(mutate(key))


def test_hash_is_a_peppered_hmac_and_never_the_key() -> None:
    key = generate_api_key()
    digest = hash_api_key(key, "pepper-1")
    assert digest == hmac.new(b"pepper-1", key.encode(), hashlib.sha256).hexdigest()
    assert digest != hash_api_key(key, "pepper-2")
    assert key not in digest


def test_display_fields_reveal_little() -> None:
    key = generate_api_key()
    assert display_prefix(key) == key[:8]
    assert last_four(key) == key[-4:]


def test_derived_keys_are_per_purpose_and_stable() -> None:
    key = derive_key("pepper", "webhook:t:1")
    assert len(key) == 32
    assert key == derive_key("pepper", "webhook:t:1")
    assert key != derive_key("pepper", "webhook:t:2")
    assert key != derive_key("other pepper", "webhook:t:1")
