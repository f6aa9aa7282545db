"""The access key format, checked locally so a typo fails without a request.

An access key is ``ks_`` + 32 random base62 characters + 6 base62
characters of CRC32 over everything before them (``ks_`` and the random
part), most significant digit first, left-padded with ``0``; base62 digits
are ``0-9A-Za-z`` in that order.
"""

from __future__ import annotations

import zlib

from .errors import InvalidKeyFormat

__all__ = ["check_access_key", "is_access_key", "redact", "KEY_LEN"]

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BASE62_SET = frozenset(BASE62)
KEY_TAG = "ks_"
RANDOM_LEN = 32
CHECKSUM_LEN = 6
KEY_LEN = len(KEY_TAG) + RANDOM_LEN + CHECKSUM_LEN
PREFIX_LEN = 8

# The same sentences as the server and the Rust client.
_SHAPE = "an access key is `ks_` followed by 38 letters and digits"
_ALPHABET = "an access key contains only letters and digits after `ks_`"
_CHECKSUM = "the access key's checksum does not match (is there a typo?)"


def _encode_base62(value: int, width: int) -> str:
    digits = ["0"] * width
    for i in range(width - 1, -1, -1):
        value, digit = divmod(value, 62)
        digits[i] = BASE62[digit]
    return "".join(digits)


def checksum_of(body: str) -> str:
    """The 6-character base62 CRC32 of ``body``."""
    return _encode_base62(zlib.crc32(body.encode("ascii")) & 0xFFFFFFFF, CHECKSUM_LEN)


def check_access_key(text: str) -> str:
    """Returns the key (surrounding whitespace removed) or raises
    :class:`~keyseat_client.InvalidKeyFormat` naming what is wrong."""
    key = text.strip()
    if len(key) != KEY_LEN or not key.startswith(KEY_TAG):
        raise InvalidKeyFormat(_SHAPE)
    if not all(c in _BASE62_SET for c in key[len(KEY_TAG) :]):
        raise InvalidKeyFormat(_ALPHABET)
    body, checksum = key[: KEY_LEN - CHECKSUM_LEN], key[KEY_LEN - CHECKSUM_LEN :]
    if checksum_of(body) != checksum:
        raise InvalidKeyFormat(_CHECKSUM)
    return key


def is_access_key(text: str) -> bool:
    """Whether ``text`` is a well-formed access key (checksum included); for
    validating an input field as the user types."""
    try:
        check_access_key(text)
    except InvalidKeyFormat:
        return False
    return True


def redact(text: str) -> str:
    """``ks_`` and the first 8 characters: what may be shown and logged."""
    keep = len(KEY_TAG) + PREFIX_LEN
    return text[:keep] + "\u2026" if len(text) > keep else text
