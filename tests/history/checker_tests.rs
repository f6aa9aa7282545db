//! The checker itself must be able to fail: hand-made histories that break
//! each rule, and one that only looks like a violation.

use keyseat::clock::Timestamp;
use serde_json::{json, Value};

use crate::history::check::check;
use crate::history::{Kind, Rec};

fn rec(kind: Kind, sid: &str, send: u64, recv: u64, status: u16, body: Value) -> Rec {
    Rec {
        client: 0,
        server: 0,
        key: 0,
        kind,
        sid: Some(sid.to_owned()),
        send,
        recv,
        status,
        body,
    }
}

fn started(sid: &str, send: u64, recv: u64, fence: i64) -> Rec {
    rec(
        Kind::Start,
        sid,
        send,
        recv,
        200,
        json!({"session_id": sid, "fence": fence, "resumed": false, "terminated_sessions": []}),
    )
}

fn beat(sid: &str, send: u64, recv: u64, fence: i64) -> Rec {
    rec(
        Kind::Heartbeat,
        sid,
        send,
        recv,
        200,
        json!({"fence": fence}),
    )
}

fn event(id: i64, kind: &str, sid: &str, at_ms: i64, detail: Value) -> Value {
    json!({"id": id, "type": kind, "key_id": "k0", "session_id": sid,
           "at": Timestamp(1_800_000_000_000 + at_ms).to_rfc3339(), "detail": detail})
}

fn violations(recs: &[Rec], events: &[Value]) -> Vec<String> {
    let mut v = Vec::new();
    let keys = ["k0", "k1", "k2"].map(String::from);
    check(recs, events, &keys, &mut v);
    v
}

/// Two sessions of a one-seat key certainly live at once are a violation.
#[test]
fn checker_sees_two_sessions_certainly_live_on_one_seat() {
    // b's start was answered at 20 and b seen live by a heartbeat sent at
    // 40; a was still seen live by a heartbeat sent at 50: both were live
    // over [20, 40].
    let recs = [
        started("a", 0, 10, 1),
        started("b", 15, 20, 2),
        beat("b", 40, 45, 2),
        beat("a", 50, 60, 1),
    ];
    let v = violations(&recs, &[]);
    assert!(v.iter().any(|m| m.contains("certainly live")), "{v:#?}");
}

/// A heartbeat success sent after an end was acknowledged is a violation;
/// one sent before the end's answer arrived is not.
#[test]
fn checker_sees_a_heartbeat_success_after_an_acknowledged_end() {
    let recs = [
        started("a", 0, 10, 1),
        rec(Kind::End, "a", 20, 30, 200, json!({"ended": true})),
        beat("a", 40, 50, 1),
    ];
    let v = violations(&recs, &[]);
    assert!(
        v.iter()
            .any(|m| m.contains("after its end was acknowledged")),
        "{v:#?}"
    );
    // The same heartbeat sent before the end's answer arrived is allowed
    // (it may have taken effect first).
    let recs = [
        started("a", 0, 10, 1),
        rec(Kind::End, "a", 20, 30, 200, json!({"ended": true})),
        beat("a", 25, 50, 1),
    ];
    let v = violations(&recs, &[]);
    assert!(
        !v.iter().any(|m| m.contains("end was acknowledged")),
        "{v:#?}"
    );
}

/// Replaying the audit log finds too many live sessions, fences out of
/// order and a session with no end after the final sweep.
#[test]
fn checker_replays_the_log_exactly() {
    // Two starts on a one-seat key with no end between them, fences out
    // of order.
    let events = [
        event(
            1,
            "session_started",
            "a",
            0,
            json!({"fence": 2, "terminated": []}),
        ),
        event(
            2,
            "session_started",
            "b",
            10,
            json!({"fence": 1, "terminated": []}),
        ),
    ];
    let v = violations(&[], &events);
    assert!(
        v.iter()
            .any(|m| m.contains("2 sessions live when b started")),
        "{v:#?}"
    );
    assert!(
        v.iter().any(|m| m.contains("not above the previous")),
        "{v:#?}"
    );
    assert!(
        v.iter().any(|m| m.contains("no end after the final sweep")),
        "{v:#?}"
    );
}

/// An expiry the sweep wrote late counts from when the lease ran out: not
/// a violation.
#[test]
fn checker_counts_an_expiry_from_when_the_lease_ran_out() {
    // a's lease ran out at 2000; b started at 2500; the sweep wrote a's
    // expiry only after b's start. Not a violation.
    let events = [
        event(
            1,
            "session_started",
            "a",
            0,
            json!({"fence": 1, "terminated": []}),
        ),
        event(
            2,
            "session_started",
            "b",
            2_500,
            json!({"fence": 2, "terminated": []}),
        ),
        event(3, "session_expired", "a", 2_000, Value::Null),
        event(4, "session_ended", "b", 3_000, Value::Null),
    ];
    assert_eq!(violations(&[], &events), Vec::<String>::new());
    // Had the lease run out after b's start, both were live.
    let mut late = events.clone();
    late[2] = event(3, "session_expired", "a", 2_600, Value::Null);
    let v = violations(&[], &late);
    assert!(v.iter().any(|m| m.contains("2 sessions live")), "{v:#?}");
}
