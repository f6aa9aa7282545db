//! Byte-level property tests ("fuzzing") of every parser and validator that
//! sees untrusted input: the access key format, the key-id/prefix lookup,
//! `session_id`, device and label texts, seat limits, RFC 3339 times and
//! ages, event types, and the JSON body and query-string extractors of
//! every route (driven through the real router in-process, so the real
//! request types and validators are exercised, not copies).
//!
//! Each target feeds arbitrary bytes, arbitrary UTF-8 and structure-aware
//! input (JSON objects with the right field names but random types, values
//! and lengths; near-limit strings; unicode; control characters; huge
//! numbers; deep nesting) and checks, besides "never panics":
//!
//! - a rejection is the contract's error (400 `invalid_request` for bad
//!   input, with a message naming the field; other documented codes only
//!   where the contract lists them);
//! - an accepted input obeys the documented limits and round-trips.
//!
//! Case counts: `PROPTEST_CASES` (default per target below). Each target
//! prints its executions (`cargo test --test fuzz_parsers -- --nocapture`).
//! See docs/fuzzing.md.

mod common;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use keyseat::clock::Timestamp;
use keyseat::error::Error;
use keyseat::http::extract::parse_json;
use keyseat::input;
use keyseat::keys::{self, AccessKey, KeyFormatError};
use keyseat::model::{Actor, EventType};
use keyseat::store::{NewKey, OpenMode, SqliteStore, Storage};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};
use tower::ServiceExt;

// ------------------------------------------------------------ the runner

fn fuzz<S: Strategy>(
    name: &str,
    default_cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    common::fuzz::run("fuzz_parsers", name, default_cases, 2_000, strategy, test);
}

// ------------------------------------------------------- reference model

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The contract's checksum, written again from the spec ("Words"): CRC32
/// of everything before it, base62, most significant digit first,
/// left-padded with `0` to 6 characters.
fn reference_checksum(body: &str) -> String {
    let mut value = u64::from(crc32fast::hash(body.as_bytes()));
    let mut digits = [b'0'; 6];
    for slot in digits.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    String::from_utf8(digits.to_vec()).unwrap()
}

/// What `AccessKey::parse` must answer, from the spec.
fn reference_key(text: &str) -> Result<(), KeyFormatError> {
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
fn reference_session_id(id: &str) -> bool {
    (8..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !reference_holds_key(id)
}

/// `ks_` followed by at least 32 ASCII letters and digits, anywhere.
fn reference_holds_key(text: &str) -> bool {
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
fn reference_invisible(c: char) -> bool {
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
fn reference_joiner(c: char) -> bool {
    let n = c as u32;
    n == 0x200C || n == 0x200D || (0xFE00..=0xFE0F).contains(&n) || (0xE0100..=0xE01EF).contains(&n)
}

/// Whether `c` after `prev` is refused as hidden.
fn reference_hidden(prev: Option<char>, c: char) -> bool {
    if reference_joiner(c) {
        !prev.is_some_and(|p| !p.is_ascii() && (reference_joiner(p) || !reference_invisible(p)))
    } else {
        reference_invisible(c)
    }
}

/// What an optional text field must become: trimmed, empty = absent; `Err`
/// when it has control characters, invisible or direction-changing ones,
/// an access key, or is over `max` characters.
fn reference_text(value: &str, max: usize) -> Result<Option<String>, ()> {
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
fn full_keys_in(text: &str) -> Vec<String> {
    keys_in(text).0
}

fn keys_in(text: &str) -> (Vec<String>, bool) {
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
fn secret_tail(key: &str) -> &str {
    &key[11..]
}

/// The body as a JSON value; `None` when it nests deeper than
/// `serde_json::Value` allows (128), which the server's own parsing of an
/// ignored field does not mind.
fn reference_json(bytes: &[u8]) -> Option<Value> {
    serde_json::from_slice(bytes).ok()
}

/// A full key found in `input` that an error message about it echoes.
/// Counted, so that the same characters elsewhere in `input` (not after a
/// `ks_`, so not a key) may be quoted: each key must lose its secret part.
fn leaks_a_key(input: &str, message: &str) -> Option<String> {
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

fn invalid_request_message(result: Result<impl std::fmt::Debug, Error>) -> Option<String> {
    match result {
        Err(Error::InvalidRequest(m)) => Some(m),
        _ => None,
    }
}

// ------------------------------------------------------------ generators

/// Characters that break naive parsers: controls, separators, escapes,
/// multi-byte and look-alike letters, zero-width and bidi marks.
fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::sample::select(BASE62.iter().map(|&b| b as char).collect::<Vec<_>>()),
        2 => any::<char>(),
        3 => prop::sample::select(vec![
            '\0', '\n', '\r', '\t', '\u{7f}', '\u{85}', '\u{1b}', ' ', '\u{a0}', '\u{200b}',
            '\u{202e}', '\u{feff}', '\u{2028}', 'é', 'ß', '𝄞', 'ｋ', 'ѕ', '"', '\'', '\\', '/',
            '%', '_', '.', '-', '+', ':', 'T', 'Z', 'z', '{', '}', '[', ']', ',', '&', '=', '?',
            '#', ';',
        ]),
    ]
}

/// Strings of tricky characters, up to `max` characters.
fn tricky_string(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(tricky_char(), 0..=max).prop_map(|v| v.into_iter().collect())
}

/// Strings at and around the contract's limits (8, 128, 200, 256).
fn near_limit_string() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![
            0usize, 1, 7, 8, 9, 127, 128, 129, 199, 200, 201, 255, 256, 257, 300, 2000,
        ]),
        prop::sample::select(vec!['a', 'Z', '7', '.', 'é', '𝄞', ' ', '\n', '\u{7f}', '-']),
        prop::sample::select(vec!["", " ", "\t", "  \n"]),
    )
        .prop_map(|(n, c, pad)| format!("{pad}{}{pad}", c.to_string().repeat(n)))
}

/// Arbitrary bytes as (lossy) text, arbitrary UTF-8, tricky characters,
/// near-limit strings.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..80)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        any::<String>(),
        tricky_string(64),
        near_limit_string(),
    ]
}

/// A well-formed key with a correct checksum.
fn valid_key() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(BASE62.to_vec()), 32).prop_map(|random| {
        let body = format!("ks_{}", String::from_utf8(random).unwrap());
        let sum = reference_checksum(&body);
        format!("{body}{sum}")
    })
}

/// One edit of a string: the mistakes people and attackers make.
#[derive(Debug, Clone)]
enum Edit {
    Replace(usize, char),
    Insert(usize, char),
    Delete(usize),
    Truncate(usize),
    Swap(usize, usize),
    FlipCase(usize),
    Pad(&'static str, &'static str),
    Wrap(&'static str),
    Repeat,
    Keep,
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), tricky_char()).prop_map(|(i, c)| Edit::Replace(i, c)),
        (any::<usize>(), tricky_char()).prop_map(|(i, c)| Edit::Insert(i, c)),
        any::<usize>().prop_map(Edit::Delete),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Edit::Swap(i, j)),
        any::<usize>().prop_map(Edit::FlipCase),
        (
            prop::sample::select(vec!["", " ", "\t", "\n", "\u{feff}", "x", "\""]),
            prop::sample::select(vec!["", " ", "\r\n", "\0", "\"", "/"]),
        )
            .prop_map(|(a, b)| Edit::Pad(a, b)),
        prop::sample::select(vec!["\"", "'", "<>", "  ", "ks_"]).prop_map(Edit::Wrap),
        Just(Edit::Repeat),
        Just(Edit::Keep),
    ]
}

fn apply(text: &str, e: &Edit) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let n = chars.len();
    match *e {
        Edit::Replace(i, c) if n > 0 => chars[i % n] = c,
        Edit::Insert(i, c) => chars.insert(i % (n + 1), c),
        Edit::Delete(i) if n > 0 => {
            chars.remove(i % n);
        }
        Edit::Truncate(i) => chars.truncate(i % (n + 1)),
        Edit::Swap(i, j) if n > 0 => chars.swap(i % n, j % n),
        Edit::FlipCase(i) if n > 0 => {
            let c = chars[i % n];
            chars[i % n] = if c.is_ascii_lowercase() {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
        }
        Edit::Pad(a, b) => return format!("{a}{text}{b}"),
        Edit::Wrap(w) => return format!("{w}{text}{w}"),
        Edit::Repeat => return text.repeat(2),
        _ => {}
    }
    chars.into_iter().collect()
}

/// A valid key, or one with one or two edits.
fn key_like() -> impl Strategy<Value = String> {
    (valid_key(), edit(), edit(), 0..3u8).prop_map(|(k, a, b, n)| match n {
        0 => k,
        1 => apply(&k, &a),
        _ => apply(&apply(&k, &a), &b),
    })
}

/// Times shaped like RFC 3339 with every part possibly out of range.
fn time_like() -> impl Strategy<Value = String> {
    let date = (
        prop_oneof![0..=10_000i32, 1969..=2100i32],
        0..=13u32,
        0..=32u32,
    );
    let clock = (0..=25u32, 0..=61u32, 0..=61u32, 0..=12usize);
    let sep = prop::sample::select(vec!["T", "t", " ", "_", ""]);
    let zone = prop::sample::select(vec![
        "Z", "z", "", "+00:00", "-00:00", "+01:00", "-23:59", "+23:59", "+24:00", "+0100", "+01",
        "UTC", "-12:30",
    ]);
    (date, clock, sep, zone, edit(), any::<bool>()).prop_map(
        |((y, mo, d), (h, mi, s, frac), sep, zone, e, mangle)| {
            let frac = if frac == 0 {
                String::new()
            } else {
                format!(".{}", "123456789012".get(..frac).unwrap())
            };
            let t = format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}{frac}{zone}");
            if mangle {
                apply(&t, &e)
            } else {
                t
            }
        },
    )
}

// ----------------------------------------------------- pure-function targets

/// `AccessKey::parse` agrees with the spec's format on every input; an
/// accepted key round-trips, and its `Debug`, prefix and redaction never
/// show more than the prefix. A single edit of a valid key is always caught.
#[test]
fn access_key_parsing_matches_the_spec() {
    let input = prop_oneof![3 => key_like(), 1 => any_text(), 1 => valid_key()];
    fuzz("access_key", 3000, input, |text| {
        let got = AccessKey::parse(&text);
        let want = reference_key(&text);
        prop_assert_eq!(got.as_ref().map(|_| ()).map_err(|e| *e), want, "{:?}", text);
        // whatever it is, redaction never shows a full key
        let shown = keys::redact_secret(&text);
        prop_assert_eq!(
            leaks_a_key(&text, &shown),
            None,
            "{:?} -> {:?}",
            text,
            shown
        );
        let cut = keys::redact(&text);
        prop_assert_eq!(leaks_a_key(&text, &cut), None, "{:?} -> {:?}", text, cut);
        if let Ok(key) = got {
            prop_assert_eq!(key.expose_secret(), text.as_str());
            prop_assert_eq!(key.prefix(), &text[..11]);
            let debug = format!("{key:?}");
            prop_assert!(!debug.contains(&text[11..]), "{}", debug);
            prop_assert_eq!(AccessKey::parse(key.expose_secret()), Ok(key.clone()));
            prop_assert_eq!(keys::redact(&text), format!("{}…", &text[..11]));
        }
        Ok(())
    });

    // Every single-character substitution, deletion or insertion inside a
    // valid key is refused (CRC32 catches every burst of <= 32 bits).
    let single_edit = (valid_key(), any::<usize>(), tricky_char(), 0..3u8);
    fuzz(
        "access_key_single_edit",
        2000,
        single_edit,
        |(k, i, c, kind)| {
            let e = match kind {
                0 => Edit::Replace(3 + i % 38, c),
                1 => Edit::Delete(3 + i % 38),
                _ => Edit::Insert(3 + i % 39, c),
            };
            let typo = apply(&k, &e);
            prop_assume!(typo != k);
            prop_assert!(AccessKey::parse(&typo).is_err(), "{} accepted", typo);
            Ok(())
        },
    );
}

/// `session_id` accepts exactly the contract's ids; a refusal names the field.
#[test]
fn session_id_validation_matches_the_contract() {
    let input = prop_oneof![
        2 => "[A-Za-z0-9._-]{0,140}",
        1 => any_text(),
        1 => ("[A-Za-z0-9._-]{8,128}", edit()).prop_map(|(s, e)| apply(&s, &e)),
    ];
    fuzz("session_id", 3000, input, |id| {
        let got = input::session_id(&id);
        prop_assert_eq!(got.is_ok(), reference_session_id(&id), "{:?}", id);
        if let Some(m) = invalid_request_message(got) {
            prop_assert!(m.starts_with("session_id"), "{}", m);
        } else {
            prop_assert!(reference_session_id(&id));
        }
        Ok(())
    });
}

/// Device name (128), fingerprint (256) and label (200): trimmed, empty is
/// absent, control characters and over-long values refused naming the field.
#[test]
fn text_fields_obey_their_limits() {
    let field = prop::sample::select(vec![
        ("device.name", 128usize),
        ("device.fingerprint", 256),
        ("label", 200),
    ]);
    fuzz(
        "text_fields",
        3000,
        (field, any_text()),
        |((name, max), text)| {
            let got = if name == "label" {
                input::label(Some(text.clone()))
            } else {
                input::optional_text(Some(text.clone()), name, max)
            };
            match (&got, reference_text(&text, max)) {
                (Ok(v), Ok(want)) => prop_assert_eq!(v, &want),
                (Err(Error::InvalidRequest(m)), Err(())) => {
                    prop_assert!(m.starts_with(name), "{}", m);
                }
                (got, want) => prop_assert!(false, "{:?}: got {:?}, want {:?}", text, got, want),
            }
            Ok(())
        },
    );
}

/// Seat limits 1..=1000; event types exactly the contract's list.
#[test]
fn seat_limits_and_event_types() {
    fuzz("max_sessions", 2000, any::<u32>(), |n| {
        let got = input::max_sessions(n);
        prop_assert_eq!(got.is_ok(), (1..=1000).contains(&n));
        if let Some(m) = invalid_request_message(got) {
            prop_assert!(m.starts_with("max_sessions"), "{}", m);
        }
        Ok(())
    });
    let names: Vec<String> = EventType::ALL
        .iter()
        .map(|t| t.as_str().to_owned())
        .collect();
    let input = prop_oneof![
        (prop::sample::select(names.clone()), edit()).prop_map(|(n, e)| apply(&n, &e)),
        any_text(),
    ];
    fuzz("event_type", 2000, input, |text| {
        let got = input::event_type(&text);
        prop_assert_eq!(got.is_ok(), names.contains(&text), "{:?}", text);
        match got {
            Ok(t) => prop_assert_eq!(t.as_str(), text.as_str()),
            Err(Error::InvalidRequest(m)) => prop_assert!(m.starts_with("type"), "{}", m),
            Err(e) => prop_assert!(false, "{:?}", e),
        }
        Ok(())
    });
}

/// RFC 3339 times (PATCH/POST `expires_at`, events `since`): an accepted
/// time round-trips through the server's own rendering; a well-formed
/// in-range time is accepted with the right instant; a refusal names the
/// field and never echoes a full key.
#[test]
fn rfc3339_times_round_trip() {
    let input = prop_oneof![3 => time_like(), 1 => any_text(), 1 => key_like()];
    fuzz("rfc3339", 3000, input, |text| {
        let got = input::time("expires_at", &text);
        match &got {
            Ok(t) => {
                let shown = t.to_rfc3339();
                prop_assert!(shown.contains('T'), "{:?} rendered as {}", text, shown);
                prop_assert_eq!(Timestamp::parse_rfc3339(&shown), Some(*t), "{}", shown);
            }
            Err(Error::InvalidRequest(m)) => {
                prop_assert!(m.starts_with("expires_at"), "{}", m);
                prop_assert_eq!(leaks_a_key(&text, m), None, "{}", m);
            }
            Err(e) => prop_assert!(false, "{:?}", e),
        }
        // an age or a time for `--since`: never panics, same message rules
        let now = Timestamp(1_800_000_000_000);
        match input::time_or_age("since", &text, now) {
            Ok(t) => prop_assert!(t <= now || Timestamp::parse_rfc3339(&text).is_some()),
            Err(Error::InvalidRequest(m)) => prop_assert!(m.starts_with("since"), "{}", m),
            Err(e) => prop_assert!(false, "{:?}", e),
        }
        Ok(())
    });

    // Well-formed, in-range: must be accepted, at the right instant.
    let valid = (
        1970..=9998i32,
        1..=12u8,
        1..=28u8,
        0..=23u8,
        0..=59u8,
        0..=59u8,
        0..=999u16,
        -(23 * 60 + 59)..=(23 * 60 + 59i32),
    );
    fuzz(
        "rfc3339_valid",
        2000,
        valid,
        |(y, mo, d, h, mi, s, ms, off)| {
            let zone = if off == 0 {
                "Z".to_owned()
            } else {
                let a = off.abs();
                format!(
                    "{}{:02}:{:02}",
                    if off < 0 { '-' } else { '+' },
                    a / 60,
                    a % 60
                )
            };
            let text = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}{zone}");
            let date =
                time::Date::from_calendar_date(y, time::Month::try_from(mo).unwrap(), d).unwrap();
            let local = date.with_hms_milli(h, mi, s, ms).unwrap().assume_utc();
            let want = (local.unix_timestamp_nanos() / 1_000_000) as i64 - i64::from(off) * 60_000;
            let got = input::time("expires_at", &text);
            prop_assert_eq!(got.ok(), Some(Timestamp(want)), "{}", text);
            Ok(())
        },
    );
}

/// The JSON parser behind every body: any bytes give either a value or
/// `invalid_request`, never a position ("line 1 column 17") instead of a
/// field, and a refused JSON object is refused naming one of its fields.
#[test]
fn json_bodies_parse_or_name_the_field() {
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Start {
        access_key: String,
        session_id: Option<String>,
        device: Option<Device>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Device {
        name: Option<String>,
        fingerprint: Option<String>,
    }
    let fields = ["access_key", "session_id", "device"];
    let input = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        body_for(Route::Start, "ks_x".into(), "sess-0001".into()).prop_map(String::into_bytes),
    ];
    fuzz("json_body", 3000, input, |bytes| {
        match parse_json::<Start>(&bytes) {
            Ok(s) => {
                if let Some(v) = reference_json(&bytes) {
                    let v = tuple_form(&v, &fields);
                    prop_assert_eq!(v["access_key"].as_str(), Some(s.access_key.as_str()));
                }
            }
            Err(Error::InvalidRequest(m)) => {
                prop_assert!(!m.is_empty());
                prop_assert!(!m.contains(" at line "), "{}", m);
                if let Ok(Value::Object(_)) = serde_json::from_slice::<Value>(&bytes) {
                    let body = String::from_utf8_lossy(&bytes);
                    let named = fields.iter().any(|f| m.contains(f));
                    prop_assert!(named, "{} for {:?}", m, body);
                }
            }
            Err(e) => prop_assert!(false, "{:?}", e),
        }
        Ok(())
    });
}

/// The key lookup of the admin API and the CLI (`keys show`, `update`,
/// `revoke`, events `key_id`): finds a key only by its exact id, display
/// prefix (with or without `ks_`) or the whole, exact access key (which
/// the HTTP layer refuses in URLs), never by a pattern or a near-miss, and
/// answers anything else `key_not_found` without echoing a full key.
#[test]
fn key_references_resolve_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("refs.db"), OpenMode::CreateAndMigrate).unwrap();
    let now = Timestamp(1_800_000_000_000);
    let created: Vec<_> = (0..3)
        .map(|_| {
            store
                .create_key(&NewKey::default(), now, &Actor::cli())
                .unwrap()
        })
        .collect();
    let mut known = Vec::new();
    for c in &created {
        let k = &c.key;
        known.push(k.key_id.clone());
        known.push(k.prefix.clone());
        known.push(k.prefix["ks_".len()..].to_owned());
        known.push(c.access_key.expose_secret().to_owned());
    }
    let secrets: Vec<String> = created
        .iter()
        .map(|c| c.access_key.expose_secret().to_owned())
        .collect();
    let input = prop_oneof![
        3 => (prop::sample::select(known), edit(), any::<bool>())
            .prop_map(|(k, e, keep)| if keep { k } else { apply(&k, &e) }),
        1 => any_text(),
        1 => prop::sample::select(vec![
            "%", "_", "ks_%", "key_%", "' OR '1'='1", "ks_", "key_", "", " ", "*", "\\",
        ])
        .prop_map(str::to_owned),
    ];
    fuzz("key_ref", 2000, input, |r| {
        let got = store.get_key(&r, now);
        let t = r.trim();
        let exact = created.iter().find(|c| {
            let k = &c.key;
            t == k.key_id
                || t == k.prefix
                || format!("ks_{t}") == k.prefix
                || t == c.access_key.expose_secret()
        });
        match (&got, exact) {
            (Ok(k), Some(c)) => prop_assert_eq!(&k.key_id, &c.key.key_id),
            (Err(Error::KeyNotFound(_)), None) => {}
            (got, want) => prop_assert!(
                false,
                "{:?}: got {:?}, want {:?}",
                r,
                got,
                want.map(|c| &c.key.key_id)
            ),
        }
        if let Err(e) = &got {
            let m = e.to_string();
            prop_assert_eq!(leaks_a_key(&r, &m), None, "{}", m);
            for s in secrets.iter() {
                prop_assert!(!m.contains(s.as_str()), "echoes the secret: {}", m);
            }
        }
        Ok(())
    });
}

// -------------------------------------------------- bodies through the router

use common::fuzz::TOKEN;

/// The real router over a real store, in-process, with a key for the
/// session routes, a live session, and a second key for PATCH.
struct Harness {
    rt: tokio::runtime::Runtime,
    router: Router,
    key: String,
    session_id: String,
    patch_key_id: String,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let (rt, router) = common::fuzz::ready_router(&dir.path().join("fuzz.db"));
        let mut h = Harness {
            rt,
            router,
            key: String::new(),
            session_id: String::new(),
            patch_key_id: String::new(),
            _dir: dir,
        };
        let (_, key) = h.send("POST", "/api/admin/keys", b"{}", true);
        h.key = key["access_key"].as_str().unwrap().to_owned();
        let (_, other) = h.send("POST", "/api/admin/keys", b"{}", true);
        h.patch_key_id = other["key_id"].as_str().unwrap().to_owned();
        let start = json!({"access_key": h.key}).to_string();
        let (_, s) = h.send("POST", "/api/session/start", start.as_bytes(), true);
        h.session_id = s["session_id"].as_str().unwrap().to_owned();
        h
    }

    /// One JSON request; status and parsed body (checked to be JSON with
    /// a JSON content type).
    fn send(&self, method: &str, uri: &str, body: &[u8], admin: bool) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json");
        if admin {
            req = req.header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        }
        let mut req = req.body(Body::from(body.to_vec())).unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        self.rt.block_on(async {
            let resp = self.router.clone().oneshot(req).await.unwrap();
            let status = resp.status();
            let ctype = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap_or("").to_owned())
                .unwrap_or_default();
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            assert!(
                ctype.starts_with("application/json"),
                "{method} {uri}: {status} with content type {ctype:?}: {text}"
            );
            let v = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{method} {uri}: {status} body not JSON ({e}): {text}"));
            (status, v)
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Route {
    Start,
    Heartbeat,
    End,
    Status,
    CreateKey,
    PatchKey,
}

impl Route {
    const ALL: [Route; 6] = [
        Route::Start,
        Route::Heartbeat,
        Route::End,
        Route::Status,
        Route::CreateKey,
        Route::PatchKey,
    ];

    fn fields(self) -> &'static [&'static str] {
        match self {
            Route::Start => &["access_key", "session_id", "device"],
            Route::Heartbeat | Route::End => &["access_key", "session_id"],
            Route::Status => &["access_key"],
            Route::CreateKey => &["label", "max_sessions", "on_conflict", "expires_at"],
            Route::PatchKey => &[
                "label",
                "max_sessions",
                "on_conflict",
                "expires_at",
                "status",
            ],
        }
    }

    /// Statuses and codes the contract allows on this route for any body.
    fn allowed(self, status: u16, code: &str) -> bool {
        let common = matches!(
            (status, code),
            (400, "invalid_request") | (413, "payload_too_large") | (415, "unsupported_media_type")
        );
        let session = matches!(
            (status, code),
            (401, "invalid_key")
                | (403, "key_revoked" | "key_suspended" | "key_expired")
                | (404, "session_not_found")
                | (
                    409,
                    "session_id_taken" | "seats_full" | "session_superseded"
                )
                | (410, "session_expired" | "session_ended" | "session_revoked")
        );
        common
            || match self {
                Route::Start | Route::Heartbeat | Route::End | Route::Status => session,
                Route::CreateKey | Route::PatchKey => false,
            }
    }
}

/// A JSON document written out by hand, so it can hold what
/// `serde_json::Value` cannot: huge or malformed numbers, lone surrogate
/// escapes, duplicate keys.
#[derive(Debug, Clone)]
enum J {
    Raw(String),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    fn write(&self, out: &mut String) {
        match self {
            J::Raw(r) => out.push_str(r),
            J::Str(s) => out.push_str(&serde_json::to_string(s).unwrap()),
            J::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            J::Obj(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(k).unwrap());
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }

    fn text(&self) -> String {
        let mut s = String::new();
        self.write(&mut s);
        s
    }
}

fn raw_scalar() -> impl Strategy<Value = J> {
    prop_oneof![
        prop::sample::select(vec![
            "null",
            "true",
            "false",
            "0",
            "-0",
            "1",
            "-1",
            "3",
            "1000",
            "1001",
            "4294967295",
            "4294967296",
            "18446744073709551616",
            "-9223372036854775809",
            "1e400",
            "-1e400",
            "1.5",
            "1e3",
            "1E2",
            "0.0",
            "1e-400",
            "NaN",
            "Infinity",
            "01",
            "1.",
            "+1",
            "0x10",
            "\"\\ud800\"",
            "\"\\u0000\"",
            "\"\\x\"",
            "\"\\uDFFF\\uD800\"",
            "\"",
            "tru",
            "nul",
            "[",
            "{",
            "]",
            "}",
            "",
        ])
        .prop_map(|s| J::Raw(s.to_owned())),
        any::<i64>().prop_map(|n| J::Raw(n.to_string())),
        any::<f64>().prop_map(|f| J::Raw(if f.is_finite() {
            f.to_string()
        } else {
            "1e999".into()
        })),
        (1..300usize).prop_map(|n| J::Raw(format!("{}{}", "[".repeat(n), "]".repeat(n)))),
        (1..300usize).prop_map(|n| J::Raw(format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n)))),
    ]
}

/// Any string a field might get: keys (valid, mistyped, other people's),
/// key ids, times, ids, limit-sized, unicode and control characters.
fn string_value(key: String) -> impl Strategy<Value = String> {
    prop_oneof![
        2 => any_text(),
        1 => (Just(key), edit()).prop_map(|(k, e)| apply(&k, &e)),
        1 => key_like(),
        1 => "key_[A-Za-z0-9]{0,20}",
        1 => time_like(),
        1 => "[A-Za-z0-9._-]{0,140}",
        1 => near_limit_string(),
        1 => prop::sample::select(vec![
            "takeover", "reject", "active", "suspended", "revoked", "Takeover", "TAKEOVER", "",
        ]).prop_map(str::to_owned),
    ]
}

fn any_value(key: String) -> BoxedStrategy<J> {
    let leaf = prop_oneof![
        2 => raw_scalar(),
        2 => string_value(key).prop_map(J::Str),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(J::Arr),
            prop::collection::vec(("[a-z_]{0,12}", inner), 0..4).prop_map(J::Obj),
        ]
    })
    .boxed()
}

/// A value of the field's own type, most of the time: what a buggy or
/// hostile client sends when it nearly follows the contract.
fn field_value(field: &'static str, key: String, session_id: String) -> BoxedStrategy<J> {
    let typed: BoxedStrategy<J> = match field {
        "access_key" => prop_oneof![
            3 => Just(J::Str(key.clone())),
            2 => (Just(key.clone()), edit()).prop_map(|(k, e)| J::Str(apply(&k, &e))),
            1 => valid_key().prop_map(J::Str),
            1 => any_text().prop_map(J::Str),
        ]
        .boxed(),
        "session_id" => prop_oneof![
            2 => Just(J::Str(session_id.clone())),
            2 => "[A-Za-z0-9._-]{6,130}".prop_map(J::Str),
            1 => (Just(session_id.clone()), edit()).prop_map(|(s, e)| J::Str(apply(&s, &e))),
            1 => any_text().prop_map(J::Str),
        ]
        .boxed(),
        "device" => prop::collection::vec(
            (
                prop::sample::select(vec!["name", "fingerprint", "Name", "x"]),
                prop_oneof![
                    3 => prop_oneof![near_limit_string(), any_text(), tricky_string(300)].prop_map(J::Str),
                    1 => raw_scalar(),
                ],
            ),
            0..3,
        )
        .prop_map(|fs| J::Obj(fs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
        .boxed(),
        "label" => prop_oneof![
            near_limit_string(),
            any_text(),
            tricky_string(250),
        ]
        .prop_map(J::Str)
        .boxed(),
        "max_sessions" => prop_oneof![
            prop::sample::select(vec![0u64, 1, 2, 999, 1000, 1001, u64::from(u32::MAX), u64::from(u32::MAX) + 1])
                .prop_map(|n| J::Raw(n.to_string())),
            any::<u32>().prop_map(|n| J::Raw(n.to_string())),
            raw_scalar(),
        ]
        .boxed(),
        "on_conflict" | "status" => prop::sample::select(vec![
            "takeover", "reject", "active", "suspended", "revoked", "Reject", "", " takeover",
        ])
        .prop_map(|s| J::Str(s.to_owned()))
        .boxed(),
        "expires_at" => prop_oneof![
            3 => time_like().prop_map(J::Str),
            1 => Just(J::Raw("null".into())),
        ]
        .boxed(),
        _ => unreachable!(),
    };
    prop_oneof![
        4 => typed,
        1 => any_value(key),
        1 => Just(J::Raw("null".into())),
    ]
    .boxed()
}

/// Request bodies for a route: mostly objects with the route's fields
/// (each present or not, of the right type or not, plus strays and
/// duplicates), sometimes any JSON, arbitrary UTF-8, arbitrary bytes
/// (lossy), or a structured body cut short.
fn body_for(route: Route, key: String, session_id: String) -> BoxedStrategy<String> {
    let fields: Vec<BoxedStrategy<Option<(String, J)>>> = route
        .fields()
        .iter()
        .map(|&f| {
            prop::option::weighted(0.8, field_value(f, key.clone(), session_id.clone()))
                .prop_map(move |v| v.map(|v| (f.to_owned(), v)))
                .boxed()
        })
        .collect();
    let extras = prop::collection::vec(
        (
            prop_oneof![
                "[a-z_]{1,10}",
                prop::sample::select(route.fields().to_vec()).prop_map(str::to_owned)
            ],
            any_value(key.clone()),
        ),
        0..3,
    );
    let object = (fields, extras, any::<bool>()).prop_map(|(fields, extras, extras_first)| {
        let mut all: Vec<(String, J)> = fields.into_iter().flatten().collect();
        if extras_first {
            let mut e = extras;
            e.extend(all);
            all = e;
        } else {
            all.extend(extras);
        }
        J::Obj(all).text()
    });
    prop_oneof![
        8 => object.clone(),
        1 => (object, any::<usize>()).prop_map(|(s, cut)| {
            let mut cut = cut % (s.len() + 1);
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s[..cut].to_owned()
        }),
        1 => any_value(key).prop_map(|j| j.text()),
        1 => any::<String>(),
        1 => prop::collection::vec(any::<u8>(), 0..100)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        1 => prop::sample::select(vec!["", " ", "\n\t", "null", "{}", "[]", "\"\"", "0"])
            .prop_map(str::to_owned),
    ]
    .boxed()
}

fn is_snake_case(code: &str) -> bool {
    !code.is_empty()
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// serde's derived `Deserialize` accepts a struct as a JSON array of
/// exactly its fields in declaration order. `parse_json` refuses a body
/// that is an array and `device` refuses one (`object_or_null`); the
/// reference reading still maps such an array to the object it stands for
/// (anything else is returned unchanged), so a regression would be checked
/// field by field.
fn tuple_form(v: &Value, fields: &[&str]) -> Value {
    match v {
        Value::Array(items) if items.len() == fields.len() => Value::Object(
            fields
                .iter()
                .map(|f| f.to_string())
                .zip(items.iter().cloned())
                .collect(),
        ),
        other => other.clone(),
    }
}

/// What the route must have refused: an accepted body follows the
/// contract's limits, checked field by field against a reference reading.
fn check_accepted(
    route: Route,
    h: &Harness,
    body: &str,
    answer: &Value,
) -> Result<(), TestCaseError> {
    let v: Value = if body.trim().is_empty() {
        json!({})
    } else {
        match serde_json::from_str(body) {
            Ok(v) => v,
            // Deeper than `Value` can hold, in a field the route ignores
            // (serde skips ignored values without recursing): fine.
            // Or with a number `Value` cannot hold (1e400) there, or a
            // lone surrogate escape (`"\ud800"`: JSON's grammar allows it,
            // `Value` refuses it, serde skips it unread).
            Err(e)
                if [
                    "recursion limit",
                    "number out of range",
                    "surrogate",
                    "hex escape",
                ]
                .iter()
                .any(|m| e.to_string().contains(m)) =>
            {
                return Ok(())
            }
            Err(e) => {
                return Err(TestCaseError::fail(format!(
                    "accepted a body that is not JSON ({e}): {body:?}"
                )))
            }
        }
    };
    let obj = v
        .as_object()
        .ok_or_else(|| TestCaseError::fail(format!("accepted a non-object body: {body:?}")))?;
    let text_ok = |name: &str, max: usize| -> bool {
        match obj.get(name) {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => reference_text(s, max).is_ok(),
            _ => false,
        }
    };
    match route {
        Route::Start | Route::Heartbeat | Route::End | Route::Status => {
            let k = obj["access_key"].as_str().unwrap_or_default();
            prop_assert_eq!(k.trim(), h.key.as_str(), "accepted key in {:?}", body);
            match obj.get("session_id") {
                Some(Value::String(id)) => prop_assert!(reference_session_id(id), "{:?}", body),
                None | Some(Value::Null) => prop_assert!(
                    route == Route::Start || route == Route::Status,
                    "{:?}",
                    body
                ),
                Some(_) => prop_assert!(false, "accepted a non-string session_id: {:?}", body),
            }
            if route == Route::Start {
                match obj
                    .get("device")
                    .map(|d| tuple_form(d, &["name", "fingerprint"]))
                {
                    None | Some(Value::Null) => {}
                    Some(Value::Object(d)) => {
                        for (name, max) in [("name", 128), ("fingerprint", 256)] {
                            match d.get(name) {
                                None | Some(Value::Null) => {}
                                Some(Value::String(s)) => {
                                    prop_assert!(reference_text(s, max).is_ok(), "{:?}", body)
                                }
                                Some(_) => prop_assert!(false, "accepted device.{name}: {body:?}"),
                            }
                        }
                    }
                    Some(_) => prop_assert!(false, "accepted a non-object device: {:?}", body),
                }
                prop_assert!(answer["fence"].is_i64(), "{}", answer);
            }
        }
        Route::CreateKey | Route::PatchKey => {
            prop_assert!(text_ok("label", 200), "accepted label in {:?}", body);
            let want_label = match obj.get("label") {
                Some(Value::String(s)) => reference_text(s, 200).unwrap(),
                _ => None,
            };
            if route == Route::CreateKey || obj.contains_key("label") {
                prop_assert_eq!(&answer["label"], &json!(want_label), "{:?}", body);
            }
            match obj.get("max_sessions") {
                Some(Value::Number(n)) => {
                    let n = n.as_u64().unwrap_or(0);
                    prop_assert!((1..=1000).contains(&n), "{:?}", body);
                    prop_assert_eq!(&answer["max_sessions"], &json!(n));
                }
                None | Some(Value::Null) => {
                    if route == Route::CreateKey {
                        prop_assert_eq!(&answer["max_sessions"], &json!(1));
                    }
                }
                Some(_) => prop_assert!(false, "accepted max_sessions in {:?}", body),
            }
            match obj.get("on_conflict") {
                Some(Value::String(p)) => {
                    prop_assert!(p == "takeover" || p == "reject", "{:?}", body);
                    prop_assert_eq!(&answer["on_conflict"], &json!(p));
                }
                None | Some(Value::Null) => {}
                Some(_) => prop_assert!(false, "accepted on_conflict in {:?}", body),
            }
            match obj.get("expires_at") {
                Some(Value::String(t)) => {
                    let at = Timestamp::parse_rfc3339(t);
                    prop_assert!(at.is_some(), "accepted expires_at {:?}", t);
                    let shown = answer["expires_at"].as_str().unwrap_or_default();
                    prop_assert_eq!(Timestamp::parse_rfc3339(shown), at, "{}", answer);
                }
                None => {}
                Some(Value::Null) => prop_assert!(answer["expires_at"].is_null()),
                Some(_) => prop_assert!(false, "accepted expires_at in {:?}", body),
            }
            if let Some(s) = obj.get("status").filter(|s| !s.is_null()) {
                prop_assert!(s == "active" || s == "suspended", "{:?}", body);
            }
            if route == Route::CreateKey {
                let secret = answer["access_key"].as_str().unwrap_or_default();
                let parsed = AccessKey::parse(secret);
                prop_assert!(parsed.is_ok(), "created key does not parse: {}", answer);
                prop_assert_eq!(answer["prefix"].as_str(), Some(&secret[..11]));
            }
        }
    }
    Ok(())
}

/// Every route's body extractor and validators, through the real router:
/// only the contract's codes, 400s name a field, accepted bodies obey the
/// limits.
#[test]
fn route_bodies_are_parsed_to_the_contract() {
    let h = Harness::new();
    for route in Route::ALL {
        let (method, path, admin) = match route {
            Route::Start => ("POST", "/api/session/start".to_owned(), false),
            Route::Heartbeat => ("POST", "/api/session/heartbeat".to_owned(), false),
            Route::End => ("POST", "/api/session/end".to_owned(), false),
            Route::Status => ("POST", "/api/session/status".to_owned(), false),
            Route::CreateKey => ("POST", "/api/admin/keys".to_owned(), true),
            Route::PatchKey => ("PATCH", format!("/api/admin/keys/{}", h.patch_key_id), true),
        };
        let strategy = body_for(route, h.key.clone(), h.session_id.clone());
        let statuses = std::sync::Mutex::new(std::collections::BTreeMap::<u16, u64>::new());
        fuzz(&format!("body {method} {path}"), 300, strategy, |body| {
            let (status, answer) = h.send(method, &path, body.as_bytes(), admin);
            *statuses.lock().unwrap().entry(status.as_u16()).or_default() += 1;
            if status.is_success() {
                return check_accepted(route, &h, &body, &answer);
            }
            let code = answer["error"]["code"].as_str().unwrap_or_default();
            let message = answer["error"]["message"].as_str().unwrap_or_default();
            prop_assert!(is_snake_case(code) && !message.is_empty(), "{}", answer);
            prop_assert!(
                route.allowed(status.as_u16(), code),
                "{} {}: {} {} for {:?}",
                method,
                path,
                status,
                answer,
                body
            );
            if status == StatusCode::BAD_REQUEST {
                if let Ok(Value::Object(_)) = serde_json::from_str::<Value>(&body) {
                    let names = route.fields().iter().any(|f| message.contains(f));
                    prop_assert!(
                        names,
                        "400 without a field name: {} for {:?}",
                        message,
                        body
                    );
                }
            }
            Ok(())
        });
        println!("    statuses: {:?}", statuses.lock().unwrap());
    }
}

/// Text a name, fingerprint or label may hold: up to `max` characters with
/// no control and no invisible or direction-changing character.
fn visible_text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[^\\p{{Cc}}]{{0,{max}}}"))
        .expect("a valid pattern")
        .prop_map(|s| s.chars().filter(|&c| !reference_invisible(c)).collect())
}

/// Bodies that follow the contract are accepted (the other direction of
/// the property above): random valid labels, limits, policies and times
/// for key creation; random valid devices and ids for starts.
#[test]
fn valid_bodies_are_accepted() {
    let h = Harness::new();
    let label = prop_oneof![
        visible_text(200),
        Just(String::new()),
        Just("é".repeat(200))
    ];
    let create = (
        prop::option::of(label),
        prop::option::of(1..=1000u32),
        prop::option::of(prop::sample::select(vec!["takeover", "reject"])),
        prop::option::of(0i64..=253_402_300_799_000),
    );
    fuzz("valid create", 200, create, |(label, max, policy, at)| {
        let mut body = serde_json::Map::new();
        if let Some(l) = &label {
            body.insert("label".into(), json!(l));
        }
        if let Some(m) = max {
            body.insert("max_sessions".into(), json!(m));
        }
        if let Some(p) = policy {
            body.insert("on_conflict".into(), json!(p));
        }
        if let Some(t) = at {
            body.insert("expires_at".into(), json!(Timestamp(t).to_rfc3339()));
        }
        let body = Value::Object(body).to_string();
        let (status, answer) = h.send("POST", "/api/admin/keys", body.as_bytes(), true);
        prop_assert_eq!(status, StatusCode::CREATED, "{} for {}", answer, body);
        check_accepted(Route::CreateKey, &h, &body, &answer)
    });
    let start = (
        prop::option::of("[A-Za-z0-9._-]{8,128}"),
        prop::option::of(visible_text(128)),
        prop::option::of(visible_text(256)),
    );
    fuzz("valid start", 200, start, |(id, name, fp)| {
        let body = json!({
            "access_key": h.key,
            "session_id": id,
            "device": {"name": name, "fingerprint": fp},
        })
        .to_string();
        let (status, answer) = h.send("POST", "/api/session/start", body.as_bytes(), false);
        prop_assert!(
            status == StatusCode::OK || answer["error"]["code"] == "session_id_taken",
            "{} {} for {}",
            status,
            answer,
            body
        );
        if status.is_success() {
            check_accepted(Route::Start, &h, &body, &answer)?;
        }
        Ok(())
    });
}

/// Query strings of the admin list routes (`?limit=&after=`,
/// `?key_id=&type=&since=&before=&limit=`, `?key_id=`): 200 or the
/// contract's 400 naming the parameter (404 `key_not_found` for a key
/// filter that matches no key).
#[test]
fn admin_query_strings_are_parsed_to_the_contract() {
    let h = Harness::new();
    let param_value = prop_oneof![
        prop::sample::select(vec![
            "",
            "0",
            "1",
            "1000",
            "1001",
            "-1",
            "4294967296",
            "1.5",
            "abc",
            "%FF",
            "%00",
            "%2B1",
            "+1",
            "1e3",
            "session_started",
            "nope",
            "2026-01-01T00:00:00Z",
            "2026-01-01T00%3A00%3A00Z",
            "30m",
            "%E2%80%AE",
            "ks_",
            "key_x",
        ])
        .prop_map(str::to_owned),
        "[ -~]{0,20}".prop_map(|s| s.replace(['#', ' '], "%20")),
        prop::collection::vec(any::<u8>(), 0..12)
            .prop_map(|b| { b.iter().map(|x| format!("%{x:02X}")).collect::<String>() }),
    ];
    let name = prop::sample::select(vec![
        "limit", "after", "key_id", "type", "since", "before", "LIMIT", "x", "", "limit[]",
    ]);
    let query = prop::collection::vec((name, param_value), 0..5);
    let paths = [
        "/api/admin/keys",
        "/api/admin/events",
        "/api/admin/sessions",
    ];
    let strategy = (prop::sample::select(paths.to_vec()), query);
    fuzz("admin query strings", 600, strategy, |(path, params)| {
        let q: Vec<String> = params.iter().map(|(n, v)| format!("{n}={v}")).collect();
        let uri = format!("{path}?{}", q.join("&"));
        prop_assume!(uri.parse::<axum::http::Uri>().is_ok());
        let (status, answer) = h.send("GET", &uri, b"", true);
        if status.is_success() {
            return Ok(());
        }
        let code = answer["error"]["code"].as_str().unwrap_or_default();
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        prop_assert!(
            matches!(
                (status.as_u16(), code),
                (400, "invalid_request") | (404, "key_not_found")
            ),
            "{}: {} {}",
            uri,
            status,
            answer
        );
        prop_assert!(!message.is_empty());
        if status == StatusCode::BAD_REQUEST {
            let named = ["limit", "after", "key_id", "type", "since", "before"]
                .iter()
                .any(|p| message.contains(p));
            prop_assert!(named, "{}: 400 without a parameter name: {}", uri, message);
        }
        Ok(())
    });
}

/// Regression (found by `key_ref` and `rfc3339`, fixed in a92d161): a full
/// key behind a quote or a byte-order mark was echoed in `key_not_found`
/// (admin API, CLI) and in `invalid_request` for times.
#[test]
fn a_quoted_or_bom_prefixed_key_is_not_echoed() {
    let key = AccessKey::generate();
    let secret = key.expose_secret();
    for wrapped in [
        format!("\"{secret}\""),
        format!("\u{feff}{secret}"),
        format!("'{secret}'"),
        format!("<{secret}>"),
    ] {
        let m = input::time("expires_at", &wrapped).unwrap_err().to_string();
        assert!(!m.contains(secret), "time echoes the key: {m}");
        assert!(
            !keys::redact_secret(&wrapped).contains(secret),
            "redact_secret: {wrapped}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("bug.db"), OpenMode::CreateAndMigrate).unwrap();
    let m = store
        .get_key(&format!("\"{secret}\""), Timestamp(0))
        .unwrap_err()
        .to_string();
    assert!(!m.contains(secret), "key_not_found echoes the key: {m}");
}

/// Regression (found by `json_body`, fixed in a92d161): a syntax-class
/// error raised inside a field, such as serde_json's "trailing characters"
/// when a struct field gets a longer array (`"device": ["a", "b", null]`),
/// was reported as "the request body is not valid JSON" without the
/// field's name, though the body is valid JSON.
#[test]
fn an_error_inside_a_field_names_it() {
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Start {
        access_key: String,
        device: Option<Device>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Device {
        name: Option<String>,
        fingerprint: Option<String>,
    }
    let body = br#"{"access_key": "x", "device": ["a", "b", null]}"#;
    match parse_json::<Start>(body) {
        Err(Error::InvalidRequest(m)) => assert!(m.contains("device"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// Regression (found by `body POST /api/session/start`, fixed in
/// a92d161): a body given as a JSON array of the request's fields was a
/// start.
#[test]
fn array_bodies_are_refused() {
    let h = Harness::new();
    let top = json!([h.key, null, null]).to_string();
    let (status, answer) = h.send("POST", "/api/session/start", top.as_bytes(), false);
    assert_eq!(status, StatusCode::BAD_REQUEST, "top-level array: {answer}");
    assert_eq!(answer["error"]["code"], "invalid_request");
}

/// Found by this file (fixed with `extract::object_or_null`): `device`
/// given as a JSON array of its fields (`["phone", "fp"]`) was accepted.
#[test]
fn device_arrays_are_refused() {
    let h = Harness::new();
    let nested = json!({"access_key": h.key, "device": ["phone", "fp"]}).to_string();
    let (status, answer) = h.send("POST", "/api/session/start", nested.as_bytes(), false);
    assert_eq!(status, StatusCode::BAD_REQUEST, "device array: {answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("device:"), "{message}");
}

/// Found by this file (fixed in `parse_json`): a body with anything after
/// its JSON value (`{}A`, `{"access_key": "…"} trailing`) was accepted;
/// it is 400 `invalid_request` "not valid JSON".
#[test]
fn trailing_garbage_after_the_json_body_is_refused() {
    let h = Harness::new();
    let (status, answer) = h.send("POST", "/api/admin/keys", b"{}A", true);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let body = format!("{} trailing", json!({"access_key": h.key}));
    let (status, answer) = h.send("POST", "/api/session/status", body.as_bytes(), false);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
}

/// Found by `key_ref`, `access_key` and `rfc3339` (fixed in
/// `redact_secret`): a key whose `ks_` lies inside the run after an earlier
/// `ks_` (`ks_ks_<key>`, `ks_AAAAAAAAAAAAks_<key>`) was shown.
#[test]
fn a_key_inside_another_tag_run_is_redacted() {
    let key = AccessKey::generate();
    let secret = key.expose_secret();
    for text in [
        format!("ks_{secret}"),
        format!("ks_AAAAAAAAAAAA{secret}"),
        format!("\"ks_x{secret}\""),
    ] {
        let shown = keys::redact_secret(&text);
        assert!(!shown.contains(secret_tail(secret)), "{text} -> {shown}");
    }
}
