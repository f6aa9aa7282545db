"""Exceptions, one class per error code of the keyseat wire contract.

Every exception derives from :class:`KeyseatError`, which carries

- ``code``: the contract's snake_case code (``"invalid_key"``,
  ``"seats_full"``, ...), ``"unreachable"`` when no answer came at all, or
  ``"http_<status>"`` when the answer was not the contract's error shape
  (e.g. a proxy's 502 page);
- ``status``: the HTTP status, or ``None`` when no request was answered
  (or none was sent, as for a typo caught locally);
- ``message``: one human sentence;
- ``error``: the whole ``error`` object of the answer (extra fields such as
  ``superseded_by``);
- ``retry_after``: seconds from a ``Retry-After`` header, if any.
"""

from __future__ import annotations

import ssl
from typing import Any, Dict, Optional, Type

__all__ = [
    "KeyseatError",
    "ConfigError",
    "ServerUnreachable",
    "UntrustedAnswer",
    "CertificateNotTrusted",
    "VerificationUnavailable",
    "KeyRefused",
    "InvalidKey",
    "InvalidKeyFormat",
    "KeyRevoked",
    "KeySuspended",
    "KeyExpired",
    "SeatsFull",
    "BorrowNotAllowed",
    "InvalidLeaseToken",
    "SessionIdTaken",
    "SessionGone",
    "SessionSuperseded",
    "SessionExpired",
    "SessionEnded",
    "SessionRevoked",
    "SessionNotFound",
    "InvalidRequest",
    "PayloadTooLarge",
    "RateLimited",
    "Unauthorized",
    "error_from_answer",
]


class KeyseatError(Exception):
    """Base class of every error this package raises."""

    code: str
    status: Optional[int]
    message: str
    error: Dict[str, Any]
    retry_after: Optional[float]

    def __init__(
        self,
        message: str,
        *,
        code: str = "error",
        status: Optional[int] = None,
        error: Optional[Dict[str, Any]] = None,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message
        self.error = dict(error or {})
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        """Worth retrying: no answer, a 5xx, or 429."""
        return False

    def describe(self) -> str:
        """The error as the Rust client's low-level API prints it."""
        if self.status is None:
            return str(self)
        return f"{self.status} {self.code}: {self.message}"

    def __str__(self) -> str:
        if self.status is None:
            return self.message
        return f"{self.status} {self.code}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, status={self.status!r}, "
            f"message={self.message!r})"
        )


class ConfigError(KeyseatError, ValueError):
    """An unusable setting, such as a server URL that is not http(s)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="config")


class ServerUnreachable(KeyseatError):
    """No usable answer: no connection, a timeout, or a 5xx answer.

    ``status`` is ``None`` when nothing answered, the HTTP status for a 5xx.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str = "unreachable",
        status: Optional[int] = None,
        error: Optional[Dict[str, Any]] = None,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(
            message, code=code, status=status, error=error, retry_after=retry_after
        )

    @property
    def transient(self) -> bool:
        return True

    def describe(self) -> str:
        if self.status is None:
            return f"server unreachable: {self.message}"
        return f"{self.status} {self.code}: {self.message}"

    def __str__(self) -> str:
        if self.status is None:
            return f"server unreachable: {self.message}"
        return f"server unreachable: {self.status} {self.code}: {self.message}"


class VerificationUnavailable(ConfigError):
    """A public key was given, but the ``cryptography`` package that checks
    signatures is not installed (``pip install 'keyseat-client[verify]'``).
    Raised when the client is made, never skipped silently."""


class UntrustedAnswer(KeyseatError):
    """An answer failed the signature check with the pinned public key: an
    impostor, a replay, or a proxy that changes answers. It is treated like
    no answer (transient: retried while the lease lasts) and never acted on;
    a session whose lease runs out after such answers is lost as
    :attr:`~keyseat_client.LostReason.UNTRUSTED`.

    ``path`` is the route, ``reason`` a :class:`~keyseat_client.Forgery`;
    ``status`` is ``None``: nothing the answer says is believed, its HTTP
    status included.
    """

    def __init__(self, path: str, reason: Any, detail: str = "") -> None:
        what = f"{reason} ({detail})" if detail else f"{reason}"
        super().__init__(
            f"the answer to {path or 'the request'} failed the signature check: {what}",
            code="untrusted",
        )
        self.path = path
        self.reason = reason

    @property
    def transient(self) -> bool:
        return True

    def __str__(self) -> str:
        return f"the server's answer is not trusted: {self.message}"


class CertificateNotTrusted(KeyseatError):
    """The TLS handshake refused the server's certificate: signed by a CA
    this client does not trust (``problem == "unknown_issuer"``; pass
    ``cafile=`` or add the CA to the system store), made for another name
    (``"wrong_name"``), ``"expired"``, ``"not_valid_yet"``, or ``"other"``.

    Not transient: a start is not retried, and a running session that meets
    it is lost at once as :attr:`~keyseat_client.LostReason.CERTIFICATE`
    (a certificate does not heal within a lease). ``code`` is
    ``"certificate"``, ``status`` ``None``.
    """

    def __init__(self, problem: str, detail: str = "") -> None:
        said = {
            "unknown_issuer": "unknown issuer; pass --ca-file or add the CA to the system store",
            "wrong_name": "it is for another name; use the name the certificate was made "
            "for in the server URL",
            "expired": "it has expired; the server's certificate must be renewed",
            "not_valid_yet": "it is not valid yet; check this machine's clock",
        }.get(problem, detail)
        super().__init__(f"the server's certificate is not trusted: {said}", code="certificate")
        self.problem = problem


# OpenSSL's verify codes (X509_V_ERR_*) for each problem.
_CERT_PROBLEMS = {
    2: "unknown_issuer",  # unable to get issuer certificate
    18: "unknown_issuer",  # self-signed certificate
    19: "unknown_issuer",  # self-signed certificate in chain
    20: "unknown_issuer",  # unable to get local issuer certificate
    21: "unknown_issuer",  # unable to verify the first certificate
    9: "not_valid_yet",
    10: "expired",
    62: "wrong_name",  # hostname mismatch
    64: "wrong_name",  # IP address mismatch
}


def certificate_error(e: ssl.SSLCertVerificationError) -> CertificateNotTrusted:
    """The :class:`CertificateNotTrusted` for a failed verification."""
    code = getattr(e, "verify_code", None)
    detail = getattr(e, "verify_message", None) or str(e)
    return CertificateNotTrusted(_CERT_PROBLEMS.get(code, "other"), detail)


class KeyRefused(KeyseatError):
    """The access key was refused (unknown, revoked, suspended, expired)."""


class InvalidKey(KeyRefused):
    """401 ``invalid_key``: the server does not know this key (or it is
    malformed, see :class:`InvalidKeyFormat`)."""


class InvalidKeyFormat(InvalidKey):
    """The key is malformed or its checksum does not match (a typo). Raised
    locally, before any request: ``status`` is ``None``."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the access key is not valid: {reason}", code="invalid_key")
        self.reason = reason


class KeyRevoked(KeyRefused):
    """403 ``key_revoked``."""


class KeySuspended(KeyRefused):
    """403 ``key_suspended``."""


class KeyExpired(KeyRefused):
    """403 ``key_expired``."""


class SeatsFull(KeyseatError):
    """409 ``seats_full``: every seat is live and the key's policy is
    ``reject``."""


class BorrowNotAllowed(KeyseatError):
    """403 ``borrow_not_allowed``: the key does not allow borrowing (its
    ``max_borrow_hours`` is 0, the default). More hours than the key allows
    is :class:`InvalidRequest` (400 ``invalid_request``)."""


class InvalidLeaseToken(KeyseatError):
    """A lease token that is not to be believed
    (:func:`~keyseat_client.verify_lease_token`). ``reason`` is a
    :class:`~keyseat_client.LeaseTokenProblem` (its value a snake_case
    string: ``malformed``, ``wrong_algorithm``, ``unknown_key``,
    ``bad_signature``, ``wrong_issuer``, ``expired``), also in ``code`` as
    ``lease_<reason>``; ``status`` is ``None``: it is checked offline."""

    def __init__(self, reason: Any, detail: str = "") -> None:
        text = _LEASE_TEXT.get(str(reason), "the lease token is not valid")
        super().__init__(
            f"{text} ({detail})" if detail else text,
            code=f"lease_{reason}",
        )
        self.reason = reason
        self.detail = detail


_LEASE_TEXT = {
    "malformed": "the lease token is not a compact JWS of keyseat's claims",
    "wrong_algorithm": "the lease token's algorithm is not EdDSA",
    "unknown_key": "the lease token is signed by a key that is not pinned",
    "bad_signature": "the lease token's signature does not match its claims",
    "wrong_issuer": "the lease token is not issued by keyseat",
    "expired": "the lease token has run out",
}


class SessionIdTaken(KeyseatError):
    """409 ``session_id_taken``: the session id was used before."""


class SessionGone(KeyseatError):
    """The session is no longer live (raised by the low-level :class:`Api`;
    a :class:`Session` reports these through ``on_lost`` instead)."""


class SessionSuperseded(SessionGone):
    """409 ``session_superseded``: another device took the seat."""

    @property
    def device_name(self) -> Optional[str]:
        """The name of the device that took over, if it gave one."""
        by = self.error.get("superseded_by")
        name = by.get("device_name") if isinstance(by, dict) else None
        return name if isinstance(name, str) else None

    @property
    def superseded_at(self) -> Optional[str]:
        """When that device started (RFC 3339, server time)."""
        by = self.error.get("superseded_by")
        at = by.get("started_at") if isinstance(by, dict) else None
        return at if isinstance(at, str) else None


class SessionExpired(SessionGone):
    """410 ``session_expired``."""


class SessionEnded(SessionGone):
    """410 ``session_ended``."""


class SessionRevoked(SessionGone):
    """410 ``session_revoked``."""


class SessionNotFound(SessionGone):
    """404 ``session_not_found``."""


class InvalidRequest(KeyseatError):
    """400 ``invalid_request``."""


class PayloadTooLarge(KeyseatError):
    """413 ``payload_too_large``."""


class RateLimited(KeyseatError):
    """429 ``rate_limited``; ``retry_after`` says how long to wait."""

    @property
    def transient(self) -> bool:
        return True


class Unauthorized(KeyseatError):
    """401 ``unauthorized`` (admin API)."""


_BY_CODE: Dict[str, Type[KeyseatError]] = {
    "invalid_key": InvalidKey,
    "key_revoked": KeyRevoked,
    "key_suspended": KeySuspended,
    "key_expired": KeyExpired,
    "seats_full": SeatsFull,
    "borrow_not_allowed": BorrowNotAllowed,
    "session_id_taken": SessionIdTaken,
    "session_superseded": SessionSuperseded,
    "session_expired": SessionExpired,
    "session_ended": SessionEnded,
    "session_revoked": SessionRevoked,
    "session_not_found": SessionNotFound,
    "invalid_request": InvalidRequest,
    "payload_too_large": PayloadTooLarge,
    "rate_limited": RateLimited,
    "unauthorized": Unauthorized,
}


def error_from_answer(
    status: int,
    code: str,
    message: str,
    error: Optional[Dict[str, Any]] = None,
    retry_after: Optional[float] = None,
) -> KeyseatError:
    """The exception for a non-2xx answer: 5xx is :class:`ServerUnreachable`
    (transient), 429 :class:`RateLimited`, otherwise the class of the
    contract code (plain :class:`KeyseatError` for a code this version does
    not know)."""
    if status >= 500:
        return ServerUnreachable(
            message, code=code, status=status, error=error, retry_after=retry_after
        )
    cls = _BY_CODE.get(code)
    if cls is None:
        cls = RateLimited if status == 429 else KeyseatError
    return cls(message, code=code, status=status, error=error, retry_after=retry_after)
