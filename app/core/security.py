"""API-key material: generation, format and checksum validation, peppered hashing, webhook signatures.

Key format: `dfk_` + 32 random base62 characters + 6 base62 characters of the CRC32 of those 32. The checksum
lets the service reject typos and garbage without touching the database or Redis, and lets secret scanners
recognise a Deltaflow key. Only an HMAC-SHA256 of the whole key, keyed with the server-side pepper
(`DELTAFLOW_SECRET_KEY`), is ever stored: a database dump alone cannot be used to verify guesses.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import zlib

KEY_PREFIX = "dfk_"
RANDOM_LENGTH = 32
CHECKSUM_LENGTH = 6
KEY_LENGTH = len(KEY_PREFIX) + RANDOM_LENGTH + CHECKSUM_LENGTH
DISPLAY_PREFIX_LENGTH = len(KEY_PREFIX) + 4

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_BASE62_SET = frozenset(BASE62)


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, remainder = divmod(number, 62)
        digits.append(BASE62[remainder])
    return "".join(reversed(digits))


def _checksum(random_part: str) -> str:
    return _base62(zlib.crc32(random_part.encode("ascii")), CHECKSUM_LENGTH)


def generate_api_key() -> str:
    random_part = "".join(secrets.choice(BASE62) for _ in range(RANDOM_LENGTH))
    return KEY_PREFIX + random_part + _checksum(random_part)


def is_well_formed(key: str) -> bool:
    """Shape and checksum only: pure, constant work, no I/O."""
    if len(key) != KEY_LENGTH or not key.startswith(KEY_PREFIX):
        return False
    body = key[len(KEY_PREFIX) :]
    if not _BASE62_SET.issuperset(body):
        return False
    random_part, checksum = body[:RANDOM_LENGTH], body[RANDOM_LENGTH:]
    return hmac.compare_digest(_checksum(random_part), checksum)


def hash_api_key(key: str, pepper: str) -> str:
    return hmac.new(pepper.encode(), key.encode(), hashlib.sha256).hexdigest()


def display_prefix(key: str) -> str:
    return key[:DISPLAY_PREFIX_LENGTH]


def last_four(key: str) -> str:
    return key[-4:]


def derive_key(pepper: str, purpose: str) -> bytes:
    """A per-purpose key derived from the pepper (e.g. a tenant's webhook signing key): never stored."""
    return hmac.new(pepper.encode(), purpose.encode(), hashlib.sha256).digest()
