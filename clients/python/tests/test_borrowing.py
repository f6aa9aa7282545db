"""Borrowing a seat for offline use, against the real server: a borrow
holds the seat without heartbeats and is never superseded, its answer is
signed like a start's, the lease token verifies offline with the pinned key
(:func:`verify_lease_token`) and is refused once changed, expired, signed by
another key or malformed; refusals of the borrow map to the client's errors;
``--borrow HOURS`` in the CLI borrows, prints and exits."""

from __future__ import annotations

import builtins
import calendar
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from typing import Any, Dict, Tuple

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from conftest import REPO, b64url, clean_env, unb64url
from keyseat_client import (
    Borrowed,
    BorrowNotAllowed,
    Client,
    ConfigError,
    InvalidLeaseToken,
    InvalidRequest,
    KeyseatError,
    LeaseClaims,
    LeaseTokenProblem,
    SeatsFull,
    SessionState,
    VerificationUnavailable,
    verify_lease_token,
)
from keyseat_client.signing import kid_of


def rfc3339_seconds(text: str) -> int:
    """Whole Unix seconds of an RFC 3339 UTC time (`...T13:41:29.866Z`)."""
    return calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))


def parts(token: str) -> Tuple[Dict[str, Any], Dict[str, Any], str]:
    h, c, s = token.split(".")
    return json.loads(unb64url(h)), json.loads(unb64url(c)), s


def reencoded(token: str, **changes: Any) -> str:
    """The token with claims changed, header and signature kept."""
    h, c, s = token.split(".")
    claims = json.loads(unb64url(c))
    claims.update(changes)
    return f"{h}.{b64url(json.dumps(claims, separators=(',', ':')).encode())}.{s}"


def signed_by(private: Ed25519PrivateKey, header: Dict[str, Any], claims: Dict[str, Any]) -> str:
    """A compact JWS made here, with another key."""
    h = b64url(json.dumps(header).encode())
    c = b64url(json.dumps(claims).encode())
    return f"{h}.{c}.{b64url(private.sign(f'{h}.{c}'.encode()))}"


def raw_public(private: Ed25519PrivateKey) -> str:
    return b64url(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


@pytest.fixture(scope="module")
def public_key(server: Any) -> str:
    return server.pinned_key()


@pytest.fixture
def borrow_key(server: Any) -> str:
    """One seat, takeover policy, borrowing up to 24 h."""
    return server.key(label="borrowing test", max_borrow_hours=24)


# -- the borrow --------------------------------------------------------------------


def test_a_borrow_holds_the_seat_and_its_token_verifies_offline(server, borrow_key, public_key):
    client = Client(server.url, borrow_key, device_name="Laptop", fingerprint="fp-laptop",
                    public_key=public_key)
    before = int(time.time())
    borrowed = client.borrow(2)
    assert isinstance(borrowed, Borrowed)
    assert borrowed.fence >= 1 and not borrowed.previous_session_terminated
    until = rfc3339_seconds(borrowed.borrowed_until)
    assert before + 2 * 3600 - 5 <= until <= int(time.time()) + 2 * 3600 + 5
    assert borrowed.borrowed_until_datetime is not None
    assert int(borrowed.borrowed_until_datetime.timestamp()) == until
    # The client pins a key: the token was checked too.
    assert isinstance(borrowed.claims, LeaseClaims) and borrowed.claims.sub == borrowed.session_id
    # Past the shared server's 3 s timeout without a single heartbeat.
    time.sleep(3.5)
    [live] = server.live_sessions(borrow_key)
    assert live["session_id"] == borrowed.session_id
    assert live["borrowed_until"] == borrowed.borrowed_until
    assert borrowed.give_back() is True
    assert server.live_sessions(borrow_key) == []
    assert borrowed.give_back() is False


def test_the_lease_token_verifies_offline_with_the_pinned_key(server, borrow_key, public_key):
    borrowed = Client(server.url, borrow_key, fingerprint="fp-1", public_key=public_key).borrow(3)
    header, raw_claims, _ = parts(borrowed.lease_token)
    assert header == {"alg": "EdDSA", "kid": kid_of(unb64url(public_key)), "typ": "JWT"}
    claims = verify_lease_token(borrowed.lease_token, public_key)
    assert claims.iss == "keyseat"
    assert claims.sub == claims.session_id == borrowed.session_id
    assert claims.key_prefix == borrow_key[:11]
    assert claims.fence == borrowed.fence
    assert claims.device_fingerprint == "fp-1"
    assert claims.exp == rfc3339_seconds(borrowed.borrowed_until) == int(claims.expires.timestamp())
    assert abs(claims.iat - time.time()) < 30 and claims.exp - claims.iat in range(3 * 3600 - 2, 3 * 3600 + 2)
    assert set(raw_claims) == {"iss", "sub", "key_prefix", "fence", "device_fingerprint", "iat", "exp"}
    # A list of keys (a rotation), a PinnedKey, a trailing newline from a file.
    assert verify_lease_token(borrowed.lease_token + "\n", [raw_public(Ed25519PrivateKey.generate()), public_key]) == claims
    from keyseat_client import PinnedKey

    assert verify_lease_token(borrowed.lease_token, PinnedKey(public_key)) == claims
    borrowed.give_back()


def test_without_a_fingerprint_the_claim_is_absent(server, borrow_key, public_key):
    borrowed = Client(server.url, borrow_key).borrow(1)
    assert borrowed.claims is None  # nothing pinned on the client
    _, raw_claims, _ = parts(borrowed.lease_token)
    assert "device_fingerprint" not in raw_claims
    assert verify_lease_token(borrowed.lease_token, public_key).device_fingerprint is None
    borrowed.give_back()


def test_a_changed_or_expired_token_is_refused(server, borrow_key, public_key):
    borrowed = Client(server.url, borrow_key, public_key=public_key).borrow(1)
    token = borrowed.lease_token
    claims = verify_lease_token(token, public_key)

    longer = reencoded(token, exp=claims.exp + 86_400)
    with pytest.raises(InvalidLeaseToken) as e:
        verify_lease_token(longer, public_key)
    assert e.value.reason is LeaseTokenProblem.BAD_SIGNATURE
    assert e.value.code == "lease_bad_signature" and e.value.status is None
    with pytest.raises(InvalidLeaseToken) as e:
        verify_lease_token(reencoded(token, key_prefix="ks_AAAAAAAA"), public_key)
    assert e.value.reason is LeaseTokenProblem.BAD_SIGNATURE

    # Expired: at exp and after, never before (Unix seconds or a datetime).
    assert verify_lease_token(token, public_key, now=claims.exp - 1) == claims
    for at in (claims.exp, claims.exp + 1, claims.exp + 10 * 86_400):
        with pytest.raises(InvalidLeaseToken) as e:
            verify_lease_token(token, public_key, now=at)
        assert e.value.reason is LeaseTokenProblem.EXPIRED and str(e.value.reason) == "expired"
    import datetime as dt

    with pytest.raises(InvalidLeaseToken, match="run out"):
        verify_lease_token(token, public_key, now=claims.expires + dt.timedelta(seconds=1))
    with pytest.raises(ConfigError):
        verify_lease_token(token, public_key, now=dt.datetime(2030, 1, 1))  # naive
    borrowed.give_back()


def test_a_token_of_another_key_or_algorithm_or_issuer_is_refused(server, borrow_key, public_key):
    borrowed = Client(server.url, borrow_key, public_key=public_key).borrow(1)
    token = borrowed.lease_token
    header, claims, _ = parts(token)
    other = Ed25519PrivateKey.generate()

    # The genuine token, checked with another pinned key.
    with pytest.raises(InvalidLeaseToken) as e:
        verify_lease_token(token, raw_public(other))
    assert e.value.reason is LeaseTokenProblem.UNKNOWN_KEY
    # Another key's signature under the server's kid.
    with pytest.raises(InvalidLeaseToken) as e:
        verify_lease_token(signed_by(other, header, claims), public_key)
    assert e.value.reason is LeaseTokenProblem.BAD_SIGNATURE
    # ...and under its own kid: not pinned.
    own = dict(header, kid=kid_of(unb64url(raw_public(other))))
    with pytest.raises(InvalidLeaseToken) as e:
        verify_lease_token(signed_by(other, own, claims), public_key)
    assert e.value.reason is LeaseTokenProblem.UNKNOWN_KEY
    # Pinned, but issued by someone else.
    foreign = signed_by(other, own, dict(claims, iss="someone-else"))
    with pytest.raises(InvalidLeaseToken) as e:
        verify_lease_token(foreign, raw_public(other))
    assert e.value.reason is LeaseTokenProblem.WRONG_ISSUER
    # alg none / HS256, whatever follows.
    h, c, s = token.split(".")
    for alg in ("none", "HS256", "Ed25519"):
        forged = f"{b64url(json.dumps(dict(header, alg=alg)).encode())}.{c}.{'' if alg == 'none' else s}"
        with pytest.raises(InvalidLeaseToken) as e:
            verify_lease_token(forged, public_key)
        assert e.value.reason is LeaseTokenProblem.WRONG_ALGORITHM, alg
    # Garbage.
    for garbage in ("", "a.b", "a.b.c.d", "!!.??.**", f"{h}.{c}", f"{h}.{c}.{s}=", f"{h}.{c}.AAAA",
                    f"{h}.{b64url(b'[1]')}.{s}", f"{h}.{b64url(json.dumps(dict(claims, fence='1')).encode())}.{s}"):
        with pytest.raises(InvalidLeaseToken) as e:
            verify_lease_token(garbage, public_key)
        assert e.value.reason in (LeaseTokenProblem.MALFORMED, LeaseTokenProblem.BAD_SIGNATURE), garbage
        if garbage.count(".") != 2 or garbage.endswith("AAAA") or garbage.startswith("!!"):
            assert e.value.reason is LeaseTokenProblem.MALFORMED, garbage
    with pytest.raises(ConfigError):
        verify_lease_token(token, None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        verify_lease_token(token, "not a key!")
    borrowed.give_back()


def test_without_cryptography_verifying_is_a_clear_error(server, borrow_key, public_key, monkeypatch):
    token = Client(server.url, borrow_key).borrow(1)
    real_import = builtins.__import__

    def no_cryptography(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "cryptography" or name.startswith("cryptography."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cryptography)
    with pytest.raises(VerificationUnavailable, match=r"keyseat-client\[verify\]"):
        verify_lease_token(token.lease_token, public_key)
    with pytest.raises(VerificationUnavailable):
        verify_lease_token("a.b.c", public_key)
    monkeypatch.undo()
    token.give_back()


def test_the_borrow_answer_is_signed_like_a_start(server, borrow_key, public_key):
    """Independently of the client: the raw answer to a borrow with a nonce
    carries a Keyseat-Signature over its body, echoing nonce and prefix."""
    nonce = secrets.token_urlsafe(16)
    req = urllib.request.Request(
        server.url + "/api/session/borrow",
        data=json.dumps({"access_key": borrow_key, "hours": 1, "nonce": nonce}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        header, raw = resp.headers.get("Keyseat-Signature"), resp.read()
    assert header is not None
    fields = dict(p.strip().split("=", 1) for p in header.split(","))
    assert fields["kid"].strip('"') == kid_of(unb64url(public_key))
    Ed25519PublicKey.from_public_bytes(unb64url(public_key)).verify(
        unb64url(fields["sig"].strip('"')), raw
    )
    body = json.loads(raw)
    assert body["nonce"] == nonce and body["key_prefix"] == borrow_key[:11]
    for name in ("session_id", "fence", "started_at", "expires_at", "heartbeat_interval_seconds",
                 "session_timeout_seconds", "previous_session_terminated", "terminated_sessions",
                 "resumed", "borrowed_until", "lease_token"):
        assert name in body, name
    server.call("POST", "/api/session/end", {"access_key": borrow_key, "session_id": body["session_id"]})


# -- refusals and seats ------------------------------------------------------------------


def test_borrow_refusals_are_typed(server, public_key):
    off = server.key(label="borrowing off")
    with pytest.raises(BorrowNotAllowed) as e:
        Client(server.url, off, public_key=public_key).borrow(1)
    assert e.value.code == "borrow_not_allowed" and e.value.status == 403
    assert isinstance(e.value, KeyseatError) and not e.value.transient
    capped = server.key(label="borrowing 24 h", max_borrow_hours=24)
    for hours in (25, 0, 8761):
        with pytest.raises(InvalidRequest) as e:
            Client(server.url, capped, public_key=public_key).borrow(hours)
        assert e.value.code == "invalid_request" and e.value.status == 400
        if hours == 25:
            assert "max_borrow_hours (24)" in e.value.message
    with pytest.raises(ConfigError):
        Client(server.url, capped).borrow(-1)
    assert server.live_sessions(capped) == []
    # 24 h is allowed.
    Client(server.url, capped).borrow(24).give_back()


def test_a_borrowed_seat_is_never_superseded_and_an_early_return_frees_it(server, borrow_key, public_key):
    a = Client(server.url, borrow_key, device_name="A", public_key=public_key).borrow(1)
    b = Client(server.url, borrow_key, device_name="B", public_key=public_key)
    with pytest.raises(SeatsFull) as e:
        b.start()
    assert e.value.code == "seats_full" and e.value.status == 409
    with pytest.raises(SeatsFull):
        b.borrow(1)
    [live] = server.live_sessions(borrow_key)
    assert live["session_id"] == a.session_id
    assert a.give_back() is True
    session = b.start()
    assert not session.previous_session_terminated
    assert session.end() is True


def test_reject_policy_and_several_seats(server, public_key):
    key = server.key(label="two seats", max_sessions=2, on_conflict="reject", max_borrow_hours=8)
    one = Client(server.url, key, public_key=public_key).borrow(8)
    two = Client(server.url, key, public_key=public_key).borrow(1)
    assert two.fence > one.fence
    with pytest.raises(SeatsFull):
        Client(server.url, key).start()
    assert one.give_back() and two.give_back()


def test_an_admin_kick_ends_a_borrowed_session(server, borrow_key):
    borrowed = Client(server.url, borrow_key).borrow(1)
    status, _ = server.call("DELETE", f"/api/admin/sessions/{borrowed.session_id}", admin=True)
    assert status in (200, 204)
    assert server.live_sessions(borrow_key) == []
    from keyseat_client import SessionRevoked

    with pytest.raises(SessionRevoked):
        Client(server.url, borrow_key).api.heartbeat(borrow_key, borrowed.session_id)
    assert borrowed.give_back() is False


# -- borrowing a running session -----------------------------------------------------------


def test_a_running_session_is_borrowed_in_place(server, borrow_key, public_key):
    client = Client(server.url, borrow_key, device_name="Laptop", fingerprint="fp-x", public_key=public_key)
    with client.start() as session:
        borrowed = session.borrow(2)
        assert session.state is SessionState.BORROWED and not session.is_usable
        assert (borrowed.session_id, borrowed.fence) == (session.session_id, session.fence)
        assert borrowed.claims is not None and borrowed.claims.device_fingerprint == "fp-x"
        assert session.wait_lost(0.1) is None
        with pytest.raises(ConfigError):
            session.borrow(1)
    # Leaving the block did not give the seat back, nor did end().
    assert session.end() is False
    time.sleep(3.5)  # past the timeout: no heartbeats needed
    [live] = server.live_sessions(borrow_key)
    assert live["session_id"] == session.session_id and live["borrowed_until"] == borrowed.borrowed_until
    # The same client id: the client's own borrow of a live session.
    again = client.borrow(3, session_id=session.session_id)
    assert again.fence == session.fence and again.borrowed_until > borrowed.borrowed_until
    assert again.give_back() is True


def test_a_refused_borrow_leaves_the_session_running(server, public_key):
    key = server.key(label="no borrowing")
    session = Client(server.url, key, public_key=public_key).start()
    with pytest.raises(BorrowNotAllowed):
        session.borrow(1)
    assert session.state is SessionState.ACTIVE
    time.sleep(3.3)
    assert session.state is SessionState.ACTIVE and session.failed_attempts == 0
    assert session.end() is True


# -- the CLI -----------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "keyseat_client", *args],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_cli_borrows_prints_and_exits(server, borrow_key, public_key):
    started = time.monotonic()
    out = run_cli("--server", server.url, "--key", borrow_key, "--borrow", "2",
                  "--public-key", public_key, "--device-name", "Terminal")
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert time.monotonic() - started < 20, "no heartbeat loop"
    lines = out.stdout.splitlines()
    assert lines[0].startswith("borrowed session ") and "the seat is held without heartbeats" in lines[0]
    assert lines[1].startswith("lease token: ")
    token = lines[1][len("lease token: "):]
    claims = verify_lease_token(token, public_key)
    assert lines[2] == (f"lease token verified offline: session {claims.sub}, key {borrow_key[:11]}, "
                        f"until {lines[0].split(' until ')[1].split(';')[0]}")
    # The process is gone; the seat is still borrowed.
    [live] = server.live_sessions(borrow_key)
    assert live["session_id"] == claims.sub and live["device_name"] == "Terminal"
    assert live["borrowed_until"] is not None
    # Without --public-key: printed, not checked.
    busy = run_cli("--server", server.url, "--key", borrow_key, "--borrow", "1")
    assert busy.returncode == 8, (busy.stdout, busy.stderr)  # the one seat is borrowed
    server.call("POST", "/api/session/end", {"access_key": borrow_key, "session_id": claims.sub})
    plain = run_cli("--server", server.url, "--key", borrow_key, "--borrow", "1")
    assert plain.returncode == 0 and len(plain.stdout.splitlines()) == 2, plain.stdout


def test_the_cli_exits_10_when_the_key_refuses_the_borrow(server, borrow_key):
    off = server.key(label="cli borrowing off")
    out = run_cli("--server", server.url, "--key", off, "--borrow", "1")
    assert out.returncode == 10 and "borrow_not_allowed" in out.stderr, (out.stdout, out.stderr)
    over = run_cli("--server", server.url, "--key", borrow_key, "--borrow", "25")
    assert over.returncode == 10 and "invalid_request" in over.stderr, (over.stdout, over.stderr)
    bad = run_cli("--server", server.url, "--key", borrow_key, "--borrow", "two")
    assert bad.returncode == 2 and "--borrow" in bad.stderr
    assert server.live_sessions(borrow_key) == []


# -- npm jose ---------------------------------------------------------------------------------

NODE_LEASE = REPO / "clients" / "node-verify" / "lease.mjs"


def test_npm_jose_verifies_the_lease_token(server):
    """clients/node-verify/lease.mjs: borrows, verifies the token with npm's
    jose (pinned; run-tests.sh runs `npm ci`), refuses a changed, an expired
    and a foreign token, gives the seat back."""
    node = shutil.which("node")
    jose = REPO / "clients" / "node-verify" / "node_modules" / "jose" / "package.json"
    for missing, what in ((node is None, "node is not installed"),
                          (not jose.is_file(), "npm jose is not installed (npm ci in clients/node-verify)")):
        if missing:
            if os.environ.get("KEYSEAT_REQUIRE_NODE"):
                pytest.fail(f"{what} and KEYSEAT_REQUIRE_NODE is set")
            pytest.skip(f"{what} (set KEYSEAT_REQUIRE_NODE to make this a failure)")
    assert node is not None
    pinned = json.loads((NODE_LEASE.parent / "package-lock.json").read_text())
    assert json.loads(jose.read_text())["version"] == pinned["packages"]["node_modules/jose"]["version"]
    key = server.key(label="npm jose", max_borrow_hours=1)
    env = dict(clean_env(), KEYSEAT_URL=server.url, KEYSEAT_KEY=key)
    for _ in range(2):  # the seat is given back each time
        out = subprocess.run([node, str(NODE_LEASE)], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, (out.stdout, out.stderr)
        assert "lease.mjs: ok" in out.stdout
        assert server.live_sessions(key) == []
    # A key that refuses borrowing: a failure, not a pass.
    off = subprocess.run([node, str(NODE_LEASE)], env=dict(env, KEYSEAT_KEY=server.key(label="off")),
                         capture_output=True, text=True, timeout=60)
    assert off.returncode == 1 and "FAIL" in off.stderr and "borrow_not_allowed" in off.stderr
