//! The JSON parser behind every request body (`parse_json`), on any bytes,
//! into the shape of a start request: a value or `invalid_request`, never
//! a panic, never a "line 1 column 17" position in the message.
#![no_main]

use keyseat::error::Error;
use keyseat::http::extract::parse_json;
use libfuzzer_sys::fuzz_target;

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

fuzz_target!(|data: &[u8]| {
    match parse_json::<Start>(data) {
        Ok(_) => {}
        Err(Error::InvalidRequest(m)) => {
            assert!(!m.is_empty());
            assert!(!m.contains(" at line "), "{m}");
        }
        Err(other) => panic!("{other:?}"),
    }
    let _ = parse_json::<serde_json::Value>(data);
});
