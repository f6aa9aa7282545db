//! Answers as the model compares them: times in milliseconds since the
//! case began, errors as status and code, and the tally of what was seen.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicUsize;

use keyseat::clock::Timestamp;
use serde_json::{json, Value};

use crate::common::api::ApiErr;
use crate::ops::Op;

// Per thread (each test runs its cases on its own thread, inside
// `block_on`), so two tests never mix them.
thread_local! {
    /// Server time when the current case began: times are shown and compared
    /// as milliseconds since then, so a failure reads `"last_heartbeat": 60000`.
    pub static CASE_T0: Cell<i64> = const { Cell::new(0) };
    pub static CASES: Cell<usize> = const { Cell::new(0) };
    pub static OPS: Cell<usize> = const { Cell::new(0) };
    /// How often each kind of answer came, to show what the cases covered.
    pub static SEEN: RefCell<BTreeMap<String, usize>> = const { RefCell::new(BTreeMap::new()) };
}

pub fn case_t0() -> i64 {
    CASE_T0.with(Cell::get)
}

/// An RFC 3339 time from an answer, as milliseconds since the case began.
pub fn ms(v: &Value) -> Value {
    v.as_str()
        .and_then(Timestamp::parse_rfc3339)
        .map(|t| json!(t.millis() - case_t0()))
        .unwrap_or_else(|| v.clone())
}

/// A time from a typed answer, as milliseconds since the case began.
pub fn ms_of(t: Timestamp) -> Value {
    json!(t.millis() - case_t0())
}

/// The top-level fields where two answers differ, for the failure message.
pub fn differing(expected: &Value, got: &Value) -> String {
    let (Some(e), Some(g)) = (expected.as_object(), got.as_object()) else {
        return String::new();
    };
    let mut names: Vec<&str> = e
        .keys()
        .chain(g.keys())
        .filter(|k| e.get(*k) != g.get(*k))
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    names.dedup();
    names.join(", ")
}

/// The parts of an error answer the model predicts.
pub fn error_view(err: &ApiErr) -> Value {
    let e = err.error();
    let mut v = json!({"status": err.status, "code": e["code"]});
    if !e["superseded_by"].is_null() {
        v["superseded_by"] = json!({
            "device_name": e["superseded_by"]["device_name"],
            "started_at": ms(&e["superseded_by"]["started_at"]),
        });
    }
    if !e["reason"].is_null() {
        v["reason"] = e["reason"].clone();
    }
    if !e["max_sessions"].is_null() {
        v["max_sessions"] = e["max_sessions"].clone();
    }
    v
}

// ------------------------------------------------------------- the harness

pub static CASE_SEQ: AtomicUsize = AtomicUsize::new(0);

/// Counts an answer under a short label such as `Heartbeat 409 session_superseded`.
pub fn tally(op: &Op, got: &Value) {
    let name = format!("{op:?}");
    let name = name.split([' ', '(']).next().unwrap_or("");
    let mut label = format!("{name} {}", got["status"]);
    if let Some(code) = got["code"].as_str() {
        label = format!("{label} {code}");
    } else if got["previous_session_terminated"] == true {
        label.push_str(" terminated");
    } else if got["resumed"] == true {
        label.push_str(" resumed");
    } else if got["ended"] == false {
        label = format!("{label} already {}", got["reason"].as_str().unwrap_or(""));
    }
    SEEN.with(|seen| *seen.borrow_mut().entry(label).or_default() += 1);
}
