"""``python -m keyseat_client``: the library in a terminal, behaving like the
Rust ``keyseat client`` (same lines, same exit codes).

Exit codes:

== ==========================================================================
0  ended by the user (Ctrl-C or SIGTERM); the session was ended. A first
   signal while the session is still starting lets the start finish and then
   ends the session it got (the seat is free at once); a second one gives up
   at once with 128 + the signal's number, so a hung server cannot hold
   Ctrl-C hostage
1  something else went wrong (bad URL, unexpected answer)
3  another device started with the same key and took the seat
4  the server expired the session (missed heartbeats)
5  an administrator ended the session, or it was ended elsewhere / unknown
6  the key was refused: typo, unknown, revoked, suspended or expired
7  the server could not be reached before the lease ran out
8  all seats are in use and the key's policy is ``reject``
9  answers failed the signature check with the pinned key (``--public-key``),
   or (``--borrow``) the lease token did not verify with it
10 ``--borrow``: the key does not allow borrowing, or not that many hours
11 the server's TLS certificate was refused (unknown issuer: see
   ``--ca-file``; another name; expired)
== ==========================================================================

``--borrow HOURS`` borrows the seat for offline use instead of
heartbeating: it prints the session, ``borrowed_until`` and the lease token
(checked offline with ``--public-key`` when given) and exits 0 at once,
leaving the seat borrowed (no heartbeat loop; give it back early with
``/api/session/end`` or an admin kick). If the answer or the lease token
is not trusted (exit 9), the seat is given back, as by the Rust client.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import uuid
from typing import List, Optional

from .errors import (
    BorrowNotAllowed,
    CertificateNotTrusted,
    ConfigError,
    InvalidLeaseToken,
    InvalidRequest,
    InvalidKeyFormat,
    KeyRefused,
    KeyseatError,
    SeatsFull,
    ServerUnreachable,
    UntrustedAnswer,
    VerificationUnavailable,
)
from .fingerprint import machine_fingerprint
from .lease import verify_lease_token
from .signing import pinned_keys
from .session import (
    Client,
    HeartbeatFailed,
    HeartbeatRecovered,
    LostReason,
    SessionEvent,
)

__all__ = ["main", "EXIT_CODES"]

ENDED_BY_USER = 0
ERROR = 1
SUPERSEDED = 3
EXPIRED = 4
REVOKED = 5
KEY_REFUSED = 6
UNREACHABLE = 7
SEATS_FULL = 8
UNTRUSTED = 9
BORROW_REFUSED = 10
CERTIFICATE = 11
USAGE = 2

#: The exit code for each way a session can be lost.
EXIT_CODES = {
    LostReason.SUPERSEDED: SUPERSEDED,
    LostReason.EXPIRED: EXPIRED,
    LostReason.REVOKED: REVOKED,
    LostReason.ENDED: REVOKED,
    LostReason.NOT_FOUND: REVOKED,
    LostReason.KEY_REFUSED: KEY_REFUSED,
    LostReason.UNREACHABLE: UNREACHABLE,
    LostReason.UNTRUSTED: UNTRUSTED,
    LostReason.CERTIFICATE: CERTIFICATE,
    LostReason.REJECTED: ERROR,
}


def _print_line(text: str) -> None:
    try:
        print(text, flush=True)
    except (BrokenPipeError, ValueError):
        pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m keyseat_client",
        description=(
            "Start a keyseat session and keep it alive until Ctrl-C/SIGTERM "
            "(exit 0) or until it is lost (exit 3 superseded, 4 expired, "
            "5 revoked, 6 key refused, 7 unreachable, 9 untrusted, 11 certificate "
            "refused; 8 seats full "
            "at start). With --borrow HOURS: borrow the seat for offline use, "
            "print the lease token and exit 0 (10 if the key refuses the borrow)."
        ),
    )
    p.add_argument("--server", required=True, help="Server URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--key", required=True, help="The access key (ks_...).")
    p.add_argument(
        "--device-name",
        help="The name other devices are shown when this one takes over.",
    )
    p.add_argument(
        "--fingerprint",
        help="A device fingerprint, or `machine` for this machine's (hashed) id.",
    )
    p.add_argument(
        "--public-key",
        metavar="BASE64URL",
        help=(
            "The server's public signing key (`keyseat signing-key show --pin`): "
            "answers not signed by it for this request are refused. Needs "
            "keyseat-client[verify]."
        ),
    )
    p.add_argument(
        "--ca-file",
        metavar="PEM_FILE",
        help=(
            "A PEM file of CA certificates to trust besides the system store "
            "(a server whose certificate comes from a private CA)."
        ),
    )
    p.add_argument(
        "--borrow",
        metavar="HOURS",
        type=_hours,
        help=(
            "Borrow the seat for this many hours (offline use) instead of "
            "heartbeating: prints the lease token (checked with --public-key "
            "when given) and exits 0, leaving the seat borrowed."
        ),
    )
    return p


def _hours(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid number of hours: {text!r}")
    return value


def _parse_args(argv: List[str]) -> argparse.Namespace:
    """Parses the command line. A base64url public key may begin with `-`,
    which argparse would take for an option: `--public-key VALUE` is joined
    into `--public-key=VALUE` first, so a pasted key always works."""
    joined: List[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--public-key" and i + 1 < len(argv):
            joined.append(f"--public-key={argv[i + 1]}")
            i += 2
        else:
            joined.append(argv[i])
            i += 1
    return _parser().parse_args(joined)


class _Interrupted(BaseException):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _print_error(text: str) -> None:
    try:
        print(text, file=sys.stderr, flush=True)
    except (BrokenPipeError, ValueError):
        pass


def _fail(e: KeyseatError) -> int:
    _print_error(f"keyseat: cannot start a session: {e}")
    if isinstance(e, InvalidKeyFormat):
        return KEY_REFUSED
    if isinstance(e, SeatsFull):
        return SEATS_FULL
    if isinstance(e, KeyRefused):
        return KEY_REFUSED
    if isinstance(e, ServerUnreachable):
        return UNREACHABLE
    if isinstance(e, UntrustedAnswer):
        return UNTRUSTED
    if isinstance(e, CertificateNotTrusted):
        return CERTIFICATE
    return ERROR


def _on_event(event: SessionEvent) -> None:
    if isinstance(event, HeartbeatFailed):
        _print_line(
            f"heartbeat failed (attempt {event.attempt}): {event.error}; "
            f"session still valid for {int(event.lease_left)} s"
        )
    elif isinstance(event, HeartbeatRecovered):
        _print_line(
            f"heartbeat recovered after {event.failed_attempts} failed attempt(s)"
        )


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the reference client until Ctrl-C/SIGTERM or the session is
    lost; returns the exit code."""
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    device = args.device_name
    if device is None:
        device = os.environ.get("HOSTNAME", "keyseat client")
    fingerprint = args.fingerprint
    if fingerprint == "machine":
        fingerprint = machine_fingerprint("keyseat-reference-client")
    pinned = None
    if args.public_key is not None:
        try:
            pinned = pinned_keys(args.public_key)
        except VerificationUnavailable as e:
            _print_error(f"keyseat: --public-key: {e}")
            return ERROR
        except ConfigError as e:
            _print_error(f"keyseat: --public-key: {e}")
            return USAGE
    done = threading.Event()
    by_user = threading.Event()
    # "start" while the session starts, "borrow" during --borrow, "" after.
    phase = ["borrow" if args.borrow is not None else "start"]

    def on_signal(signum: int, frame: object) -> None:
        if phase[0] == "borrow" or (phase[0] == "start" and by_user.is_set()):
            # A borrow, or a second signal while starting: give up at once
            # (a hung server must not hold Ctrl-C for several timeouts).
            raise _Interrupted(signum)
        # Like the Rust client: a first signal while starting lets the start
        # finish, and the session it got is then ended (exit 0) instead of
        # leaving the seat taken until its lease runs out.
        by_user.set()
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, on_signal)
    try:
        client = Client(
            args.server,
            args.key,
            device_name=device,
            fingerprint=fingerprint,
            on_event=_on_event,
            public_key=pinned,
            cafile=args.ca_file,
        )
        if args.borrow is not None:
            return _borrow(client, args.borrow, pinned)
        session = client.start()
        phase[0] = ""
    except ConfigError as e:
        if not e.message.startswith("the CA file "):
            return _fail(e)
        _print_error(f"keyseat: --ca-file: {e}")
        return USAGE
    except KeyseatError as e:
        return _fail(e)
    except _Interrupted as e:
        return 128 + e.signum
    session.on_lost(lambda reason, device_name: done.set())

    info = session.info
    _print_line(
        f'started session {info.session_id} (fence {info.fence}) as "{device}"; '
        f"heartbeat every {int(info.heartbeat_interval)} s, "
        f"timeout {int(info.session_timeout)} s"
    )
    for t in info.terminated:
        name = t.device_name if t.device_name is not None else "unnamed device"
        _print_line(
            "warning: previous session on another device was disconnected: "
            f'"{name}" (session {t.session_id})'
        )

    # A timed wait, so signal handlers run promptly on every platform.
    while not done.wait(0.5):
        pass

    lost = session.lost
    if by_user.is_set() or lost is None:
        try:
            session.end()
        except KeyseatError:
            pass
        _print_line("ended by user")
        return ENDED_BY_USER
    _print_line(f"lost: {lost}")
    try:
        session.end(2.0)
    except KeyseatError:
        pass
    return EXIT_CODES.get(lost.reason, ERROR)


def _borrow(client: Client, hours: int, pinned: object) -> int:
    """``--borrow HOURS``: one borrow, its token shown (and checked offline
    against the pinned key), the seat left borrowed; the same lines as the
    Rust ``keyseat client --borrow``.

    As in Rust, a borrow whose answer or lease token is not trusted (or
    whose answer was lost) is given back: the real server may have taken
    the seat before the answer was forged or lost on the way, and a borrowed
    seat is never superseded, so it would otherwise stay locked for hours
    (harmless if nothing was taken)."""
    sid = str(uuid.uuid4())
    try:
        borrowed = client.borrow(hours, session_id=sid)
    except (BorrowNotAllowed, InvalidRequest) as e:
        _print_error(f"keyseat: cannot borrow a seat: {e}")
        return BORROW_REFUSED
    except InvalidLeaseToken as e:
        _print_error(f"keyseat: the lease token is not trusted: {e}; the seat is given back")
        _give_back(client, sid)
        return UNTRUSTED
    except (UntrustedAnswer, ServerUnreachable) as e:
        code = _fail(e)
        _give_back(client, sid)
        return code
    except KeyseatError as e:
        return _fail(e)
    _print_line(
        f"borrowed session {borrowed.session_id} (fence {borrowed.fence}) until "
        f"{borrowed.borrowed_until}; the seat is held without heartbeats"
    )
    if borrowed.previous_session_terminated:
        _print_line("warning: a session on another device was disconnected")
    _print_line(f"lease token: {borrowed.lease_token}")
    if pinned:
        try:
            claims = verify_lease_token(borrowed.lease_token, pinned)  # type: ignore[arg-type]
        except InvalidLeaseToken as e:
            _print_error(f"keyseat: the lease token is not trusted: {e}; the seat is given back")
            _give_back(client, borrowed.session_id)
            return UNTRUSTED
        _print_line(
            f"lease token verified offline: session {claims.sub}, key "
            f"{claims.key_prefix}, until {borrowed.borrowed_until}"
        )
    return ENDED_BY_USER


def _give_back(client: Client, session_id: str) -> None:
    """Ends the borrowed session ``session_id`` (``/api/session/end``),
    ignoring any failure: like ``Borrowed.give_back`` without the answer."""
    try:
        client._api.end(client._access_key, session_id)
    except KeyseatError:
        pass


def main_exit() -> None:
    """Console-script entry point (``keyseat-client``)."""
    sys.exit(main())
