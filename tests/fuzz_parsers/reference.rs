//! The reference model: each parser's rule written again, plainly, for
//! the targets to compare the real parser with.

use super::*;

pub const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The contract's checksum, written again from the spec ("Words"): CRC32
/// of everything before it, base62, most significant digit first,
/// left-padded with `0` to 6 characters.
pub fn reference_checksum(body: &str) -> String {
    let mut value = u64::from(crc32fast::hash(body.as_bytes()));
    let mut digits = [b'0'; 6];
    for slot in digits.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    String::from_utf8(digits.to_vec()).unwrap()
}

/// What `AccessKey::parse` must answer, from the spec.
pub fn reference_key(text: &str) -> Result<(), KeyFormatError> {
    if text.len() != 41 || !text.starts_with("ks_") {
        return Err(KeyFormatError::Shape);
    }
    if !text[3..].bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(KeyFormatError::Alphabet);
    }
    if reference_checksum(&text[..35]) != text[35..] {
        return Err(KeyFormatError::Checksum);
    }
    Ok(())
}

/// The contract's `session_id` rule, less ids that hold an access key
/// (docs/api.md: a key is refused wherever it would be stored and logged).
pub fn reference_session_id(id: &str) -> bool {
    (8..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !reference_holds_key(id)
}

/// `ks_` followed by at least 32 ASCII letters and digits, anywhere.
pub fn reference_holds_key(text: &str) -> bool {
    (0..text.len()).any(|i| {
        text.as_bytes()[i..].starts_with(b"ks_")
            && text.as_bytes()[i + 3..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric())
                .count()
                >= 32
    })
}

/// The invisible and direction-changing characters docs/api.md lists.
pub fn reference_invisible(c: char) -> bool {
    let n = c as u32;
    [
        (0xAD, 0xAD),
        (0x34F, 0x34F),
        (0x61C, 0x61C),
        (0x115F, 0x1160),
        (0x17B4, 0x17B5),
        (0x180B, 0x180F),
        (0x200B, 0x200F),
        (0x2028, 0x202E),
        (0x2060, 0x206F),
        (0x3164, 0x3164),
        (0xFE00, 0xFE0F),
        (0xFEFF, 0xFEFF),
        (0xFFA0, 0xFFA0),
        (0xFFF9, 0xFFFB),
        (0x1D173, 0x1D17A),
        (0xE0000, 0xE0FFF),
    ]
    .iter()
    .any(|&(lo, hi)| (lo..=hi).contains(&n))
}

/// Joiners and selectors, allowed right after a visible non-ASCII
/// character or another joiner (emoji sequences, joined scripts).
pub fn reference_joiner(c: char) -> bool {
    let n = c as u32;
    n == 0x200C || n == 0x200D || (0xFE00..=0xFE0F).contains(&n) || (0xE0100..=0xE01EF).contains(&n)
}

/// Whether `c` after `prev` is refused as hidden.
pub fn reference_hidden(prev: Option<char>, c: char) -> bool {
    if reference_joiner(c) {
        !prev.is_some_and(|p| !p.is_ascii() && (reference_joiner(p) || !reference_invisible(p)))
    } else {
        reference_invisible(c)
    }
}

/// What an optional text field must become: trimmed, empty = absent; `Err`
/// when it has control characters, invisible or direction-changing ones,
/// an access key, or is over `max` characters.
pub fn reference_text(value: &str, max: usize) -> Result<Option<String>, ()> {
    let t = value.trim();
    let mut prev = None;
    let hidden = t.chars().any(|c| {
        let h = reference_hidden(prev, c);
        prev = Some(c);
        h
    });
    if t.chars().any(char::is_control)
        || hidden
        || reference_holds_key(t)
        || t.chars().count() > max
    {
        return Err(());
    }
    Ok((!t.is_empty()).then(|| t.to_owned()))
}

/// Every full access key-looking run (`ks_` + 38 alphanumerics) in `text`.
pub fn full_keys_in(text: &str) -> Vec<String> {
    keys_in(text).0
}

pub fn keys_in(text: &str) -> (Vec<String>, bool) {
    let bytes = text.as_bytes();
    let tags: Vec<usize> = (0..bytes.len().saturating_sub(2))
        .filter(|&i| &bytes[i..i + 3] == b"ks_")
        .collect();
    let mut found = Vec::new();
    let mut inside = false;
    for (n, &at) in tags.iter().enumerate() {
        let run = bytes[at + 3..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric())
            .count();
        let inside_earlier = tags[..n]
            .iter()
            .any(|&p| p + 3 <= at && bytes[p + 3..at].iter().all(u8::is_ascii_alphanumeric));
        if run >= 38 {
            found.push(text[at..at + 41].to_owned());
            inside |= inside_earlier;
        }
    }
    (found, inside)
}

/// The secret part of a key: what must never be shown, with or without
/// its `ks_` and prefix.
pub fn secret_tail(key: &str) -> &str {
    &key[11..]
}

/// The body as a JSON value; `None` when it nests deeper than
/// `serde_json::Value` allows (128), which the server's own parsing of an
/// ignored field does not mind.
pub fn reference_json(bytes: &[u8]) -> Option<Value> {
    serde_json::from_slice(bytes).ok()
}

/// A full key found in `input` that an error message about it echoes.
/// Counted, so that the same characters elsewhere in `input` (not after a
/// `ks_`, so not a key) may be quoted: each key must lose its secret part.
pub fn leaks_a_key(input: &str, message: &str) -> Option<String> {
    let keys = full_keys_in(input);
    keys.iter()
        .find(|k| {
            let tail = secret_tail(k);
            let as_keys = keys.iter().filter(|x| secret_tail(x) == tail).count();
            let elsewhere = input.matches(tail).count().saturating_sub(as_keys);
            message.matches(tail).count() > elsewhere
        })
        .cloned()
}

pub fn invalid_request_message(result: Result<impl std::fmt::Debug, Error>) -> Option<String> {
    match result {
        Err(Error::InvalidRequest(m)) => Some(m),
        _ => None,
    }
}
