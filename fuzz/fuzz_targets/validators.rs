//! Every input validator on any text: never panics; refusals are
//! `invalid_request` naming the field; accepted values obey the limits
//! and times round-trip.
#![no_main]

use keyseat::clock::Timestamp;
use keyseat::error::Error;
use keyseat::input;
use libfuzzer_sys::fuzz_target;

fn named(result: Result<impl Sized, Error>, field: &str) {
    if let Err(e) = result {
        match e {
            Error::InvalidRequest(m) => assert!(m.starts_with(field), "{m}"),
            other => panic!("{field}: {other:?}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let ok = (8..=128).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    assert_eq!(input::session_id(&text).is_ok(), ok);
    named(input::session_id(&text), "session_id");
    for (field, max) in [
        ("device.name", 128),
        ("device.fingerprint", 256),
        ("label", 200),
    ] {
        match input::optional_text(Some(text.to_string()), field, max) {
            Ok(Some(v)) => {
                assert_eq!(v, text.trim());
                assert!(v.chars().count() <= max && !v.chars().any(char::is_control));
            }
            Ok(None) => assert!(text.trim().is_empty()),
            Err(e) => named(Err::<(), _>(e), field),
        }
    }
    match input::time("expires_at", &text) {
        Ok(t) => assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t)),
        Err(e) => named(Err::<(), _>(e), "expires_at"),
    }
    named(
        input::time_or_age("since", &text, Timestamp(1_800_000_000_000)),
        "since",
    );
    named(input::event_type(&text), "type");
    if data.len() >= 4 {
        let n = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        assert_eq!(input::max_sessions(n).is_ok(), (1..=1000).contains(&n));
    }
});
