"""The device side: :class:`Client` starts a :class:`Session`, whose
heartbeats run on a daemon thread.

What it gets right so the app does not have to:

- the start is retried with the same client-chosen session id, which the
  server treats as the same start, so a lost answer never costs a seat;
- heartbeats follow the interval the server returns, and by default the
  server holds each one until the next is due (the waiting heartbeat), so a
  takeover or an administrator's kick reaches the app within milliseconds
  instead of up to an interval later; transient failures (no
  connection, timeouts, 5xx, 429 with ``Retry-After``) are retried with
  backoff and jitter while the lease the server last granted lasts, so a
  server restart or a short outage never loses the session; only when the
  lease runs out is it lost as :attr:`LostReason.UNREACHABLE` (or
  :attr:`LostReason.UNTRUSTED` when, with a pinned public key, the last
  answers failed the signature check);
- a terminal answer (superseded, expired, ended, revoked, key refused), or
  a refused TLS certificate (:attr:`LostReason.CERTIFICATE`), stops
  the heartbeats at once and reaches the app through :meth:`Session.on_lost`,
  :meth:`Session.wait_lost` and :attr:`Session.state`;
- :meth:`Session.end` (and leaving a ``with`` block, and interpreter exit)
  end the session on the server without waiting for a heartbeat interval.
"""

from __future__ import annotations

import atexit
import enum
import logging
import random
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from .api import DEFAULT_TIMEOUT, Api
from .errors import (
    ConfigError,
    KeyRefused,
    KeyseatError,
    ServerUnreachable,
    SessionNotFound,
    UntrustedAnswer,
)
from .lease import Borrowed, _borrowed_from
from .signing import PublicKeys
from .keys import check_access_key, redact

__all__ = [
    "Client",
    "Session",
    "SessionState",
    "LostReason",
    "LostInfo",
    "StartInfo",
    "TerminatedDevice",
    "HeartbeatFailed",
    "HeartbeatRecovered",
    "SessionLost",
    "SessionEvent",
    "LostCallback",
    "backoff",
    "held_for",
    "next_wait",
]

log = logging.getLogger("keyseat_client")

#: How long ending a session waits for the server when leaving a ``with``
#: block or at interpreter exit.
EXIT_END_TIMEOUT = 2.0
#: First retry delay after a failed heartbeat (seconds); doubles per failure.
FIRST_RETRY = 0.5
#: Cap of the delay between start attempts (seconds).
START_RETRY_CAP = 5.0


class LostReason(str, enum.Enum):
    """Why a session is no longer usable."""

    #: Another device started with the same key and took this seat.
    SUPERSEDED = "superseded"
    #: The server had no heartbeat for a whole timeout.
    EXPIRED = "expired"
    #: The session was ended by another call (e.g. another process).
    ENDED = "ended"
    #: An administrator ended the session (or revoked its key meanwhile).
    REVOKED = "revoked"
    #: The key was refused: ``invalid_key``, ``key_revoked``,
    #: ``key_suspended`` or ``key_expired``.
    KEY_REFUSED = "key_refused"
    #: The server does not know the session (history pruned, other server).
    NOT_FOUND = "not_found"
    #: No answer from the server until the lease it last granted ran out.
    UNREACHABLE = "unreachable"
    #: Only answers that failed the signature check (with a pinned public
    #: key) until the lease ran out: something answers in the server's place.
    UNTRUSTED = "untrusted"
    #: A heartbeat's TLS handshake refused the server's certificate
    #: (:class:`~keyseat_client.CertificateNotTrusted`): lost at once, not
    #: retried, since a certificate does not heal within a lease.
    CERTIFICATE = "certificate"
    #: Another refusal the client does not expect (a bug on either side).
    REJECTED = "rejected"

    def __str__(self) -> str:
        return self.value


class SessionState(str, enum.Enum):
    """What a session is doing now."""

    #: Heartbeats are succeeding.
    ACTIVE = "active"
    #: Heartbeats are failing transiently; the session stays valid until the
    #: lease runs out (see :attr:`Session.lease_left`).
    RETRYING = "retrying"
    #: The session is over; the app should stop licensed work.
    LOST = "lost"
    #: The app ended it.
    ENDED = "ended"
    #: The app borrowed it (:meth:`Session.borrow`): the server holds the
    #: seat without heartbeats, and the :class:`~keyseat_client.Borrowed`
    #: the borrow returned is what to keep (and to give the seat back with).
    BORROWED = "borrowed"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class LostInfo:
    """The details of a loss: the reason, and for a takeover the other
    device's name; ``code``/``message`` are the server's for refusals, the
    last error for :attr:`LostReason.UNREACHABLE`."""

    reason: LostReason
    #: For :attr:`LostReason.SUPERSEDED`: the device that took over, if it
    #: gave a name.
    device_name: Optional[str] = None
    #: For :attr:`LostReason.SUPERSEDED`: when it started (RFC 3339).
    at: Optional[str] = None
    #: The contract's error code of the answer, if any.
    code: Optional[str] = None
    #: The server's message, or what went wrong.
    message: str = ""

    def __str__(self) -> str:
        r = self.reason
        if r is LostReason.SUPERSEDED:
            if self.device_name is not None:
                return (
                    f'superseded: device "{self.device_name}" started with the '
                    "same access key"
                )
            return "superseded: another device started with the same access key"
        if r is LostReason.EXPIRED:
            return "expired: the server missed this device's heartbeats"
        if r is LostReason.ENDED:
            return "ended elsewhere"
        if r is LostReason.REVOKED:
            return "revoked by an administrator"
        if r is LostReason.KEY_REFUSED:
            return f"key refused ({self.code}): {self.message}"
        if r is LostReason.NOT_FOUND:
            return "the server no longer knows this session"
        if r is LostReason.UNREACHABLE:
            return (
                "unreachable: no answer from the server before the lease ran out "
                f"({self.message})"
            )
        if r is LostReason.UNTRUSTED:
            return (
                "untrusted: no answer that passed the signature check before the "
                f"lease ran out ({self.message})"
            )
        if r is LostReason.CERTIFICATE:
            return self.message
        return f"rejected ({self.code}): {self.message}"


def _lost_after(
    error: Optional[KeyseatError], forged: Optional[UntrustedAnswer] = None
) -> LostInfo:
    """Why a session whose lease ran out between failed heartbeats is lost:
    untrusted when an answer since the last trusted one failed the signature
    check (``forged``; the very last attempt, whose budget is the little
    lease left, often gets no answer at all), unreachable otherwise."""
    if forged is not None:
        return LostInfo(LostReason.UNTRUSTED, code=forged.code, message=forged.message)
    if isinstance(error, UntrustedAnswer):
        return LostInfo(LostReason.UNTRUSTED, code=error.code, message=error.message)
    if error is None:
        return LostInfo(LostReason.UNREACHABLE, message="heartbeats kept failing")
    return LostInfo(LostReason.UNREACHABLE, message=error.describe())


@dataclass(frozen=True)
class TerminatedDevice:
    """A device whose session this start ended."""

    session_id: str
    device_name: Optional[str] = None
    #: Its last heartbeat (RFC 3339, server time).
    last_heartbeat: Optional[str] = None


@dataclass(frozen=True)
class StartInfo:
    """What the server said when the session started."""

    session_id: str
    #: Strictly increasing per key, so work from a superseded device can be
    #: told apart.
    fence: int
    #: Whether starting here ended another device's session.
    previous_session_terminated: bool
    #: The sessions it ended.
    terminated: Tuple[TerminatedDevice, ...]
    #: Seconds between heartbeats the server asked for.
    heartbeat_interval: float
    #: Seconds the server keeps a silent session.
    session_timeout: float
    started_at: Optional[str] = None
    expires_at: Optional[str] = None


@dataclass(frozen=True)
class HeartbeatFailed:
    """A heartbeat failed transiently and will be retried."""

    #: Failed attempts in a row.
    attempt: int
    #: What went wrong.
    error: str
    #: Seconds left on the lease.
    lease_left: float


@dataclass(frozen=True)
class HeartbeatRecovered:
    """A heartbeat succeeded after failures."""

    failed_attempts: int


@dataclass(frozen=True)
class SessionLost:
    """The session was lost."""

    info: LostInfo


#: What the ``on_event`` hook of a :class:`Client` receives.
SessionEvent = Union[HeartbeatFailed, HeartbeatRecovered, SessionLost]
#: ``callback(reason, other_device_name)``; the name is set for takeovers.
LostCallback = Callable[[LostReason, Optional[str]], Any]


def backoff(attempt: int, cap: float, retry_after: Optional[float] = None) -> float:
    """Exponential backoff with "equal jitter" (half fixed, half random):
    0.5 s for the first failure, doubling, capped at ``cap``, and never
    shorter than a server's ``Retry-After``."""
    exp = FIRST_RETRY * float(1 << min(max(attempt, 1) - 1, 16))
    half = min(exp, cap) / 2
    delay = half + random.uniform(0, half)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def held_for(interval: float) -> int:
    """How long to ask the server to hold a heartbeat (``wait_seconds``),
    in whole seconds: a little under the interval (a sixth of it, at least a
    second, is left for the network), 0 (plain heartbeats) for an interval
    too short to hold: 30 s -> 25, 2 s -> 1, 1 s -> 0."""
    secs = int(interval)
    return max(secs - max(secs // 6, 1), 0)


def hold_for(interval: float, lease_left: float, call_timeout: float) -> int:
    """How long to hold the next heartbeat: :func:`held_for` the interval,
    but leaving room in the lease for the held call's own timeout and one
    retry (a held heartbeat silently dropped fails only after the hold plus
    the call's timeout), and 0 (a plain heartbeat, then an interval) when
    that room is under half a full hold, so a short lease never turns into a
    request every second. With the defaults (30 s interval, 60 s lease, 10 s
    calls) holds alternate 25 s and 15 s."""
    full = held_for(interval)
    room = max(int(lease_left - 2 * call_timeout), 0)
    hold = min(full, room)
    return 0 if hold * 2 < full else hold


def next_wait(hold: int, took: float, interval: float) -> float:
    """The pause (seconds) before the next heartbeat after a 200: none after
    one the server held (at least half the hold), so the next is held in
    turn; an interval after a plain one or one answered at once (a server
    before the waiting heartbeat ignores ``wait_seconds``): never a tight
    loop."""
    if hold > 0 and took >= hold / 2:
        return 0.0
    return interval


def _lost_from_error(e: KeyseatError) -> LostInfo:
    code = e.code
    if code == "session_superseded":
        by = e.error.get("superseded_by")
        by = by if isinstance(by, dict) else {}
        name = by.get("device_name")
        at = by.get("started_at")
        return LostInfo(
            LostReason.SUPERSEDED,
            device_name=name if isinstance(name, str) else None,
            at=at if isinstance(at, str) else None,
            code=code,
            message=e.message,
        )
    simple = {
        "session_expired": LostReason.EXPIRED,
        "session_ended": LostReason.ENDED,
        "session_revoked": LostReason.REVOKED,
        "session_not_found": LostReason.NOT_FOUND,
        "invalid_key": LostReason.KEY_REFUSED,
        "key_revoked": LostReason.KEY_REFUSED,
        "key_suspended": LostReason.KEY_REFUSED,
        "key_expired": LostReason.KEY_REFUSED,
        "certificate": LostReason.CERTIFICATE,
    }
    return LostInfo(simple.get(code, LostReason.REJECTED), code=code, message=e.message)


def _seconds(body: Dict[str, Any], name: str) -> Optional[float]:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return None
    return float(value)


def _parse_start(body: Dict[str, Any]) -> StartInfo:
    def bad(name: str) -> ServerUnreachable:
        return ServerUnreachable(f"the server's start answer lacks {name}")

    session_id = body.get("session_id")
    if not isinstance(session_id, str):
        raise bad("session_id")
    fence = body.get("fence")
    if isinstance(fence, bool) or not isinstance(fence, int):
        raise bad("fence")
    interval = _seconds(body, "heartbeat_interval_seconds")
    if interval is None:
        raise bad("heartbeat_interval_seconds")
    timeout = _seconds(body, "session_timeout_seconds")
    if timeout is None:
        raise bad("session_timeout_seconds")
    terminated: List[TerminatedDevice] = []
    raw = body.get("terminated_sessions")
    if isinstance(raw, list):
        for t in raw:
            if not isinstance(t, dict):
                continue
            sid, name, hb = t.get("session_id"), t.get("device_name"), t.get("last_heartbeat")
            terminated.append(
                TerminatedDevice(
                    session_id=sid if isinstance(sid, str) else "",
                    device_name=name if isinstance(name, str) else None,
                    last_heartbeat=hb if isinstance(hb, str) else None,
                )
            )
    started_at, expires_at = body.get("started_at"), body.get("expires_at")
    return StartInfo(
        session_id=session_id,
        fence=fence,
        previous_session_terminated=body.get("previous_session_terminated") is True,
        terminated=tuple(terminated),
        heartbeat_interval=max(interval, 1.0),
        session_timeout=timeout,
        started_at=started_at if isinstance(started_at, str) else None,
        expires_at=expires_at if isinstance(expires_at, str) else None,
    )


class Client:
    """Connection settings for one access key.

    The key's checksum is checked here, so a typo raises
    :class:`~keyseat_client.InvalidKeyFormat` (an
    :class:`~keyseat_client.InvalidKey`) at once, without a request; a
    server URL that is not ``http(s)://host`` raises
    :class:`~keyseat_client.ConfigError`.

    :param device_name: shown to the other device when this one takes over,
        and to operators.
    :param fingerprint: a stable device fingerprint (see
        :func:`~keyseat_client.machine_fingerprint`): lets the same device
        restart at once on a ``reject``-policy key.
    :param timeout: the time budget of each HTTP call, in seconds.
    :param start_attempts: how many times a start is tried on transient
        failures (same session id each time).
    :param on_event: called from the heartbeat thread with every
        :data:`SessionEvent` (failed heartbeats, recovery, loss); keep it quick.
    :param public_key: the server's public signing key, the base64url text
        ``keyseat signing-key show --pin`` prints, or a list of them (during
        a rotation). Every request then carries a fresh nonce, and an answer
        not signed by one of them for this request and this key raises
        :class:`~keyseat_client.UntrustedAnswer` (retried like no answer;
        a session is lost as :attr:`LostReason.UNTRUSTED`). Needs the
        ``cryptography`` package (``pip install 'keyseat-client[verify]'``):
        without it this raises
        :class:`~keyseat_client.VerificationUnavailable`.
    :param waiting_heartbeats: whether heartbeats ask the server to hold
        them until the next is due (``wait_seconds``, a sixth under the
        interval), so a takeover or a kick reaches :meth:`Session.on_lost`
        within milliseconds with still one request per interval. Default on;
        off, one plain heartbeat per interval. Against a server that
        answers at once (one before the waiting heartbeat) the client falls
        back to one per interval by itself. Intervals under 2 s are never
        held.
    :param cafile: a PEM file of CA certificates trusted besides the
        operating system's store (a server whose certificate comes from a
        private CA); a missing or non-PEM file raises
        :class:`~keyseat_client.ConfigError`. A refused certificate raises
        :class:`~keyseat_client.CertificateNotTrusted`.
    """

    def __init__(
        self,
        server_url: str,
        access_key: str,
        device_name: Optional[str] = None,
        fingerprint: Optional[str] = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        start_attempts: int = 3,
        on_event: Optional[Callable[[SessionEvent], Any]] = None,
        public_key: Optional[PublicKeys] = None,
        waiting_heartbeats: bool = True,
        cafile: Optional[str] = None,
    ) -> None:
        self._access_key = check_access_key(access_key)
        self._api = Api(server_url, timeout, public_key=public_key, cafile=cafile)
        self.device_name = device_name
        self.fingerprint = fingerprint
        self.start_attempts = max(int(start_attempts), 1)
        self.on_event = on_event
        self.waiting_heartbeats = bool(waiting_heartbeats)

    @property
    def api(self) -> Api:
        """The low-level API, for calls this class does not wrap."""
        return self._api

    @property
    def server_url(self) -> str:
        return self._api.base

    @property
    def key_prefix(self) -> str:
        """``ks_`` and the first 8 characters of the key: safe to show."""
        return redact(self._access_key)

    def __repr__(self) -> str:
        return (
            f"Client(server={self._api.base!r}, key={self.key_prefix!r}, "
            f"device_name={self.device_name!r})"
        )

    def status(self) -> Dict[str, Any]:
        """The key's live sessions (``POST /api/session/status``)."""
        return self._api.status(self._access_key)

    def borrow(self, hours: int, session_id: Optional[str] = None) -> "Borrowed":
        """Borrows a seat for ``hours`` (1 up to the key's
        ``max_borrow_hours``) for offline use: the server holds it without
        heartbeats until :attr:`Borrowed.borrowed_until` (or
        :meth:`Borrowed.give_back`), never superseded. Keep
        :attr:`Borrowed.lease_token` and check it offline with
        :func:`~keyseat_client.verify_lease_token`.

        ``session_id`` borrows that live session of this device (same
        fence); to borrow a running :class:`Session`, prefer
        :meth:`Session.borrow`, which also stops its heartbeats. Transient
        failures are retried (``start_attempts`` in all) with the same
        session id, which the server treats as the same borrow. With a
        pinned public key the answer is verified like a start's, and the
        token too (bar its expiry, which is for the offline check).

        Raises :class:`~keyseat_client.BorrowNotAllowed` (403
        ``borrow_not_allowed``: borrowing is off for the key),
        :class:`~keyseat_client.InvalidRequest` (400 ``invalid_request``:
        more hours than the key allows, or 0),
        :class:`~keyseat_client.SeatsFull` (409 ``seats_full``), a
        :class:`~keyseat_client.KeyRefused` subclass,
        :class:`~keyseat_client.ServerUnreachable`,
        :class:`~keyseat_client.UntrustedAnswer`, ...
        """
        if isinstance(hours, bool) or not isinstance(hours, int) or hours < 0:
            raise ConfigError("hours must be a whole number of hours (1 up to the key's max_borrow_hours)")
        sid = session_id if session_id is not None else str(uuid.uuid4())
        attempt = 0
        while True:
            attempt += 1
            try:
                body = self._api.borrow(
                    self._access_key, hours, sid, self.device_name, self.fingerprint
                )
                break
            except KeyseatError as e:
                if e.transient and attempt < self.start_attempts:
                    time.sleep(backoff(attempt, START_RETRY_CAP, e.retry_after))
                    continue
                raise
        return _borrowed_from(self._api, self._access_key, body, _parse_start(body))

    def start(self) -> "Session":
        """Starts a session and its heartbeat thread.

        Transient failures are retried (``start_attempts`` in all) with the
        same session id, which the server treats as the same start. Raises
        :class:`~keyseat_client.SeatsFull`, a
        :class:`~keyseat_client.KeyRefused` subclass,
        :class:`~keyseat_client.ServerUnreachable`,
        :class:`~keyseat_client.UntrustedAnswer`, ...
        """
        session_id = str(uuid.uuid4())
        attempt = 0
        while True:
            attempt += 1
            sent_at = time.monotonic()
            try:
                body = self._api.start(
                    self._access_key, session_id, self.device_name, self.fingerprint
                )
                break
            except KeyseatError as e:
                if e.transient and attempt < self.start_attempts:
                    time.sleep(backoff(attempt, START_RETRY_CAP, e.retry_after))
                    continue
                raise
        info = _parse_start(body)
        session = Session(
            self._api,
            self._access_key,
            info,
            sent_at,
            self.on_event,
            self.device_name,
            self.fingerprint,
            waiting_heartbeats=self.waiting_heartbeats,
        )
        session._start_heartbeats()
        return session


class Session:
    """A live session; get one from :meth:`Client.start`.

    Keep a reference for as long as the app is licensed: the session lives
    until :meth:`end`, the end of a ``with`` block, or interpreter exit
    (which ends still-live sessions, waiting at most 2 s for the server).
    """

    def __init__(
        self,
        api: Api,
        access_key: str,
        info: StartInfo,
        lease_from: float,
        on_event: Optional[Callable[[SessionEvent], Any]] = None,
        device_name: Optional[str] = None,
        fingerprint: Optional[str] = None,
        *,
        waiting_heartbeats: bool = True,
    ) -> None:
        self._api = api
        self._waiting = waiting_heartbeats
        self._device_name = device_name
        self._fingerprint = fingerprint
        self._access_key = access_key
        self._info = info
        self._on_event = on_event
        self._cond = threading.Condition(threading.Lock())
        # Everything below is guarded by _cond.
        self._state = SessionState.ACTIVE
        self._stop = False
        self._lost: Optional[LostInfo] = None
        self._interval = info.heartbeat_interval
        # The lease: when the last successful heartbeat (or the start) was
        # sent, plus the timeout. The server's own deadline is never earlier.
        self._lease_deadline = lease_from + info.session_timeout
        self._failed_attempts = 0
        self._on_lost: List[LostCallback] = []
        self._thread: Optional[threading.Thread] = None

    def _start_heartbeats(self) -> None:
        _live_sessions.add(self)
        self._thread = threading.Thread(
            target=self._heartbeat_loop, name="keyseat-heartbeat", daemon=True
        )
        self._thread.start()

    # -- what the server said at the start ----------------------------------

    @property
    def info(self) -> StartInfo:
        return self._info

    @property
    def session_id(self) -> str:
        return self._info.session_id

    @property
    def fence(self) -> int:
        """Strictly increasing per key."""
        return self._info.fence

    @property
    def previous_session_terminated(self) -> bool:
        """Whether starting here ended another device's session; show
        "previous session on another device was disconnected"."""
        return self._info.previous_session_terminated

    @property
    def terminated(self) -> Tuple[TerminatedDevice, ...]:
        """The devices whose sessions this start ended."""
        return self._info.terminated

    @property
    def session_timeout(self) -> float:
        return self._info.session_timeout

    # -- now ------------------------------------------------------------------

    @property
    def heartbeat_interval(self) -> float:
        """The interval the server asked for most recently (seconds)."""
        with self._cond:
            return self._interval

    @property
    def state(self) -> SessionState:
        with self._cond:
            return self._state

    @property
    def lost(self) -> Optional[LostInfo]:
        """Why the session was lost, or ``None`` while it is not."""
        with self._cond:
            return self._lost

    @property
    def is_usable(self) -> bool:
        """Whether licensed work may continue (active, or retrying within
        the lease)."""
        with self._cond:
            return self._state in (SessionState.ACTIVE, SessionState.RETRYING)

    @property
    def failed_attempts(self) -> int:
        """Heartbeats failed in a row (0 when active)."""
        with self._cond:
            return self._failed_attempts

    @property
    def lease_left(self) -> float:
        """Seconds until the lease the server last granted runs out."""
        with self._cond:
            return max(self._lease_deadline - time.monotonic(), 0.0)

    def __repr__(self) -> str:
        return (
            f"Session(session_id={self.session_id!r}, fence={self.fence}, "
            f"state={self.state.value!r})"
        )

    # -- being told -------------------------------------------------------------

    def on_lost(self, callback: LostCallback) -> LostCallback:
        """Registers ``callback(reason, other_device_name)``, called once,
        from the heartbeat thread, when the session is lost (at once, on
        this thread, if it already is). ``other_device_name`` is the name of
        the device that took over for :attr:`LostReason.SUPERSEDED`, else
        ``None``. Not called when the app ends the session itself. Keep it
        quick and hand the news to your UI thread; exceptions it raises are
        logged. Returns ``callback``, so it works as a decorator."""
        with self._cond:
            if self._state is SessionState.LOST:
                info = self._lost
            else:
                if self._state is not SessionState.ENDED:
                    self._on_lost.append(callback)
                return callback
        assert info is not None
        _call_safely(callback, info.reason, info.device_name)
        return callback

    def wait_lost(self, timeout: Optional[float] = None) -> Optional[LostReason]:
        """Blocks until the session is lost (returning why), the app ends it
        (``None``), or ``timeout`` seconds pass (``None``; ``None`` waits
        forever). :attr:`lost` has the details."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._state
                in (SessionState.LOST, SessionState.ENDED, SessionState.BORROWED),
                timeout,
            )
            return self._lost.reason if self._lost is not None else None

    # -- ending -------------------------------------------------------------------

    def end(self, timeout: Optional[float] = None) -> bool:
        """Ends the session: stops the heartbeats at once and tells the
        server. Returns whether the server still had it live (``False`` if
        it had already ended, e.g. superseded, or was lost, or ``end`` was
        called before). Never raises for a session that was already lost or
        ended; for a live one it raises what the server call raised (e.g.
        :class:`~keyseat_client.ServerUnreachable`)."""
        with self._cond:
            was_lost = self._state is SessionState.LOST
            if self._state in (SessionState.ENDED, SessionState.BORROWED):
                # A borrowed seat is given back with Borrowed.give_back(),
                # never by leaving a `with` block or at interpreter exit.
                return False
            self._stop = True
            if not was_lost:
                self._state = SessionState.ENDED
            self._cond.notify_all()
        _live_sessions.discard(self)
        # A lost session may still be live on the server (unreachable):
        # ending it frees the seat as soon as the server is back.
        try:
            body = self._api.end(self._access_key, self._info.session_id, timeout)
        except KeyseatError as e:
            if was_lost or isinstance(e, (KeyRefused, SessionNotFound)):
                return False
            raise
        return body.get("ended") is True

    def borrow(self, hours: int, timeout: Optional[float] = None) -> Borrowed:
        """Borrows this session for ``hours`` (1 up to the key's
        ``max_borrow_hours``) before going offline: same session, same
        fence. On success the heartbeats stop and :attr:`state` becomes
        :attr:`SessionState.BORROWED`; :meth:`end`, leaving a ``with`` block
        and interpreter exit then leave the seat borrowed (give it back
        with :meth:`Borrowed.give_back`). On failure (raised as by
        :meth:`Client.borrow`) the session goes on heartbeating."""
        if isinstance(hours, bool) or not isinstance(hours, int) or hours < 0:
            raise ConfigError("hours must be a whole number of hours (1 up to the key's max_borrow_hours)")
        with self._cond:
            if self._state not in (SessionState.ACTIVE, SessionState.RETRYING):
                raise ConfigError(f"the session is {self._state.value}: only a live session can be borrowed")
        body = self._api.borrow(
            self._access_key,
            hours,
            self._info.session_id,
            self._device_name,
            self._fingerprint,
            timeout,
        )
        borrowed = _borrowed_from(self._api, self._access_key, body, _parse_start(body))
        with self._cond:
            self._stop = True
            if self._state in (SessionState.ACTIVE, SessionState.RETRYING):
                self._state = SessionState.BORROWED
            self._cond.notify_all()
        _live_sessions.discard(self)
        return borrowed

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.end(EXIT_END_TIMEOUT)
        except KeyseatError as e:
            log.warning("keyseat: ending session %s failed: %s", self.session_id, e)

    # -- the heartbeat thread ---------------------------------------------------

    def _emit(self, event: SessionEvent) -> None:
        if self._on_event is not None:
            _call_safely(self._on_event, event)

    def _lose(self, info: LostInfo) -> None:
        """Records a loss (once) unless the app already ended the session."""
        with self._cond:
            if self._stop or self._state in (SessionState.LOST, SessionState.ENDED):
                return
            self._state = SessionState.LOST
            self._lost = info
            self._stop = True
            callbacks, self._on_lost = self._on_lost, []
            self._cond.notify_all()
        self._emit(SessionLost(info))
        for callback in callbacks:
            _call_safely(callback, info.reason, info.device_name)

    def _heartbeat_loop(self) -> None:
        failures = 0
        error: Optional[KeyseatError] = None
        forged: Optional[UntrustedAnswer] = None
        with self._cond:
            wait = self._interval
        if self._waiting and held_for(wait) > 0:
            # Held from the start, so a takeover right after it is told too.
            wait = 0.0
        while True:
            with self._cond:
                if self._cond.wait_for(lambda: self._stop, wait):
                    return
                lease_out = failures > 0 and time.monotonic() >= self._lease_deadline
            if lease_out:
                self._lose(_lost_after(error, forged))
                return
            sent_at = time.monotonic()
            with self._cond:
                lease_left = max(self._lease_deadline - sent_at, 0.0)
                interval = self._interval
            # A call never outlives the lease while retrying: past it the
            # session is lost anyway. After a silent stretch with no failure
            # (e.g. the process was suspended) one call is still sent, so the
            # server can say what happened (usually session_expired).
            budget = lease_left if failures > 0 else max(lease_left, 0.5)
            # Held by the server a little under the interval, so the end of
            # the session is told at once; never while retrying, when every
            # second of the lease counts. A held call's budget is the hold
            # plus the client's timeout.
            hold = (
                hold_for(interval, lease_left, self._api.timeout)
                if self._waiting and failures == 0
                else 0
            )
            try:
                if hold > 0:
                    body = self._api.heartbeat(
                        self._access_key, self._info.session_id, wait_seconds=hold
                    )
                else:
                    body = self._api.heartbeat(
                        self._access_key, self._info.session_id, max(budget, 0.001)
                    )
            except KeyseatError as e:
                if not e.transient:
                    self._lose(_lost_from_error(e))
                    return
                error = e
                if isinstance(e, UntrustedAnswer):
                    forged = e
            except Exception as e:  # a bug here must not kill the thread silently
                log.exception("keyseat: unexpected error in a heartbeat")
                error = ServerUnreachable(f"{type(e).__name__}: {e}")
            else:
                new_interval = _seconds(body, "heartbeat_interval_seconds")
                with self._cond:
                    if self._stop:
                        return
                    self._lease_deadline = sent_at + self._info.session_timeout
                    if new_interval is not None:
                        self._interval = max(new_interval, 1.0)
                    self._state = SessionState.ACTIVE
                    self._failed_attempts = 0
                    wait = next_wait(hold, time.monotonic() - sent_at, self._interval)
                if failures > 0:
                    self._emit(HeartbeatRecovered(failures))
                failures = 0
                forged = None
                continue

            # A transient failure: retry within the lease.
            failures += 1
            with self._cond:
                if self._stop:
                    return
                left = max(self._lease_deadline - time.monotonic(), 0.0)
                self._state = SessionState.RETRYING
                self._failed_attempts = failures
                interval = self._interval
            if left <= 0:
                self._lose(_lost_after(error, forged))
                return
            self._emit(HeartbeatFailed(failures, error.describe(), left))
            # Retry sooner than the interval, but never past the lease.
            wait = min(backoff(failures, interval, error.retry_after), left)


def _call_safely(callback: Callable[..., Any], *args: Any) -> None:
    try:
        callback(*args)
    except Exception:
        log.exception("keyseat: a callback raised")


# Sessions still heartbeating, ended at interpreter exit.
_live_sessions: "weakref.WeakSet[Session]" = weakref.WeakSet()


@atexit.register
def _end_live_sessions() -> None:
    for session in list(_live_sessions):
        if session.state in (SessionState.ACTIVE, SessionState.RETRYING):
            try:
                session.end(EXIT_END_TIMEOUT)
            except Exception:
                pass
