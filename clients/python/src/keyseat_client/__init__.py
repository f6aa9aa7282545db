"""keyseat_client: the device side of a keyseat license seat server.

::

    from keyseat_client import Client, InvalidKey, SeatsFull

    client = Client("https://licenses.example.com", key, device_name="Ana's laptop")
    session = client.start()          # raises InvalidKey, SeatsFull, ...
    if session.previous_session_terminated:
        print("Previous session on another device was disconnected")
    session.on_lost(lambda reason, other_device: print("License lost:", reason, other_device))
    ...                                # the app runs; heartbeats run on a daemon thread
    session.end()

Standard library only; Python 3.9+. Verifying signed answers
(``public_key=``) needs ``cryptography``: ``pip install 'keyseat-client[verify]'``.
"""

from ._version import __version__
from .api import DEFAULT_TIMEOUT, Api
from .errors import (
    BorrowNotAllowed,
    ConfigError,
    InvalidLeaseToken,
    InvalidKey,
    InvalidKeyFormat,
    InvalidRequest,
    KeyExpired,
    KeyRefused,
    KeyRevoked,
    KeyseatError,
    KeySuspended,
    PayloadTooLarge,
    RateLimited,
    SeatsFull,
    ServerUnreachable,
    SessionEnded,
    SessionExpired,
    SessionGone,
    SessionIdTaken,
    SessionNotFound,
    SessionRevoked,
    SessionSuperseded,
    Unauthorized,
    UntrustedAnswer,
    CertificateNotTrusted,
    VerificationUnavailable,
)
from .fingerprint import machine_fingerprint
from .keys import check_access_key, is_access_key
from .lease import Borrowed, LeaseClaims, LeaseTokenProblem, verify_lease_token
from .signing import Forgery, PinnedKey
from .session import (
    Client,
    HeartbeatFailed,
    HeartbeatRecovered,
    LostCallback,
    LostInfo,
    LostReason,
    Session,
    SessionEvent,
    SessionLost,
    SessionState,
    StartInfo,
    TerminatedDevice,
)

__all__ = [
    "__version__",
    "Api",
    "Borrowed",
    "BorrowNotAllowed",
    "Client",
    "ConfigError",
    "DEFAULT_TIMEOUT",
    "HeartbeatFailed",
    "HeartbeatRecovered",
    "InvalidKey",
    "InvalidLeaseToken",
    "LeaseClaims",
    "LeaseTokenProblem",
    "InvalidKeyFormat",
    "InvalidRequest",
    "KeyExpired",
    "KeyRefused",
    "KeyRevoked",
    "KeySuspended",
    "KeyseatError",
    "LostCallback",
    "LostInfo",
    "LostReason",
    "PayloadTooLarge",
    "RateLimited",
    "SeatsFull",
    "ServerUnreachable",
    "Session",
    "SessionEnded",
    "SessionEvent",
    "SessionExpired",
    "SessionGone",
    "SessionIdTaken",
    "SessionLost",
    "SessionNotFound",
    "SessionRevoked",
    "SessionState",
    "SessionSuperseded",
    "StartInfo",
    "TerminatedDevice",
    "Unauthorized",
    "UntrustedAnswer",
    "CertificateNotTrusted",
    "VerificationUnavailable",
    "Forgery",
    "PinnedKey",
    "check_access_key",
    "is_access_key",
    "machine_fingerprint",
    "verify_lease_token",
]
