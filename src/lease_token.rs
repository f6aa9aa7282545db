//! The lease token a borrow hands out (docs/api.md, "Borrowing (offline
//! use)"): a compact JWS (RFC 7515), `alg` `EdDSA` (RFC 8037), signed by
//! the server's current signing key, that an app checks offline with the
//! public key it pins.
//!
//! Why a JWS and not our own format: an app may check it with any JOSE
//! library (the tests use PyJWT and npm's `jose`), and the claims are the
//! registered JWT ones where one fits (`iss`, `sub`, `iat`, `exp`). The
//! encoding is written here (two base64url JSON parts and a signature,
//! RFC 7515 section 7.1); the signature is ed25519-dalek's, as for the
//! signed answers.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::Signature;
use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::signing::{KeySet, PinnedKey};

/// The issuer every lease token names.
pub const ISSUER: &str = "keyseat";

/// What a lease token says: this session of this key holds its seat
/// offline until `exp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseClaims {
    /// Always [`ISSUER`].
    pub iss: String,
    /// The session id.
    pub sub: String,
    /// The display prefix of the key (`ks_` and 8 characters).
    pub key_prefix: String,
    /// The session's fence.
    pub fence: i64,
    /// The device's fingerprint, when the borrow gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_fingerprint: Option<String>,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// The end of the borrow, `borrowed_until` (Unix seconds).
    pub exp: i64,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    kid: String,
    typ: String,
}

/// Signs `claims` with the current key of `keys`.
pub fn issue(keys: &KeySet, claims: &LeaseClaims) -> String {
    let header = Header {
        alg: "EdDSA".into(),
        kid: keys.current_kid().to_owned(),
        typ: "JWT".into(),
    };
    let input = format!("{}.{}", part(&header), part(claims));
    let (_, sig) = keys.sign_raw(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

fn part<T: Serialize>(value: &T) -> String {
    // Serializing plain structs of strings and integers cannot fail.
    let json = serde_json::to_vec(value).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

/// Why a lease token is not to be believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseTokenError {
    /// Not three base64url parts of JSON.
    #[error("the lease token is not a compact JWS")]
    Malformed,
    /// A header naming another algorithm (`none`, HS256...).
    #[error("the lease token's algorithm is {0}, not EdDSA")]
    WrongAlgorithm(String),
    /// Signed by a key the app did not pin.
    #[error("the lease token is signed by a key that is not pinned (kid {0})")]
    UnknownKey(String),
    /// The signature does not match the header and claims.
    #[error("the lease token's signature does not match its claims")]
    BadSignature,
    /// Not issued by keyseat.
    #[error("the lease token is not issued by keyseat")]
    WrongIssuer,
    /// Past its `exp`.
    #[error("the lease token ran out at {0}")]
    Expired(Timestamp),
    /// The public key it was to be checked with is unusable.
    #[error("{0}")]
    BadPublicKey(String),
}

/// Checks a lease token the way an offline app must: EdDSA, signed by one
/// of the `pinned` keys over exactly its first two parts, issued by
/// keyseat, and not past its `exp` at `now`.
pub fn verify(
    token: &str,
    pinned: &[PinnedKey],
    now: Timestamp,
) -> Result<LeaseClaims, LeaseTokenError> {
    use LeaseTokenError as E;
    let mut parts = token.trim().split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(E::Malformed);
    };
    let decode = |text: &str| URL_SAFE_NO_PAD.decode(text).map_err(|_| E::Malformed);
    let header: Header = serde_json::from_slice(&decode(h)?).map_err(|_| E::Malformed)?;
    if header.alg != "EdDSA" {
        return Err(E::WrongAlgorithm(header.alg));
    }
    let key = pinned
        .iter()
        .find(|p| p.kid() == header.kid)
        .ok_or_else(|| E::UnknownKey(header.kid.clone()))?;
    let sig: [u8; 64] = decode(s)?.as_slice().try_into().map_err(|_| E::Malformed)?;
    let signed = &token.trim()[..h.len() + 1 + c.len()];
    if !key.verifies(signed.as_bytes(), &Signature::from_bytes(&sig)) {
        return Err(E::BadSignature);
    }
    let claims: LeaseClaims = serde_json::from_slice(&decode(c)?).map_err(|_| E::Malformed)?;
    if claims.iss != ISSUER {
        return Err(E::WrongIssuer);
    }
    let exp = Timestamp(claims.exp.saturating_mul(1000));
    if now >= exp {
        return Err(E::Expired(exp));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::KeyRecord;

    const T0: Timestamp = Timestamp(1_800_000_000_000);

    fn keys() -> (KeySet, PinnedKey) {
        let record = KeyRecord::generate(T0);
        let pinned = PinnedKey::parse(&record.jwk().x).unwrap();
        (KeySet::new(&[record], T0, 30).unwrap(), pinned)
    }

    fn claims() -> LeaseClaims {
        LeaseClaims {
            iss: ISSUER.into(),
            sub: "3f1c9a7e-laptop".into(),
            key_prefix: "ks_abcdefgh".into(),
            fence: 7,
            device_fingerprint: Some("fp-1".into()),
            iat: T0.0 / 1000,
            exp: T0.0 / 1000 + 3600,
        }
    }

    /// A token verifies with the key that signed it, until its exp.
    #[test]
    fn a_token_verifies_offline_until_it_runs_out() {
        let (set, pinned) = keys();
        let token = issue(&set, &claims());
        assert_eq!(token.split('.').count(), 3);
        assert_eq!(
            verify(&token, std::slice::from_ref(&pinned), T0),
            Ok(claims())
        );
        let at_exp = T0.plus_secs(3600);
        assert!(matches!(
            verify(&token, &[pinned], at_exp),
            Err(LeaseTokenError::Expired(t)) if t == at_exp
        ));
    }

    /// Changed claims, another key, another algorithm and garbage are
    /// each refused with their own reason.
    #[test]
    fn a_forged_token_is_refused() {
        let (set, pinned) = keys();
        let (_, other) = keys();
        let token = issue(&set, &claims());
        let pins = [pinned];
        let (h, rest) = token.split_once('.').unwrap();
        let (_, s) = rest.split_once('.').unwrap();
        let mut longer = claims();
        longer.exp += 86_400;
        let forged = format!("{h}.{}.{s}", part(&longer));
        assert_eq!(
            verify(&forged, &pins, T0),
            Err(LeaseTokenError::BadSignature)
        );
        assert!(matches!(
            verify(&token, &[other], T0),
            Err(LeaseTokenError::UnknownKey(_))
        ));
        let none = Header {
            alg: "none".into(),
            kid: pins[0].kid().into(),
            typ: "JWT".into(),
        };
        let unsigned = format!("{}.{}.", part(&none), part(&claims()));
        assert_eq!(
            verify(&unsigned, &pins, T0),
            Err(LeaseTokenError::WrongAlgorithm("none".into()))
        );
        for garbage in ["", "a.b", "a.b.c.d", "!!.??.**"] {
            assert_eq!(
                verify(garbage, &pins, T0),
                Err(LeaseTokenError::Malformed),
                "{garbage}"
            );
        }
        let mut foreign = claims();
        foreign.iss = "someone-else".into();
        assert_eq!(
            verify(&issue(&set, &foreign), &pins, T0),
            Err(LeaseTokenError::WrongIssuer)
        );
    }
}
