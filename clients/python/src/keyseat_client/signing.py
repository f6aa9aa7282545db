"""Signed answers (the wire contract's "Signed answers"): the server's
pinned Ed25519 public keys, the ``Keyseat-Signature`` header, and the check
a device makes before it acts on an answer.

An app that believes any ``200 {"fence": 1}`` can be unlocked by a ten-line
fake server. With a pinned key every session request carries a fresh random
nonce, and an answer is acted on only if it is signed by a pinned key over
its exact body bytes and echoes that nonce and this key's prefix; anything
else raises :class:`~keyseat_client.UntrustedAnswer`, which is treated like
no answer (retried while the lease lasts).

Ed25519 is not in Python's standard library: verifying needs the
``cryptography`` package (``pip install 'keyseat-client[verify]'``). It is
imported only when a key is pinned, and its absence is then an error
(:class:`~keyseat_client.VerificationUnavailable`), never a silent skip.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
import secrets
from typing import Any, Iterable, List, Optional, Sequence, Tuple, Union

from .errors import ConfigError, UntrustedAnswer, VerificationUnavailable
from .keys import KEY_TAG, PREFIX_LEN

__all__ = [
    "Forgery",
    "PinnedKey",
    "SIGNATURE_HEADER",
    "kid_of",
    "new_nonce",
    "parse_header",
    "pinned_keys",
    "shown_prefix",
    "verify",
]

#: The response header that carries the signature.
SIGNATURE_HEADER = "Keyseat-Signature"

_INSTALL_HINT = (
    "verifying the server's answers (public_key=...) needs the `cryptography` "
    "package, which is not installed: pip install 'keyseat-client[verify]'"
)

#: What ``public_key=`` accepts: one key or several (during a rotation).
PublicKeys = Union[str, "PinnedKey", Iterable[Union[str, "PinnedKey"]]]


class Forgery(str, enum.Enum):
    """Why an answer is refused as not keyseat's (the same cases, in the same
    order of checking, as the Rust client's ``Forgery``)."""

    UNSIGNED = "the answer is not signed"
    MALFORMED = "the answer's signature header is malformed"
    UNKNOWN_KEY = "the answer is signed by a key that is not pinned"
    BAD_SIGNATURE = "the answer's signature does not match its body"
    WRONG_NONCE = "the answer is for another request (its nonce does not match)"
    WRONG_KEY = "the answer is for another access key (its key prefix does not match)"
    #: The signature does not cover the HTTP status: a genuine error body
    #: under a 2xx status (or a success body under an error status) has had
    #: its status changed on the way (the Rust and TypeScript clients have
    #: the same check, `Forgery::WrongStatus`).
    WRONG_STATUS = "the answer's HTTP status does not match its signed body"

    def __str__(self) -> str:
        return self.value


def _ed25519() -> Any:
    """The ``cryptography`` Ed25519 module, imported on each use (cheap once
    loaded), so its absence is reported when a key is pinned."""
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as e:
        raise VerificationUnavailable(_INSTALL_HINT) from e
    return ed25519


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    if any(c not in _B64URL for c in text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def kid_of(public: bytes) -> str:
    """The key id: the RFC 7638 JWK thumbprint (SHA-256 over the canonical
    ``{"crv","kty","x"}`` members, base64url), as the server computes it."""
    canonical = '{"crv":"Ed25519","kty":"OKP","x":"%s"}' % _b64url(public)
    return _b64url(hashlib.sha256(canonical.encode("ascii")).digest())


class PinnedKey:
    """A public key the app pins: the 43-character base64url text
    ``keyseat signing-key show --pin`` prints (a JWK's ``x``)."""

    def __init__(self, text: str) -> None:
        ed25519 = _ed25519()
        if not isinstance(text, str):
            raise ConfigError("the public key must be a string (base64url)")
        stripped = text.strip().rstrip("=")
        try:
            raw = _unb64url(stripped)
        except ValueError:
            raise ConfigError(
                "the public key is not base64url (the 43-character text "
                "`keyseat signing-key show --pin` prints)"
            ) from None
        if len(raw) != 32:
            raise ConfigError(
                f"the public key is {len(raw)} bytes; an Ed25519 public key is 32"
            )
        try:
            self._key = ed25519.Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            raise ConfigError("the public key is not a valid Ed25519 key") from None
        self.public = raw
        self.x = _b64url(raw)
        self.kid = kid_of(raw)

    def verifies(self, signature: bytes, body: bytes) -> bool:
        """Whether ``signature`` is this key's over exactly ``body``."""
        from cryptography.exceptions import InvalidSignature

        try:
            self._key.verify(signature, body)
        except InvalidSignature:
            return False
        return True

    def __repr__(self) -> str:
        return f"PinnedKey({self.kid})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PinnedKey) and other.public == self.public

    def __hash__(self) -> int:
        return hash(self.public)


def pinned_keys(public_key: Optional[PublicKeys]) -> Tuple[PinnedKey, ...]:
    """The keys from ``public_key=``: ``None`` (no check), one key, or a list
    of keys (any of them may sign; for a rotation). Raises
    :class:`~keyseat_client.VerificationUnavailable` without ``cryptography``
    and :class:`~keyseat_client.ConfigError` for a key that is not one."""
    if public_key is None:
        return ()
    items: Sequence[Any]
    if isinstance(public_key, (str, PinnedKey)):
        items = [public_key]
    else:
        items = list(public_key)
        if not items:
            raise ConfigError("public_key is an empty list: pin at least one key")
    _ed25519()  # a clear error first, whatever the keys look like
    return tuple(k if isinstance(k, PinnedKey) else PinnedKey(k) for k in items)


def new_nonce() -> str:
    """A fresh random nonce for one request (22 base64url characters, 128
    bits)."""
    return secrets.token_urlsafe(16)


def shown_prefix(access_key: str) -> Optional[str]:
    """The prefix the server echoes for a key (``ks_`` and 8 letters or
    digits), or ``None`` where it echoes ``null``."""
    text = access_key.strip() if isinstance(access_key, str) else ""
    prefix = text[: len(KEY_TAG) + PREFIX_LEN]
    rest = prefix[len(KEY_TAG) :]
    if (
        len(prefix) == len(KEY_TAG) + PREFIX_LEN
        and prefix.startswith(KEY_TAG)
        and rest.isascii()
        and rest.isalnum()
    ):
        return prefix
    return None


def parse_header(value: str) -> Optional[Tuple[str, bytes]]:
    """Splits a ``Keyseat-Signature`` value (``kid="...", sig="..."``) into
    its kid and 64-byte signature; ``None`` if malformed."""
    kid: Optional[str] = None
    sig: Optional[str] = None
    for part in value.split(","):
        name, eq, quoted = part.strip().partition("=")
        quoted = quoted.strip()
        if not eq or len(quoted) < 2 or quoted[0] != '"' or quoted[-1] != '"':
            return None
        inner = quoted[1:-1]
        if name.strip() == "kid":
            kid = inner
        elif name.strip() == "sig":
            sig = inner
    if kid is None or sig is None:
        return None
    try:
        raw = _unb64url(sig)
    except ValueError:
        return None
    if len(raw) != 64:
        return None
    return kid, raw


def verify(
    pinned: Sequence[PinnedKey],
    header: Optional[str],
    body: bytes,
    nonce: str,
    key_prefix: Optional[str],
    path: str = "",
    status: Optional[int] = None,
) -> None:
    """Checks an answer the way a device must before it acts on it: signed
    by one of the ``pinned`` keys over exactly ``body``, and echoing
    ``nonce`` and ``key_prefix`` (inside ``error`` for errors), and, given
    the HTTP ``status``, with an ``error`` object exactly when the status is
    not 2xx (the signature covers the body only). Raises
    :class:`~keyseat_client.UntrustedAnswer` naming the first check that
    failed."""

    def forged(reason: Forgery, detail: str = "") -> UntrustedAnswer:
        return UntrustedAnswer(path, reason, detail)

    if header is None:
        raise forged(Forgery.UNSIGNED)
    parsed = parse_header(header)
    if parsed is None:
        raise forged(Forgery.MALFORMED)
    kid, signature = parsed
    key = next((p for p in pinned if p.kid == kid), None)
    if key is None:
        raise forged(Forgery.UNKNOWN_KEY, f"kid {kid}")
    if not key.verifies(signature, body):
        raise forged(Forgery.BAD_SIGNATURE)
    try:
        value = json.loads(body.decode("utf-8"))
    except ValueError:
        raise forged(Forgery.BAD_SIGNATURE) from None
    # An error's echo sits inside `error`.
    fields = value.get("error", value) if isinstance(value, dict) else None
    if not isinstance(fields, dict) or fields.get("nonce") != nonce:
        raise forged(Forgery.WRONG_NONCE)
    if fields.get("key_prefix") != key_prefix:
        raise forged(Forgery.WRONG_KEY)
    if status is not None:
        is_error = isinstance(value, dict) and isinstance(value.get("error"), dict)
        if (200 <= status < 300) == is_error:
            raise forged(Forgery.WRONG_STATUS, f"status {status}")

