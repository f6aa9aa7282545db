//! `AccessKey::parse` on any bytes: never panics, agrees with the spec's
//! format (shape, alphabet, CRC32 checksum), and an accepted key
//! round-trips and is never shown beyond its prefix.
#![no_main]

use keyseat::keys::{self, AccessKey, KeyFormatError};
use libfuzzer_sys::fuzz_target;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn reference(text: &str) -> Result<(), KeyFormatError> {
    if text.len() != 41 || !text.starts_with("ks_") {
        return Err(KeyFormatError::Shape);
    }
    if !text[3..].bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(KeyFormatError::Alphabet);
    }
    let mut value = u64::from(crc32fast::hash(text[..35].as_bytes()));
    let mut digits = [b'0'; 6];
    for slot in digits.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    if digits != text.as_bytes()[35..] {
        return Err(KeyFormatError::Checksum);
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let got = AccessKey::parse(text);
    assert_eq!(got.as_ref().map(|_| ()).map_err(|e| *e), reference(text));
    let _ = keys::redact(text);
    let _ = keys::redact_secret(text);
    if let Ok(key) = got {
        assert_eq!(key.expose_secret(), text);
        assert_eq!(key.prefix(), &text[..11]);
        assert!(!format!("{key:?}").contains(&text[11..]));
    }
});
