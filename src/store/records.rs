//! What both engines write and answer, in one place: the session a start
//! admits, the audit log's details, and who an ending is recorded as by.
//! The engines differ in SQL, never in what a record says.

use serde_json::{json, Value};

use crate::clock::Timestamp;
use crate::model::{Actor, Key, Session};
use crate::rules::{EndedBy, Ending};
use crate::store::StartRequest;

/// The session a start admits, as both engines answer it.
pub(in crate::store) fn admitted_session(
    req: &StartRequest,
    key: &Key,
    session_id: String,
    fence: i64,
    now: Timestamp,
    lease: Timestamp,
    borrowed_until: Option<Timestamp>,
) -> Session {
    Session {
        session_id,
        key_id: key.key_id.clone(),
        key_prefix: key.prefix.clone(),
        fence,
        device_name: req.device_name.clone(),
        fingerprint: req.fingerprint.clone(),
        client_addr: Some(req.actor.0.clone()),
        started_at: now,
        last_heartbeat: now,
        expires_at: lease,
        ended_at: None,
        end_reason: None,
        superseded_by: None,
        borrowed_until,
    }
}

/// `session_started`'s detail.
pub(in crate::store) fn started_detail(fence: i64, terminated: &[String]) -> Value {
    json!({ "fence": fence, "terminated": terminated })
}

/// `session_borrowed`'s detail: until when, and for how many hours asked.
pub(in crate::store) fn borrowed_detail(fence: i64, until: Timestamp, hours: u32) -> Value {
    json!({ "fence": fence, "borrowed_until": until, "hours": hours })
}

/// `session_superseded`'s detail: who took the seat.
pub(in crate::store) fn superseded_detail(by_session: &str, by_device: Option<&str>) -> Value {
    json!({ "superseded_by": by_session, "by_device_name": by_device })
}

/// `start_rejected`'s detail.
pub(in crate::store) fn rejected_detail() -> Value {
    json!({ "reason": "seats_full" })
}

/// `key_created`'s detail: the key's terms.
pub(in crate::store) fn key_created_detail(key: &Key) -> Value {
    json!({
        "label": key.label,
        "max_sessions": key.max_sessions,
        "on_conflict": key.on_conflict,
        "expires_at": key.expires_at,
        "max_borrow_hours": key.max_borrow_hours,
    })
}

/// Who an ending the rules decided is recorded as by (the requester, or
/// the server), and its detail (the cause, when there is one).
pub(in crate::store) fn ending_record(
    ending: &Ending,
    requester: &Actor,
) -> (Actor, Option<Value>) {
    let actor = match ending.by {
        EndedBy::Requester => requester.clone(),
        EndedBy::Server => Actor::server(),
    };
    (actor, ending.cause.map(|c| json!({ "cause": c.as_str() })))
}
