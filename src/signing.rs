//! Signed answers (docs/api.md, "Signed answers"): the server's Ed25519
//! keys, which one signs and which are listed, the `Keyseat-Signature`
//! header, and its check on the device's side.
//!
//! Why: an app that believes any `200 {"fence": 1}` can be unlocked by a
//! ten-line fake server. An app that pins keyseat's public key, sends a
//! fresh nonce and checks the signature over the exact body bytes, the
//! echoed nonce and its own key's prefix can be fooled neither by a server
//! without the private key nor by an answer replayed from another request
//! or another key. Signing does not protect an app whose binary is patched
//! to skip the check; nothing on the server can.
//!
//! The keys live in the database (one set shared by every server on a
//! PostgreSQL database), or one key in a PEM file (`signing_key_file`).
//! The current key signs; a rotation makes a new current key and keeps the
//! old one listed (`GET /api/signing-keys`) for `signing_key_overlap_days`,
//! so that answers and lease tokens it signed still verify against the
//! published set. The private key is never printed: [`KeyRecord`]'s
//! `Debug` leaves it out, and nothing serializes it.

use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::wire::{Jwk, JwkSet};

/// The response header that carries the signature.
pub const SIGNATURE_HEADER: &str = "keyseat-signature";

/// One signing key as the database keeps it.
#[derive(Clone)]
pub struct KeyRecord {
    /// RFC 7638 thumbprint of the public key (see [`kid_of`]).
    pub kid: String,
    /// The Ed25519 seed; `None` where only the public half is known (the
    /// CLI asking a running server, which never hands out the private key).
    pub secret: Option<Zeroizing<[u8; 32]>>,
    pub public: [u8; 32],
    pub created_at: Timestamp,
    /// When a newer key became current; `None` for the current key.
    pub retired_at: Option<Timestamp>,
}

impl std::fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRecord")
            .field("kid", &self.kid)
            .field("public", &encode(&self.public))
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

impl KeyRecord {
    /// A new random key, current from `now`.
    pub fn generate(now: Timestamp) -> KeyRecord {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        KeyRecord::from_signing_key(&key, now)
    }

    /// The key from a seed and its public half as stored (the public half
    /// is recomputed, so a damaged row is refused rather than used).
    pub fn from_parts(
        secret: &[u8],
        public: &[u8],
        created_at: Timestamp,
        retired_at: Option<Timestamp>,
    ) -> Result<KeyRecord> {
        let seed: [u8; 32] = secret
            .try_into()
            .map_err(|_| Error::Database("a stored signing key is not 32 bytes".into()))?;
        let key = SigningKey::from_bytes(&seed);
        if key.verifying_key().as_bytes()[..] != public[..] {
            return Err(Error::Database(
                "a stored signing key does not match its public key".into(),
            ));
        }
        let mut record = KeyRecord::from_signing_key(&key, created_at);
        record.retired_at = retired_at;
        Ok(record)
    }

    /// A public half alone (base64url), as the CLI learns it from a
    /// running server.
    pub fn from_public(
        x: &str,
        created_at: Timestamp,
        retired_at: Option<Timestamp>,
    ) -> std::result::Result<KeyRecord, String> {
        let pinned = PinnedKey::parse(x)?;
        Ok(KeyRecord {
            kid: pinned.kid,
            secret: None,
            public: pinned.key.to_bytes(),
            created_at,
            retired_at,
        })
    }

    /// The key in a PKCS#8 PEM file, as `openssl genpkey -algorithm
    /// ed25519` writes it (`signing_key_file`).
    pub fn from_pem_file(path: &std::path::Path) -> Result<KeyRecord> {
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "cannot read signing_key_file {}: {e}",
                path.display()
            ))
        })?);
        let key = SigningKey::from_pkcs8_pem(&text).map_err(|_| {
            Error::Config(format!(
                "signing_key_file {} is not an Ed25519 private key in PEM (PKCS#8); \
                 make one with: openssl genpkey -algorithm ed25519 -out {}",
                path.display(),
                path.display()
            ))
        })?;
        Ok(KeyRecord::from_signing_key(&key, Timestamp(0)))
    }

    fn from_signing_key(key: &SigningKey, now: Timestamp) -> KeyRecord {
        let public = key.verifying_key().to_bytes();
        KeyRecord {
            kid: kid_of(&public),
            secret: Some(Zeroizing::new(key.to_bytes())),
            public,
            created_at: now,
            retired_at: None,
        }
    }

    /// The public half only.
    pub fn public_only(&self) -> KeyRecord {
        KeyRecord {
            secret: None,
            ..self.clone()
        }
    }

    /// Its JWK (RFC 8037).
    pub fn jwk(&self) -> Jwk {
        Jwk::ed25519(self.kid.clone(), encode(&self.public))
    }
}

/// The key id: the RFC 7638 JWK thumbprint (SHA-256 over the canonical
/// `{"crv","kty","x"}` members, base64url), so any JOSE library computes
/// the same id from the published key.
pub fn kid_of(public: &[u8; 32]) -> String {
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        encode(public)
    );
    encode(&Sha256::digest(canonical.as_bytes()))
}

fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The keys one server signs with and lists, at one moment.
pub struct KeySet {
    current: SigningKey,
    current_kid: String,
    listed: Vec<KeyRecord>,
}

impl KeySet {
    /// The set from the stored keys: the newest key not retired signs, and
    /// every key retired less than `overlap_days` before `now` is listed
    /// beside it. `None` when no stored key can sign.
    pub fn new(records: &[KeyRecord], now: Timestamp, overlap_days: u32) -> Option<KeySet> {
        let current = current(records).filter(|r| r.secret.is_some())?;
        let seed = current.secret.as_deref()?;
        Some(KeySet {
            current: SigningKey::from_bytes(seed),
            current_kid: current.kid.clone(),
            listed: listed(records, now, overlap_days),
        })
    }

    /// The kid of the key that signs.
    pub fn current_kid(&self) -> &str {
        &self.current_kid
    }

    /// The published set (`GET /api/signing-keys`).
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: self.listed.iter().map(KeyRecord::jwk).collect(),
        }
    }

    /// The current key's kid and its raw signature over `bytes` (a lease
    /// token's signing input: [`crate::lease_token`]).
    pub fn sign_raw(&self, bytes: &[u8]) -> (&str, [u8; 64]) {
        (&self.current_kid, self.current.sign(bytes).to_bytes())
    }

    /// The `Keyseat-Signature` value for a body.
    pub fn sign(&self, body: &[u8]) -> String {
        let sig = self.current.sign(body);
        format!(
            r#"kid="{}", sig="{}""#,
            self.current_kid,
            encode(&sig.to_bytes())
        )
    }
}

/// The key that signs: the newest one not retired.
pub fn current(records: &[KeyRecord]) -> Option<&KeyRecord> {
    records
        .iter()
        .filter(|r| r.retired_at.is_none())
        .max_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid)))
}

/// The keys published at `now` (public halves): the current one first,
/// then those retired less than `overlap_days` ago, newest first.
pub fn listed(records: &[KeyRecord], now: Timestamp, overlap_days: u32) -> Vec<KeyRecord> {
    let overlap_ms = i64::from(overlap_days) * 86_400_000;
    let current_kid = current(records).map(|r| r.kid.clone());
    let mut listed: Vec<KeyRecord> = records
        .iter()
        .filter(|r| listed_at(r, now, overlap_ms))
        .map(KeyRecord::public_only)
        .collect();
    listed.sort_by_key(|r| {
        (
            Some(&r.kid) != current_kid.as_ref(),
            std::cmp::Reverse(r.created_at),
        )
    });
    listed
}

/// Whether a stored key is still listed at `now`.
fn listed_at(record: &KeyRecord, now: Timestamp, overlap_ms: i64) -> bool {
    record
        .retired_at
        .is_none_or(|at| now.0 < at.0.saturating_add(overlap_ms))
}

/// The key set a server signs with, replaced when the stored keys change
/// (a rotation on this server or, on PostgreSQL, on another).
#[derive(Default)]
pub struct Signer {
    keys: RwLock<Option<Arc<KeySet>>>,
}

impl Signer {
    /// The set in use (`None` until the store opened).
    pub fn keys(&self) -> Option<Arc<KeySet>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Uses `set` from now on; logs when the signing key changed.
    pub fn replace(&self, set: KeySet) {
        let mut held = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let changed = held
            .as_ref()
            .is_none_or(|old| old.current_kid != set.current_kid);
        if changed {
            tracing::info!(kid = %set.current_kid, "answers are signed with this key");
        }
        *held = Some(Arc::new(set));
    }
}

/// Why a device refuses an answer as not keyseat's (see [`verify`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Forgery {
    #[error("the answer is not signed")]
    Unsigned,
    #[error("the answer's signature header is malformed")]
    Malformed,
    #[error("the answer is signed by a key that is not pinned (kid {0})")]
    UnknownKey(String),
    #[error("the answer's signature does not match its body")]
    BadSignature,
    #[error("the answer is for another request (its nonce does not match)")]
    WrongNonce,
    #[error("the answer is for another access key (its key prefix does not match)")]
    WrongKey,
    /// The signature covers the body, not the HTTP status: an error body
    /// under a 2xx status (or the reverse) was relabelled on the way.
    #[error("the answer's HTTP status does not match its signed body")]
    WrongStatus,
}

/// A public key the app pins: 32 raw bytes, given as the base64url text
/// `keyseat signing-key show` prints (or a JWK's `x`).
#[derive(Clone, PartialEq, Eq)]
pub struct PinnedKey {
    kid: String,
    key: VerifyingKey,
}

impl std::fmt::Debug for PinnedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PinnedKey({})", self.kid)
    }
}

impl PinnedKey {
    /// Parses the base64url public key (43 characters, padding allowed).
    pub fn parse(text: &str) -> std::result::Result<PinnedKey, String> {
        let text = text.trim().trim_end_matches('=');
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| {
            "the public key is not base64url (the 43-character text `keyseat signing-key show` prints)"
                .to_string()
        })?;
        let bytes: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            format!(
                "the public key is {} bytes; an Ed25519 public key is 32",
                bytes.len()
            )
        })?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| "the public key is not a valid Ed25519 point".to_string())?;
        Ok(PinnedKey {
            kid: kid_of(&bytes),
            key,
        })
    }

    /// Its key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Whether `sig` is this key's signature over exactly `bytes`.
    pub fn verifies(&self, bytes: &[u8], sig: &Signature) -> bool {
        self.key.verify_strict(bytes, sig).is_ok()
    }
}

/// Splits a `Keyseat-Signature` value into its kid and signature.
pub fn parse_header(value: &str) -> Option<(String, Signature)> {
    let (mut kid, mut sig) = (None, None);
    for part in value.split(',') {
        let (name, quoted) = part.trim().split_once('=')?;
        let inner = quoted.trim().strip_prefix('"')?.strip_suffix('"')?;
        match name.trim() {
            "kid" => kid = Some(inner.to_owned()),
            "sig" => sig = Some(inner.to_owned()),
            _ => {}
        }
    }
    let bytes = URL_SAFE_NO_PAD.decode(sig?).ok()?;
    let bytes: [u8; 64] = bytes.as_slice().try_into().ok()?;
    Some((kid?, Signature::from_bytes(&bytes)))
}

/// Checks an answer the way a device must before it acts on it: signed by
/// one of the pinned keys over exactly `body`, its `status` agreeing with
/// the body (an `error` object exactly when not 2xx, since the signature
/// does not cover the status), and echoing `nonce` and the prefix of the
/// device's own key (`None`: the server echoes `null`).
pub fn verify(
    pinned: &[PinnedKey],
    status: u16,
    header: Option<&str>,
    body: &[u8],
    nonce: &str,
    key_prefix: Option<&str>,
) -> std::result::Result<(), Forgery> {
    let header = header.ok_or(Forgery::Unsigned)?;
    let (kid, sig) = parse_header(header).ok_or(Forgery::Malformed)?;
    let key = pinned
        .iter()
        .find(|p| p.kid == kid)
        .ok_or_else(|| Forgery::UnknownKey(kid.clone()))?;
    key.key
        .verify_strict(body, &sig)
        .map_err(|_| Forgery::BadSignature)?;
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| Forgery::BadSignature)?;
    let error = value.get("error").filter(|e| e.is_object());
    if error.is_some() == (200..300).contains(&status) {
        return Err(Forgery::WrongStatus);
    }
    // An error's echo sits inside `error`.
    let fields = error.unwrap_or(&value);
    if fields.get("nonce").and_then(|n| n.as_str()) != Some(nonce) {
        return Err(Forgery::WrongNonce);
    }
    if fields.get("key_prefix").and_then(|p| p.as_str()) != key_prefix {
        return Err(Forgery::WrongKey);
    }
    Ok(())
}

/// A fresh random nonce for one request (22 base64url characters, 128
/// bits).
pub fn new_nonce() -> String {
    let bytes: [u8; 16] = rand::random();
    encode(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_of(records: &[KeyRecord], now: i64) -> KeySet {
        KeySet::new(records, Timestamp(now), 30).expect("a current key")
    }

    #[test]
    fn the_kid_is_the_rfc_7638_thumbprint() {
        // RFC 8037, appendix A.3: the thumbprint of the example key.
        let x = URL_SAFE_NO_PAD
            .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .unwrap();
        let x: [u8; 32] = x.try_into().unwrap();
        assert_eq!(kid_of(&x), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn a_signed_body_verifies_and_a_changed_one_does_not() {
        let key = KeyRecord::generate(Timestamp(1));
        let set = set_of(std::slice::from_ref(&key), 1);
        let pinned = [PinnedKey::parse(&set.jwks().keys[0].x).unwrap()];
        let body = br#"{"fence":1,"nonce":"abcdefgh","key_prefix":"ks_12345678"}"#;
        let header = set.sign(body);
        assert_eq!(
            verify(
                &pinned,
                200,
                Some(&header),
                body,
                "abcdefgh",
                Some("ks_12345678")
            ),
            Ok(())
        );
        let mut flipped = body.to_vec();
        flipped[9] = b'2';
        assert_eq!(
            verify(
                &pinned,
                200,
                Some(&header),
                &flipped,
                "abcdefgh",
                Some("ks_12345678")
            ),
            Err(Forgery::BadSignature)
        );
        assert_eq!(
            verify(
                &pinned,
                200,
                Some(&header),
                body,
                "other-nonce",
                Some("ks_12345678")
            ),
            Err(Forgery::WrongNonce)
        );
        assert_eq!(
            verify(
                &pinned,
                200,
                Some(&header),
                body,
                "abcdefgh",
                Some("ks_87654321")
            ),
            Err(Forgery::WrongKey)
        );
        assert_eq!(
            verify(&pinned, 200, None, body, "abcdefgh", Some("ks_12345678")),
            Err(Forgery::Unsigned)
        );
        assert_eq!(
            verify(
                &pinned,
                409,
                Some(&header),
                body,
                "abcdefgh",
                Some("ks_12345678")
            ),
            Err(Forgery::WrongStatus),
            "a 200's body under another status"
        );
        let error =
            br#"{"error":{"code":"session_superseded","nonce":"abcdefgh","key_prefix":null}}"#;
        let signed_error = set.sign(error);
        assert_eq!(
            verify(&pinned, 409, Some(&signed_error), error, "abcdefgh", None),
            Ok(())
        );
        assert_eq!(
            verify(&pinned, 200, Some(&signed_error), error, "abcdefgh", None),
            Err(Forgery::WrongStatus),
            "a refusal relabelled 200"
        );
        let other =
            [
                PinnedKey::parse(&set_of(&[KeyRecord::generate(Timestamp(1))], 1).jwks().keys[0].x)
                    .unwrap(),
            ];
        assert!(matches!(
            verify(
                &other,
                200,
                Some(&header),
                body,
                "abcdefgh",
                Some("ks_12345678")
            ),
            Err(Forgery::UnknownKey(_))
        ));
    }

    #[test]
    fn a_retired_key_is_listed_for_the_overlap_then_dropped() {
        let day = 86_400_000;
        let mut old = KeyRecord::generate(Timestamp(0));
        old.retired_at = Some(Timestamp(10 * day));
        let new = KeyRecord::generate(Timestamp(10 * day));
        let both = [old.clone(), new.clone()];
        let during = set_of(&both, 39 * day);
        assert_eq!(during.current_kid(), new.kid);
        let kids: Vec<_> = during.jwks().keys.into_iter().map(|k| k.kid).collect();
        assert_eq!(kids, [new.kid.clone(), old.kid.clone()]);
        let after = set_of(&both, 40 * day);
        assert_eq!(after.jwks().keys.len(), 1);
    }

    #[test]
    fn debug_never_shows_the_private_key() {
        let key = KeyRecord::generate(Timestamp(0));
        let seed = encode(key.secret.as_deref().unwrap());
        let shown = format!("{key:?}");
        assert!(!shown.contains(&seed), "{shown}");
        assert!(shown.contains(&key.kid));
    }

    #[test]
    fn a_stored_key_that_does_not_match_its_public_half_is_refused() {
        let key = KeyRecord::generate(Timestamp(0));
        let other = KeyRecord::generate(Timestamp(0));
        assert!(KeyRecord::from_parts(
            key.secret.as_deref().unwrap(),
            &other.public,
            Timestamp(0),
            None
        )
        .is_err());
    }

    #[test]
    fn pinned_keys_are_parsed_with_clear_errors() {
        assert!(PinnedKey::parse("not base64!")
            .unwrap_err()
            .contains("base64url"));
        assert!(PinnedKey::parse("AAAA").unwrap_err().contains("32"));
    }

    #[test]
    fn the_header_round_trips() {
        let set = set_of(&[KeyRecord::generate(Timestamp(0))], 0);
        let header = set.sign(b"{}");
        let (kid, _) = parse_header(&header).unwrap();
        assert_eq!(kid, set.current_kid());
        assert!(parse_header("kid=abc").is_none());
        assert!(parse_header(r#"kid="a", sig="!!""#).is_none());
    }
}
