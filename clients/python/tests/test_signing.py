"""Signed answers: with a pinned public key the client verifies every
answer of the real server, and refuses an impostor (unsigned plausible
answers, a genuine answer replayed for another nonce, a genuine answer with
one byte changed, a forged takeover) as untrusted, never acting on it. Two
independent verifiers, one with ``cryptography`` directly and one in Node,
check the server's signatures without the client's code."""

from __future__ import annotations

import builtins
import hashlib
import http.server
import json
import os
import queue
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from conftest import REPO, b64url, clean_env, keyseat_bin, unb64url
from keyseat_client import (
    Client,
    ConfigError,
    Forgery,
    HeartbeatFailed,
    LostReason,
    SessionState,
    UntrustedAnswer,
    VerificationUnavailable,
)
from keyseat_client.keys import checksum_of


@pytest.fixture(scope="module")
def public_key(server: Any) -> str:
    return server.pinned_key()


def other_key() -> str:
    """A valid Ed25519 public key that is not the server's."""
    raw = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return b64url(raw)


# -- against the real server ---------------------------------------------------


def test_the_pinned_key_is_the_one_the_server_lists(server, public_key):
    assert len(public_key) == 43
    status, jwks = server.call("GET", "/api/signing-keys")
    assert status == 200
    assert jwks["keys"][0]["x"] == public_key
    shown = subprocess.run(
        [keyseat_bin(), "--database", str(server.db), "signing-key", "show"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == jwks


def test_a_verified_session_starts_heartbeats_and_ends(server, key, public_key):
    events: "queue.Queue[object]" = queue.Queue()
    client = Client(server.url, key, device_name="Verified", public_key=public_key, on_event=events.put)
    assert client.api.verifies
    session = client.start()
    assert session.state is SessionState.ACTIVE
    # Past the 3 s timeout: every heartbeat was verified and accepted.
    time.sleep(3.3)
    assert session.state is SessionState.ACTIVE and session.failed_attempts == 0
    assert events.empty(), events.get_nowait()
    [live] = server.live_sessions(key)
    assert live["session_id"] == session.session_id
    status = client.status()
    assert status["key_prefix"] == key[:11] and "server_time" in status
    assert session.end() is True
    assert server.live_sessions(key) == []


def test_each_call_sends_a_fresh_nonce_and_errors_are_verified_too(server, key, public_key):
    api = Client(server.url, key, public_key=public_key).api
    first, second = api.status(key), api.status(key)
    assert len(first["nonce"]) == 22 and first["nonce"] != second["nonce"]
    # A refusal is signed and verified as well (the echo inside "error").
    from keyseat_client import SessionNotFound

    with pytest.raises(SessionNotFound):
        api.heartbeat(key, "00000000-0000-4000-8000-000000000000")


def test_one_key_or_a_list_and_an_unknown_key_is_untrusted(server, key, public_key):
    assert Client(server.url, key, public_key=[other_key(), public_key]).status()["sessions"] == []
    with pytest.raises(UntrustedAnswer) as e:
        Client(server.url, key, public_key=other_key()).status()
    assert e.value.reason is Forgery.UNKNOWN_KEY and e.value.code == "untrusted"
    assert "not trusted" in str(e.value)
    with pytest.raises(ConfigError, match="base64url"):
        Client(server.url, key, public_key="not a key!")
    with pytest.raises(ConfigError, match="32"):
        Client(server.url, key, public_key="AAAA")


def test_without_cryptography_a_public_key_is_a_clear_error(server, key, public_key, monkeypatch):
    real_import = builtins.__import__

    def no_cryptography(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "cryptography" or name.startswith("cryptography."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cryptography)
    with pytest.raises(VerificationUnavailable) as e:
        Client(server.url, key, public_key=public_key)
    assert "cryptography" in str(e.value) and "keyseat-client[verify]" in str(e.value)
    assert isinstance(e.value, ConfigError)
    # Without a key nothing needs it.
    assert Client(server.url, key).status()["sessions"] == []


# -- an impostor ---------------------------------------------------------------------


class Impostor:
    """A tiny HTTP server in front of the real one. ``mode``:

    - ``forward``: passes requests and answers through unchanged;
    - ``plain``: answers 200 with a plausible body to everything (echoing
      the nonce, the key prefix, a server time), unsigned;
    - ``replay``: a genuine signed answer, obtained from the real server for
      the same request with another nonce;
    - ``flip``: the genuine signed answer with one byte of its body changed;
    - ``superseded``: an unsigned 409 ``session_superseded`` to heartbeats;
    - ``status``: the genuine signed answer, but a 4xx turned into a 200 (the
      signature covers the body, not the status line).
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.mode = "forward"
        impostor = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._answer(*impostor.forward("GET", self.path, None))

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._answer(*impostor.answer(self.path, raw))

            def _answer(self, status: int, signature: Optional[str], body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if signature is not None:
                    self.send_header("Keyseat-Signature", signature)
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def forward(self, method: str, path: str, raw: Optional[bytes]) -> Tuple[int, Optional[str], bytes]:
        req = urllib.request.Request(self.upstream + path, data=raw, method=method)
        if raw is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.headers.get("Keyseat-Signature"), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Keyseat-Signature"), e.read()

    def answer(self, path: str, raw: bytes) -> Tuple[int, Optional[str], bytes]:
        mode = self.mode
        if mode == "forward":
            return self.forward("POST", path, raw)
        request = json.loads(raw)
        if mode == "replay":
            request["nonce"] = secrets.token_urlsafe(16)
            status, signature, body = self.forward("POST", path, json.dumps(request).encode())
            assert signature is not None, "the real server signs"
            return status, signature, body
        if mode == "status":
            status, signature, body = self.forward("POST", path, raw)
            return (200 if status >= 400 else status), signature, body
        if mode == "flip":
            status, signature, body = self.forward("POST", path, raw)
            assert signature is not None, "the real server signs"
            flipped = bytearray(body)
            at = next(i for i, b in enumerate(flipped) if 0x30 <= b <= 0x39)
            flipped[at] = 0x30 + (flipped[at] - 0x30 + 1) % 10  # still valid JSON
            return status, signature, bytes(flipped)
        stamp = {
            "nonce": request.get("nonce"),
            "server_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "key_prefix": str(request.get("access_key", ""))[:11],
        }
        if mode == "superseded" and path.endswith("/heartbeat"):
            error = {
                "code": "session_superseded",
                "message": "superseded",
                "superseded_by": {"device_name": "Impostor", "started_at": stamp["server_time"]},
                **stamp,
            }
            return 409, None, json.dumps({"error": error}).encode()
        plausible: Dict[str, Any] = {
            "/api/session/start": {
                "session_id": request.get("session_id"),
                "fence": 1,
                "previous_session_terminated": False,
                "terminated_sessions": [],
                "heartbeat_interval_seconds": 1,
                "session_timeout_seconds": 3,
            },
            "/api/session/heartbeat": {"heartbeat_interval_seconds": 1, "session_timeout_seconds": 3},
            "/api/session/end": {"ended": True},
            "/api/session/status": {"sessions": []},
        }.get(path, {})
        return 200, None, json.dumps({**plausible, **stamp}).encode()


@pytest.fixture
def impostor(server: Any) -> Iterator[Impostor]:
    i = Impostor(server.url)
    yield i
    i.close()


REFUSED_AS = {
    "plain": Forgery.UNSIGNED,
    "replay": Forgery.WRONG_NONCE,
    "flip": Forgery.BAD_SIGNATURE,
    "superseded": Forgery.UNSIGNED,
}


@pytest.mark.parametrize("mode", ["plain", "replay", "flip", "superseded"])
def test_an_impostor_is_refused(server, key, public_key, impostor, mode):
    # Without a pinned key the plain impostor is believed: what signing is for.
    if mode == "plain":
        impostor.mode = "plain"
        fooled = Client(impostor.url, key, start_attempts=1).start()
        assert fooled.fence == 1 and fooled.is_usable
        fooled.end()

    # A start through it is refused (after its retries), never believed.
    impostor.mode = mode if mode != "superseded" else "plain"
    with pytest.raises(UntrustedAnswer) as e:
        Client(impostor.url, key, public_key=public_key, start_attempts=2).start()
    assert e.value.reason is REFUSED_AS[mode if mode != "superseded" else "plain"]
    assert e.value.path == "/api/session/start"

    # A live session whose answers turn forged is kept while the lease lasts,
    # then lost as untrusted (not unreachable, never superseded).
    impostor.mode = "forward"
    events: "queue.Queue[object]" = queue.Queue()
    session = Client(impostor.url, key, public_key=public_key, on_event=events.put).start()
    lost = []
    session.on_lost(lambda reason, other: lost.append((reason, other)))
    impostor.mode = mode
    turned = time.monotonic()
    event = events.get(timeout=3)
    assert isinstance(event, HeartbeatFailed), event
    assert "not trusted" in event.error and str(REFUSED_AS[mode]) in event.error
    assert session.is_usable, "a forged answer is not acted on"
    assert session.wait_lost(6) is LostReason.UNTRUSTED
    assert time.monotonic() - turned >= 1.0, "lost only when the lease ran out"
    assert lost == [(LostReason.UNTRUSTED, None)]
    assert session.lost is not None and str(session.lost).startswith("untrusted:")
    assert str(REFUSED_AS[mode]) in session.lost.message
    impostor.mode = "forward"
    session.end(2.0)


def test_a_genuine_refusal_relabelled_200_is_untrusted(server, key, public_key, impostor):
    # Without the status check, device A would keep running on genuine,
    # correctly signed "session_superseded" answers whose status says 200.
    impostor.mode = "status"
    a = Client(impostor.url, key, device_name="A", public_key=public_key).start()
    b = Client(server.url, key, device_name="B", public_key=public_key).start()
    assert b.previous_session_terminated
    assert a.wait_lost(6) is LostReason.UNTRUSTED
    assert a.lost is not None and str(Forgery.WRONG_STATUS) in a.lost.message
    assert b.end() is True


def test_the_cli_exits_9_for_an_impostor(server, key, public_key, impostor):
    impostor.mode = "plain"
    out = subprocess.run(
        [sys.executable, "-m", "keyseat_client", "--server", impostor.url, "--key", key,
         "--public-key", public_key],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 9, (out.stdout, out.stderr)
    assert "not trusted" in out.stderr and "not signed" in out.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "keyseat_client", "--server", impostor.url, "--key", key,
         "--public-key", "nope!"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2 and "--public-key" in bad.stderr


def test_the_cli_gives_a_borrow_back_when_its_answer_is_not_trusted(server, public_key, impostor):
    # Like `keyseat client --borrow`: the real server took the seat before
    # the answer was forged on the way; a borrowed seat is never superseded,
    # so it is given back rather than left locked for hours.
    borrow_key = server.key(label="untrusted borrow", max_borrow_hours=24)
    impostor.mode = "flip"
    out = subprocess.run(
        [sys.executable, "-m", "keyseat_client", "--server", impostor.url, "--key", borrow_key,
         "--public-key", public_key, "--borrow", "2"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 9, (out.stdout, out.stderr)
    assert "not trusted" in out.stderr, out.stderr
    assert server.live_sessions(borrow_key) == [], "the borrowed seat was given back"


# -- independent verifiers -------------------------------------------------------


def _post_raw(url: str, body: Dict[str, Any]) -> Tuple[int, Optional[str], bytes]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers.get("Keyseat-Signature"), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Keyseat-Signature"), e.read()


def test_an_independent_python_verifier_accepts_the_servers_signatures(server, key, public_key):
    """With `cryptography` directly, not the client's code."""
    with urllib.request.urlopen(server.url + "/api/signing-keys", timeout=10) as resp:
        jwks = json.loads(resp.read())
    [jwk] = jwks["keys"]
    assert (jwk["kty"], jwk["crv"], jwk["use"]) == ("OKP", "Ed25519", "sig")
    canonical = json.dumps(
        {"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"]}, separators=(",", ":"), sort_keys=True
    )
    assert jwk["kid"] == b64url(hashlib.sha256(canonical.encode()).digest()), "RFC 7638"
    assert jwk["x"] == public_key
    verifier = Ed25519PublicKey.from_public_bytes(unb64url(jwk["x"]))

    unknown = "ks_" + "Z" * 32
    unknown += checksum_of(unknown)
    for access_key, want_status in ((key, 200), (unknown, 401)):
        nonce = secrets.token_urlsafe(16)
        status, header, raw = _post_raw(
            server.url + "/api/session/status", {"access_key": access_key, "nonce": nonce}
        )
        assert status == want_status, raw
        assert header is not None
        parts = dict(p.strip().split("=", 1) for p in header.split(","))
        assert parts["kid"].strip('"') == jwk["kid"]
        signature = unb64url(parts["sig"].strip('"'))
        verifier.verify(signature, raw)  # raises InvalidSignature if not
        fields = json.loads(raw)
        fields = fields.get("error", fields)
        assert fields["nonce"] == nonce
        assert fields["key_prefix"] == access_key[:11]
        assert isinstance(fields["server_time"], str)
        from cryptography.exceptions import InvalidSignature

        with pytest.raises(InvalidSignature):
            verifier.verify(signature, raw.replace(nonce.encode(), nonce[::-1].encode()))


NODE_VERIFIER = REPO / "clients" / "node-verify" / "verify.mjs"


def test_an_independent_node_verifier_accepts_the_servers_signatures(server, key, impostor):
    node = shutil.which("node")
    if node is None:
        if os.environ.get("KEYSEAT_REQUIRE_NODE"):
            pytest.fail("node is not installed and KEYSEAT_REQUIRE_NODE is set")
        pytest.skip("node is not installed (set KEYSEAT_REQUIRE_NODE to make this a failure)")
    env = dict(clean_env(), KEYSEAT_URL=server.url, KEYSEAT_KEY=key)
    out = subprocess.run(
        [node, str(NODE_VERIFIER)], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert "verify.mjs: ok" in out.stdout
    # And it does fail for an answer that is not keyseat's (one byte changed).
    impostor.mode = "flip"
    bad = subprocess.run(
        [node, str(NODE_VERIFIER)],
        env=dict(env, KEYSEAT_URL=impostor.url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "FAIL" in bad.stderr
