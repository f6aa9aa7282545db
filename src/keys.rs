//! The access key format: generation, checksum, hashing and the display
//! prefix.
//!
//! An access key is `ks_` + 32 random base62 characters + 6 base62
//! characters of CRC32 over everything before them (`ks_` and the random
//! part), most significant digit first, left-padded with `0` — the scheme
//! GitHub uses for its tokens. The checksum lets the server refuse a typo or
//! a guess without touching the database, and lets a client catch a typo
//! before it sends anything. Keys are stored only as SHA-256 digests; the
//! first 8 random characters (the *prefix*) are the only part ever shown
//! again or logged.

use rand::rngs::OsRng;
use rand::Rng;
use sha2::{Digest, Sha256};

/// The base62 alphabet, in digit order.
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// What every access key starts with.
pub const KEY_TAG: &str = "ks_";
/// Random characters in a key: 32 × log2(62) ≈ 190 bits.
pub const RANDOM_LEN: usize = 32;
/// Checksum characters: 62^6 > 2^32, so any CRC32 fits.
pub const CHECKSUM_LEN: usize = 6;
/// Total length of a well-formed key.
pub const KEY_LEN: usize = KEY_TAG.len() + RANDOM_LEN + CHECKSUM_LEN;
/// Characters of the random part that make up the display prefix.
pub const PREFIX_LEN: usize = 8;

/// A SHA-256 digest of an access key: what the database stores.
pub type KeyHash = [u8; 32];

/// A key's tag: the first 8 bytes of its hash. The in-memory seat table
/// and the rate limiters name a key by it (a u64 is cheap to hash and
/// compare, and 64 bits of SHA-256 do not collide among real keys).
pub fn key_tag(hash: &KeyHash) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&hash[..8]);
    u64::from_le_bytes(b)
}

/// A syntactically valid access key (checksum verified). Its `Debug` never
/// shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKey(String);

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccessKey({}…)", self.prefix())
    }
}

/// Why a string is not an access key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    /// Wrong length or does not start with `ks_`.
    #[error("an access key is `ks_` followed by 38 letters and digits")]
    Shape,
    /// A character outside `0-9A-Za-z`.
    #[error("an access key contains only letters and digits after `ks_`")]
    Alphabet,
    /// The last 6 characters do not match the rest: a typo.
    #[error("the access key's checksum does not match (is there a typo?)")]
    Checksum,
}

impl AccessKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> AccessKey {
        let mut rng = OsRng;
        let mut body = String::with_capacity(KEY_LEN);
        body.push_str(KEY_TAG);
        for _ in 0..RANDOM_LEN {
            body.push(BASE62[rng.gen_range(0..62)] as char);
        }
        let checksum = checksum_of(&body);
        body.push_str(&checksum);
        AccessKey(body)
    }

    /// Checks the shape, the alphabet and the checksum.
    pub fn parse(text: &str) -> Result<AccessKey, KeyFormatError> {
        if text.len() != KEY_LEN || !text.starts_with(KEY_TAG) {
            return Err(KeyFormatError::Shape);
        }
        let rest = &text[KEY_TAG.len()..];
        if !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(KeyFormatError::Alphabet);
        }
        let (body, checksum) = text.split_at(KEY_LEN - CHECKSUM_LEN);
        if checksum_of(body) != checksum {
            return Err(KeyFormatError::Checksum);
        }
        Ok(AccessKey(text.to_owned()))
    }

    /// The secret itself. Only for showing it once at creation.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// The SHA-256 digest that the database stores.
    pub fn hash(&self) -> KeyHash {
        Sha256::digest(self.0.as_bytes()).into()
    }

    /// `ks_` and the first 8 random characters: safe to show and log.
    pub fn prefix(&self) -> String {
        self.0[..KEY_TAG.len() + PREFIX_LEN].to_owned()
    }
}

/// The prefix of what a request sent as its access key, as a signed
/// answer echoes it: `ks_` and the next 8 characters when the text starts
/// like a key, else nothing (so a key sent in the wrong shape is never
/// echoed beyond what [`AccessKey::prefix`] would show).
pub fn shown_prefix(text: &str) -> Option<String> {
    let text = text.trim();
    let prefix = text.get(..KEY_TAG.len() + PREFIX_LEN)?;
    (prefix.starts_with(KEY_TAG)
        && prefix[KEY_TAG.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric()))
    .then(|| prefix.to_owned())
}

/// The 6-character base62 CRC32 of `body`.
fn checksum_of(body: &str) -> String {
    encode_base62(u64::from(crc32fast::hash(body.as_bytes())), CHECKSUM_LEN)
}

/// Base62, most significant digit first, left-padded with `0` to `width`.
fn encode_base62(mut value: u64, width: usize) -> String {
    let mut digits = vec![b'0'; width];
    for slot in digits.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    String::from_utf8(digits).expect("base62 digits are ASCII")
}

/// A random base62 string (for key ids).
fn random_base62(len: usize) -> String {
    let mut rng = OsRng;
    (0..len)
        .map(|_| BASE62[rng.gen_range(0..62)] as char)
        .collect()
}

/// A new public key id: `key_` + 16 random base62 characters. Key ids are
/// never accepted where the secret is required.
pub fn new_key_id() -> String {
    format!("key_{}", random_base62(16))
}

/// Echoes operator input in an error, unless it looks like an access key
/// (someone pasted the secret in the wrong place): then only its prefix.
pub fn redact_secret(text: &str) -> String {
    // From every `ks_`, wherever it starts (after a quote, a byte-order
    // mark, a bracket, other letters), the run of key-like characters
    // (`[A-Za-z0-9_]`) is cut to its prefix, so a key hidden later in the
    // run (`ks_ks_<key>`, `ks_AAAAks_<key>`) is cut with it.
    let key_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(KEY_TAG) {
        let run_len = rest[at..]
            .find(|c: char| !key_char(c))
            .unwrap_or(rest.len() - at);
        out.push_str(&rest[..at]);
        out.push_str(&redact(&rest[at..at + run_len]));
        rest = &rest[at + run_len..];
    }
    out.push_str(rest);
    out
}

/// Shortens anything that might be an access key to what may be logged.
pub fn redact(text: &str) -> String {
    let keep = KEY_TAG.len() + PREFIX_LEN;
    match text.char_indices().nth(keep) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_have_the_documented_shape() {
        for _ in 0..100 {
            let key = AccessKey::generate();
            let text = key.expose_secret();
            assert_eq!(text.len(), 41);
            assert!(text.starts_with("ks_"));
            assert_eq!(AccessKey::parse(text), Ok(key.clone()));
            assert_eq!(key.prefix(), &text[..11]);
        }
    }

    #[test]
    fn a_single_changed_character_is_caught_by_the_checksum() {
        let key = AccessKey::generate();
        let text = key.expose_secret();
        for i in 3..text.len() {
            let mut bytes = text.as_bytes().to_vec();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let typo = String::from_utf8(bytes).unwrap();
            assert_eq!(AccessKey::parse(&typo), Err(KeyFormatError::Checksum));
        }
    }

    #[test]
    fn checksum_matches_a_known_vector() {
        // CRC32("ks_" + 32 zeros) computed independently; pins the encoding
        // (base62, most significant digit first, zero-padded) for clients.
        let body = format!("ks_{}", "0".repeat(32));
        let crc = crc32fast::hash(body.as_bytes());
        let expected = encode_base62(u64::from(crc), 6);
        let key = format!("{body}{expected}");
        assert!(AccessKey::parse(&key).is_ok());
        assert_eq!(encode_base62(0, 6), "000000");
        assert_eq!(encode_base62(61, 6), "00000z");
        assert_eq!(encode_base62(62, 6), "000010");
        assert_eq!(encode_base62(u64::from(u32::MAX), 6), "4gfFC3");
    }

    #[test]
    fn malformed_keys_are_refused_with_a_reason() {
        assert_eq!(AccessKey::parse(""), Err(KeyFormatError::Shape));
        assert_eq!(AccessKey::parse("key_abc"), Err(KeyFormatError::Shape));
        let bad = format!("ks_{}", "!".repeat(38));
        assert_eq!(AccessKey::parse(&bad), Err(KeyFormatError::Alphabet));
        let wrong_tag = format!("xx_{}", "a".repeat(38));
        assert_eq!(AccessKey::parse(&wrong_tag), Err(KeyFormatError::Shape));
        // multi-byte characters must not panic the length/slicing logic
        let unicode = format!("ks_{}é", "a".repeat(36));
        assert!(AccessKey::parse(&unicode).is_err());
    }

    #[test]
    fn debug_and_redact_never_show_the_secret() {
        let key = AccessKey::generate();
        let secret = key.expose_secret().to_owned();
        assert!(!format!("{key:?}").contains(&secret[11..]));
        assert_eq!(redact(&secret), format!("{}…", &secret[..11]));
        assert_eq!(redact("short"), "short");
    }

    #[test]
    fn key_ids_are_distinct_and_prefixed() {
        let a = new_key_id();
        let b = new_key_id();
        assert!(a.starts_with("key_") && a.len() == 20);
        assert_ne!(a, b);
    }
}
