"""Borrowing a seat for offline use (the wire contract's "Borrowing"): a
device that is online asks for its seat for some hours
(:meth:`~keyseat_client.Client.borrow`), keeps the lease token the server
hands out, and at a later start without the network checks that token with
the pinned public key (:func:`verify_lease_token`) instead of asking the
server.

The lease token is a compact JWS (RFC 7515), ``alg`` ``EdDSA`` (RFC 8037),
signed by the same Ed25519 key that signs answers; its claims are ``iss``
(``"keyseat"``), ``sub`` (the session id), ``key_prefix``, ``fence``,
``device_fingerprint`` (when the borrow gave one), ``iat`` and ``exp`` (the
end of the borrow, Unix seconds). Any JOSE library can check it; this
module does it with ``cryptography`` only, in the same order of checks as
the Rust client's ``verify_lease_token``.
"""

from __future__ import annotations

import datetime as _dt
import enum
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence, Tuple, Union

from .errors import ConfigError, InvalidLeaseToken
from .signing import PinnedKey, PublicKeys, _unb64url, pinned_keys

if TYPE_CHECKING:  # pragma: no cover
    from .api import Api
    from .session import StartInfo

__all__ = [
    "ISSUER",
    "Borrowed",
    "LeaseClaims",
    "LeaseTokenProblem",
    "verify_lease_token",
]

#: The issuer every lease token names.
ISSUER = "keyseat"


class LeaseTokenProblem(str, enum.Enum):
    """Why a lease token is refused (the Rust client's ``LeaseTokenError``
    cases, checked in the same order). The value is a stable snake_case
    string."""

    #: Not three base64url parts of JSON, or claims of the wrong types.
    MALFORMED = "malformed"
    #: A header naming another algorithm than EdDSA (``none``, ``HS256``...).
    WRONG_ALGORITHM = "wrong_algorithm"
    #: Signed (says its ``kid``) by a key that is not pinned.
    UNKNOWN_KEY = "unknown_key"
    #: The signature does not match the header and claims.
    BAD_SIGNATURE = "bad_signature"
    #: Not issued by keyseat.
    WRONG_ISSUER = "wrong_issuer"
    #: Past its ``exp``.
    EXPIRED = "expired"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class LeaseClaims:
    """What a verified lease token says: session ``sub`` of the key whose
    prefix is ``key_prefix`` holds its seat offline until ``exp``."""

    #: Always ``"keyseat"``.
    iss: str
    #: The session id.
    sub: str
    #: The key's display prefix (``ks_`` and 8 characters).
    key_prefix: str
    #: The session's fence.
    fence: int
    #: Issued at (Unix seconds).
    iat: int
    #: The end of the borrow, ``borrowed_until`` (Unix seconds).
    exp: int
    #: The device's fingerprint, when the borrow gave one.
    device_fingerprint: Optional[str] = None

    @property
    def session_id(self) -> str:
        """``sub``: the session that holds the seat."""
        return self.sub

    @property
    def expires(self) -> _dt.datetime:
        """``exp`` as an aware UTC datetime."""
        return _dt.datetime.fromtimestamp(self.exp, tz=_dt.timezone.utc)


Now = Union[None, int, float, _dt.datetime]


def _now_seconds(now: Now) -> float:
    if now is None:
        return time.time()
    if isinstance(now, _dt.datetime):
        if now.tzinfo is None:
            raise ConfigError("now= must be an aware datetime (or Unix seconds)")
        return now.timestamp()
    if isinstance(now, bool) or not isinstance(now, (int, float)):
        raise ConfigError("now= must be Unix seconds or an aware datetime")
    return float(now)


def _json_part(text: str) -> Dict[str, Any]:
    try:
        value = json.loads(_unb64url(text).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise InvalidLeaseToken(LeaseTokenProblem.MALFORMED) from None
    if not isinstance(value, dict):
        raise InvalidLeaseToken(LeaseTokenProblem.MALFORMED, "a part is not a JSON object")
    return value


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _claims(value: Dict[str, Any]) -> LeaseClaims:
    def bad(name: str) -> InvalidLeaseToken:
        return InvalidLeaseToken(LeaseTokenProblem.MALFORMED, f"claim {name} is missing or of the wrong type")

    for name in ("iss", "sub", "key_prefix"):
        if not isinstance(value.get(name), str):
            raise bad(name)
    for name in ("fence", "iat", "exp"):
        if not _int(value.get(name)):
            raise bad(name)
    fp = value.get("device_fingerprint")
    if fp is not None and not isinstance(fp, str):
        raise bad("device_fingerprint")
    return LeaseClaims(
        iss=value["iss"],
        sub=value["sub"],
        key_prefix=value["key_prefix"],
        fence=value["fence"],
        iat=value["iat"],
        exp=value["exp"],
        device_fingerprint=fp,
    )


def _check(token: str, pinned: Sequence[PinnedKey], now: Optional[float]) -> LeaseClaims:
    """The checks, in order; ``now`` ``None`` skips the expiry check (used
    right after a borrow, where the local clock may be off)."""
    if not isinstance(token, str):
        raise InvalidLeaseToken(LeaseTokenProblem.MALFORMED, "the token is not a string")
    text = token.strip()
    parts = text.split(".")
    if len(parts) != 3:
        raise InvalidLeaseToken(LeaseTokenProblem.MALFORMED)
    h, c, s = parts
    header = _json_part(h)
    alg = header.get("alg")
    if alg != "EdDSA":
        raise InvalidLeaseToken(LeaseTokenProblem.WRONG_ALGORITHM, f"alg {alg!r}")
    kid = header.get("kid")
    key = next((p for p in pinned if isinstance(kid, str) and p.kid == kid), None)
    if key is None:
        raise InvalidLeaseToken(LeaseTokenProblem.UNKNOWN_KEY, f"kid {kid}")
    try:
        signature = _unb64url(s)
    except ValueError:
        raise InvalidLeaseToken(LeaseTokenProblem.MALFORMED, "the signature is not base64url") from None
    if len(signature) != 64:
        raise InvalidLeaseToken(LeaseTokenProblem.MALFORMED, f"the signature is {len(signature)} bytes, not 64")
    if not key.verifies(signature, f"{h}.{c}".encode("ascii")):
        raise InvalidLeaseToken(LeaseTokenProblem.BAD_SIGNATURE)
    claims = _claims(_json_part(c))
    if claims.iss != ISSUER:
        raise InvalidLeaseToken(LeaseTokenProblem.WRONG_ISSUER, f"iss {claims.iss!r}")
    if now is not None and now >= claims.exp:
        raise InvalidLeaseToken(
            LeaseTokenProblem.EXPIRED, f"exp {claims.expires.isoformat()}"
        )
    return claims


def verify_lease_token(token: str, public_key: PublicKeys, now: Now = None) -> LeaseClaims:
    """Checks a lease token offline, the way an app must before it runs on
    it: ``alg`` EdDSA, a ``kid`` naming one of the pinned keys, that key's
    Ed25519 signature over exactly the first two parts, ``iss`` ``keyseat``,
    and ``exp`` after ``now`` (Unix seconds or an aware datetime; default:
    this machine's clock). Returns the :class:`LeaseClaims`; check that
    ``key_prefix`` (and ``device_fingerprint``, if you borrowed with one) is
    this app's.

    :param public_key: what :class:`~keyseat_client.Client` accepts: the
        base64url text ``keyseat signing-key show --pin`` prints, a
        :class:`~keyseat_client.PinnedKey`, or a list of them (rotation).
    :raises InvalidLeaseToken: ``.reason`` is a :class:`LeaseTokenProblem`.
    :raises VerificationUnavailable: ``cryptography`` is not installed
        (never a silent accept).
    :raises ConfigError: no key, or a public key that is not one.
    """
    if public_key is None:
        raise ConfigError("verify_lease_token needs the pinned public key")
    pinned = pinned_keys(public_key)
    return _check(token, pinned, _now_seconds(now))


class Borrowed:
    """A seat held offline, from :meth:`~keyseat_client.Client.borrow` or
    :meth:`~keyseat_client.Session.borrow`: no heartbeats until
    :attr:`borrowed_until`. Store :attr:`lease_token` and check it offline
    with :func:`verify_lease_token`; :meth:`give_back` returns the seat
    early."""

    def __init__(
        self,
        api: "Api",
        access_key: str,
        info: "StartInfo",
        borrowed_until: str,
        lease_token: str,
        claims: Optional[LeaseClaims] = None,
    ) -> None:
        self._api = api
        self._access_key = access_key
        self._info = info
        #: Until when the seat is held (RFC 3339, server time).
        self.borrowed_until = borrowed_until
        #: The compact JWS to keep and check offline.
        self.lease_token = lease_token
        #: The token's claims, when the client pins a public key (it then
        #: checked the token too, bar the expiry); ``None`` otherwise.
        self.claims = claims

    @property
    def info(self) -> "StartInfo":
        """The session fields of the answer, as a start gives them."""
        return self._info

    @property
    def session_id(self) -> str:
        return self._info.session_id

    @property
    def fence(self) -> int:
        return self._info.fence

    @property
    def previous_session_terminated(self) -> bool:
        """Whether this borrow superseded another device's session."""
        return self._info.previous_session_terminated

    @property
    def terminated(self) -> Tuple[Any, ...]:
        return self._info.terminated

    @property
    def borrowed_until_datetime(self) -> Optional[_dt.datetime]:
        """:attr:`borrowed_until` parsed (aware, UTC), or ``None`` if it is
        not RFC 3339."""
        return _parse_rfc3339(self.borrowed_until)

    def give_back(self, timeout: Optional[float] = None) -> bool:
        """Returns the seat early (``/api/session/end``); ``True`` if the
        server still held it. The token itself still verifies offline until
        its ``exp``: an app that gives the seat back must delete its copy.
        Raises what the server call raised (e.g.
        :class:`~keyseat_client.ServerUnreachable`), except for a session
        the server no longer has (``False``)."""
        from .errors import KeyRefused, SessionGone

        try:
            body = self._api.end(self._access_key, self._info.session_id, timeout)
        except (SessionGone, KeyRefused):
            return False
        return body.get("ended") is True

    #: Same as :meth:`give_back`.
    end = give_back

    def __repr__(self) -> str:
        return (
            f"Borrowed(session_id={self.session_id!r}, fence={self.fence}, "
            f"borrowed_until={self.borrowed_until!r})"
        )


def _parse_rfc3339(text: Any) -> Optional[_dt.datetime]:
    if not isinstance(text, str):
        return None
    t = text.strip()
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    # Python < 3.11 takes only 3 or 6 fraction digits.
    if "." in t:
        head, _, rest = t.partition(".")
        digits = ""
        while rest and rest[0].isdigit():
            digits, rest = digits + rest[0], rest[1:]
        t = f"{head}.{(digits + '000000')[:6]}{rest}"
    try:
        value = _dt.datetime.fromisoformat(t)
    except ValueError:
        return None
    if value.tzinfo is None:
        return None
    return value.astimezone(_dt.timezone.utc)


def _borrowed_from(
    api: "Api", access_key: str, body: Dict[str, Any], info: "StartInfo"
) -> Borrowed:
    """The answer of a borrow; with a pinned key the token is checked too
    (bar its expiry) and must be for the session the answer names."""
    from .errors import ServerUnreachable

    until = body.get("borrowed_until")
    token = body.get("lease_token")
    if not isinstance(until, str):
        raise ServerUnreachable("the server's borrow answer lacks borrowed_until")
    if not isinstance(token, str):
        raise ServerUnreachable("the server's borrow answer lacks lease_token")
    claims = None
    if api.pinned:
        claims = _check(token, api.pinned, None)
        if claims.sub != info.session_id or claims.fence != info.fence:
            raise InvalidLeaseToken(
                LeaseTokenProblem.MALFORMED,
                f"the token is for session {claims.sub} (fence {claims.fence}), "
                f"not the borrowed {info.session_id} (fence {info.fence})",
            )
    return Borrowed(api, access_key, info, until, token, claims)

