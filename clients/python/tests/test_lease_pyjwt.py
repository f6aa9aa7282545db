"""The lease token checked by PyJWT, an independent JOSE implementation
that shares no code with the server or the client: a genuine token
verifies with the pinned key (as raw bytes and as the JWK the server
lists) and its claims are the client's; a changed claim, an expired token,
another key's signature and another algorithm are refused by PyJWT and by
:func:`verify_lease_token` alike.

PyJWT is pinned in run-tests.sh; without it these tests skip, except under
CI (``CI`` or ``KEYSEAT_REQUIRE_PYJWT`` set), where they fail."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from conftest import b64url, unb64url
from keyseat_client import (
    Client,
    InvalidLeaseToken,
    LeaseTokenProblem,
    verify_lease_token,
)

try:
    import jwt
except ImportError:  # pragma: no cover - CI installs it
    jwt = None  # type: ignore[assignment]


@pytest.fixture(autouse=True)
def pyjwt() -> Any:
    if jwt is None:
        if os.environ.get("KEYSEAT_REQUIRE_PYJWT") or os.environ.get("CI"):
            pytest.fail("PyJWT is not installed and CI/KEYSEAT_REQUIRE_PYJWT is set")
        pytest.skip("PyJWT is not installed (bash clients/python/run-tests.sh installs it)")
    return jwt


@pytest.fixture(scope="module")
def public_key(server: Any) -> str:
    return server.pinned_key()


@pytest.fixture
def borrowed(server: Any, public_key: str) -> Any:
    key = server.key(label="pyjwt", max_borrow_hours=24)
    b = Client(server.url, key, fingerprint="fp-pyjwt", public_key=public_key).borrow(2)
    yield b
    b.give_back()


def server_key(public_key: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(unb64url(public_key))


def test_pyjwt_verifies_the_lease_token(server, public_key, borrowed):
    token = borrowed.lease_token
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA" and header["typ"] == "JWT"
    decoded = jwt.decode(token, key=server_key(public_key), algorithms=["EdDSA"], issuer="keyseat",
                         options={"require": ["exp", "iat", "iss", "sub"]})
    ours = verify_lease_token(token, public_key)
    assert decoded == {
        "iss": "keyseat",
        "sub": borrowed.session_id,
        "key_prefix": ours.key_prefix,
        "fence": borrowed.fence,
        "device_fingerprint": "fp-pyjwt",
        "iat": ours.iat,
        "exp": ours.exp,
    }
    # The same with the JWK the server lists, its kid the token's.
    status, jwks = server.call("GET", "/api/signing-keys")
    assert status == 200
    [jwk] = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    assert jwk["x"] == public_key
    assert jwt.decode(token, key=jwt.PyJWK(jwk), algorithms=["EdDSA"], issuer="keyseat") == decoded


def test_a_changed_claim_is_refused_by_both(public_key, borrowed):
    h, c, s = borrowed.lease_token.split(".")
    claims = json.loads(unb64url(c))
    claims["exp"] += 7 * 86_400
    longer = f"{h}.{b64url(json.dumps(claims, separators=(',', ':')).encode())}.{s}"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(longer, key=server_key(public_key), algorithms=["EdDSA"])
    with pytest.raises(InvalidLeaseToken) as e:
        verify_lease_token(longer, public_key)
    assert e.value.reason is LeaseTokenProblem.BAD_SIGNATURE


def test_an_expired_token_is_refused_by_both(public_key, borrowed):
    token = borrowed.lease_token
    claims = verify_lease_token(token, public_key)
    # A negative leeway moves PyJWT's clock forward (its iat check, which
    # the same leeway would trip, is off): a minute before exp the token is
    # good, a minute after it has run out.
    later = {"verify_iat": False}
    key = server_key(public_key)
    assert jwt.decode(token, key=key, algorithms=["EdDSA"], options=later,
                      leeway=-(claims.exp - claims.iat - 60))["exp"] == claims.exp
    with pytest.raises(jwt.ExpiredSignatureError):
        jwt.decode(token, key=key, algorithms=["EdDSA"], options=later,
                   leeway=-(claims.exp - claims.iat + 60))
    with pytest.raises(InvalidLeaseToken) as e:
        verify_lease_token(token, public_key, now=claims.exp + 60)
    assert e.value.reason is LeaseTokenProblem.EXPIRED


def test_another_keys_token_and_another_algorithm_are_refused_by_both(public_key, borrowed):
    token = borrowed.lease_token
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    other = Ed25519PrivateKey.generate()
    # PyJWT signs a token with another key, under the server's kid.
    forged = jwt.encode(claims, other, algorithm="EdDSA", headers={"kid": header["kid"]})
    assert jwt.decode(forged, key=other.public_key(), algorithms=["EdDSA"]) == claims
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(forged, key=server_key(public_key), algorithms=["EdDSA"])
    with pytest.raises(InvalidLeaseToken) as e:
        verify_lease_token(forged, public_key)
    assert e.value.reason is LeaseTokenProblem.BAD_SIGNATURE
    # The genuine token against another pinned key.
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, key=other.public_key(), algorithms=["EdDSA"])
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    other_pin = b64url(other.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    with pytest.raises(InvalidLeaseToken) as e:
        verify_lease_token(token, other_pin)
    assert e.value.reason is LeaseTokenProblem.UNKNOWN_KEY
    # An HS256 token (keyed with the public key's bytes) is refused by both.
    hs = jwt.encode(claims, unb64url(public_key) * 2, algorithm="HS256", headers={"kid": header["kid"]})
    with pytest.raises(jwt.InvalidAlgorithmError):
        jwt.decode(hs, key=server_key(public_key), algorithms=["EdDSA"])
    with pytest.raises(InvalidLeaseToken) as e:
        verify_lease_token(hs, public_key)
    assert e.value.reason is LeaseTokenProblem.WRONG_ALGORITHM
    # A token of another issuer, signed by a pinned key: PyJWT's issuer check and ours.
    foreign = jwt.encode(dict(claims, iss="someone-else"), other, algorithm="EdDSA",
                         headers={"kid": verify_kid(other_pin)})
    with pytest.raises(jwt.InvalidIssuerError):
        jwt.decode(foreign, key=other.public_key(), algorithms=["EdDSA"], issuer="keyseat")
    with pytest.raises(InvalidLeaseToken) as e:
        verify_lease_token(foreign, other_pin)
    assert e.value.reason is LeaseTokenProblem.WRONG_ISSUER


def verify_kid(pin: str) -> str:
    from keyseat_client.signing import kid_of

    return kid_of(unb64url(pin))
