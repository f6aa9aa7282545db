"""The key format checked locally (against keys the real server made), and
the server's refusals raised as the contract's exception classes."""

from __future__ import annotations

import socket
import uuid

import pytest

from keyseat_client import (
    Api,
    Client,
    ConfigError,
    InvalidKey,
    InvalidKeyFormat,
    InvalidRequest,
    KeyExpired,
    KeyRefused,
    KeyRevoked,
    KeySuspended,
    KeyseatError,
    SeatsFull,
    ServerUnreachable,
    SessionEnded,
    SessionIdTaken,
    SessionNotFound,
    SessionSuperseded,
    check_access_key,
    is_access_key,
)
from keyseat_client.keys import BASE62, checksum_of


def test_a_typo_is_refused_locally(server):
    keys = [server.key() for _ in range(5)]
    for key in keys:
        assert check_access_key(f"  {key}\n") == key
        assert is_access_key(key)
    # CRC32 catches every one-character substitution and every swap of
    # neighbours: all of them must be refused before any request.
    key = keys[0]
    for i in range(3, len(key)):
        for c in BASE62:
            if c != key[i]:
                assert not is_access_key(key[:i] + c + key[i + 1 :])
        if key[i] != key[i - 1] and i > 3:
            assert not is_access_key(key[: i - 1] + key[i] + key[i - 1] + key[i + 1 :])
    assert not is_access_key(key[:-1])
    assert not is_access_key(key + "0")
    assert not is_access_key("kx_" + key[3:])
    assert not is_access_key(key[:10] + "\u00e9" + key[11:])
    # The padding: a CRC of 0 is six zeros.
    assert checksum_of("") == "000000"


def test_a_typo_fails_in_the_constructor_without_a_request():
    # A listening socket that counts connections: nothing may arrive.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(5)
        listener.settimeout(0.2)
        url = "http://127.0.0.1:%d" % listener.getsockname()[1]
        good = "ks_" + "A" * 32
        good += checksum_of(good)
        typo = good[:10] + ("B" if good[10] != "B" else "C") + good[11:]
        with pytest.raises(InvalidKeyFormat) as caught:
            Client(url, typo)
        e = caught.value
        assert isinstance(e, InvalidKey) and isinstance(e, KeyRefused)
        assert e.code == "invalid_key" and e.status is None
        assert "checksum does not match" in str(e)
        with pytest.raises(InvalidKeyFormat, match="followed by 38 letters"):
            Client(url, "ks_typo")
        with pytest.raises(socket.timeout):
            listener.accept()
        # A well-formed key is accepted locally; the constructor sends nothing.
        client = Client(url + "/", good, device_name="x")
        assert client.server_url == url
        assert good[11:] not in repr(client)
        with pytest.raises(socket.timeout):
            listener.accept()


def test_bad_inputs_are_typed_errors(server, tmp_path):
    good = server.key()
    for url in ["ftp://x", "localhost:8080", "http://", "http://a b"]:
        with pytest.raises(ConfigError):
            Client(url, good)
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not pem")
    for make in [
        lambda: Client(server.url, good, public_key="not a key!"),
        lambda: Client(server.url, good, public_key="AAAA"),
        lambda: Client(server.url, good, cafile=str(tmp_path / "missing.pem")),
        lambda: Client(server.url, good, cafile=str(not_pem)),
    ]:
        with pytest.raises(ConfigError):
            make()
    # The server's own refusals of bad values: typed, with the code.
    with pytest.raises(InvalidRequest) as caught:
        Client(server.url, good, device_name="tab\there").start()
    assert (caught.value.status, caught.value.code) == (400, "invalid_request")
    with pytest.raises(KeyseatError):
        Client(server.url, good).borrow(0)


def test_the_access_key_is_never_shown_whole(server):
    key = server.key()
    client = Client(server.url, key)
    session = client.start()
    try:
        for text in [repr(client), str(client), repr(session), str(session)]:
            assert key[11:] not in text, text
        assert client.key_prefix.startswith(key[:11])
    finally:
        session.end()


def test_the_fingerprint_is_a_salted_hash():
    from keyseat_client.fingerprint import _hash

    # The same in every client (docs/clients.md).
    assert _hash("app-one", "machine-1") == "33a21275881bd82f47bb2023d4c863c2"
    assert _hash("app-two", "machine-1") != _hash("app-one", "machine-1")


def test_refusals_carry_the_contracts_codes(server):
    url = server.url
    # Unknown (well-formed) key: 401 invalid_key from the server.
    unknown = "ks_" + "z" * 32
    unknown += checksum_of(unknown)
    with pytest.raises(InvalidKey) as caught:
        Client(url, unknown).start()
    assert caught.value.status == 401 and caught.value.code == "invalid_key"
    assert not isinstance(caught.value, InvalidKeyFormat)

    revoked = server.create_key()
    status, _ = server.call("POST", f"/api/admin/keys/{revoked['key_id']}/revoke", {}, admin=True)
    assert status == 200
    with pytest.raises(KeyRevoked) as caught:
        Client(url, revoked["access_key"]).start()
    assert (caught.value.status, caught.value.code) == (403, "key_revoked")

    suspended = server.create_key()
    status, _ = server.call(
        "PATCH", f"/api/admin/keys/{suspended['key_id']}", {"status": "suspended"}, admin=True
    )
    assert status == 200
    with pytest.raises(KeySuspended):
        Client(url, suspended["access_key"]).start()

    expired = server.key(expires_at="2020-01-01T00:00:00Z")
    with pytest.raises(KeyExpired) as caught:
        Client(url, expired).start()
    assert isinstance(caught.value, KeyRefused) and caught.value.message

    # Policy reject with the seat taken: SeatsFull; the holder is unharmed.
    reject = server.key(on_conflict="reject")
    holder = Client(url, reject, device_name="holder").start()
    try:
        with pytest.raises(SeatsFull) as caught:
            Client(url, reject, device_name="late").start()
        assert (caught.value.status, caught.value.code) == (409, "seats_full")
        assert holder.is_usable
    finally:
        assert holder.end() is True

    # Nothing listening: unreachable after the configured attempts.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with pytest.raises(ServerUnreachable) as caught:
        Client(f"http://127.0.0.1:{closed}", unknown, start_attempts=1).start()
    assert caught.value.status is None and caught.value.transient


def test_low_level_api_raises_typed_errors(server, key):
    api = Api(server.url)
    assert api.health()["status"] == "ok"
    sid = f"py-{uuid.uuid4()}"
    first = api.start(key, sid, "A")
    # Retrying a start with the same id is the same start (what Client.start
    # relies on to retry safely).
    again = api.start(key, sid, "A")
    assert again["session_id"] == sid and again["fence"] == first["fence"]
    assert again["previous_session_terminated"] is False
    assert api.heartbeat(key, sid)["session_id"] == sid
    other = api.start(key, f"py-{uuid.uuid4()}", "B")
    with pytest.raises(SessionSuperseded) as caught:
        api.heartbeat(key, sid)
    assert caught.value.status == 409 and caught.value.device_name == "B"
    assert caught.value.superseded_at
    assert api.end(key, other["session_id"]) == {"ended": True}
    with pytest.raises(SessionEnded):
        api.heartbeat(key, other["session_id"])
    assert api.end(key, other["session_id"])["ended"] is False
    with pytest.raises(SessionNotFound):
        api.heartbeat(key, f"py-{uuid.uuid4()}")
    with pytest.raises(SessionIdTaken) as caught:
        api.start(key, sid, "A again")
    assert isinstance(caught.value, KeyseatError) and caught.value.code == "session_id_taken"


def test_backoff_is_exponential_with_equal_jitter_capped_and_honours_retry_after():
    from keyseat_client.session import backoff

    for attempt in range(1, 10):
        expected = min(0.5 * 2 ** (attempt - 1), 8.0)
        delays = [backoff(attempt, 8.0) for _ in range(200)]
        assert all(expected / 2 <= d <= expected for d in delays), (attempt, delays)
        assert max(delays) - min(delays) > 0, "jittered"
    assert backoff(1, 8.0, retry_after=3.0) >= 3.0
