//! The session API's bodies and answers: what an app on a device sends to
//! `/api/session/*` and what it gets back (docs/api.md, "Session API").

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::ToSchema;

use crate::clock::Timestamp;
use crate::model::{ConflictPolicy, EndReason, Session};

/// An access key's schema: its grammar and an example, written once for
/// the bodies that send one and the answer that shows a new one.
pub(super) fn access_key_schema(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(Some("^ks_[0-9A-Za-z]{38}$"))
        .examples([serde_json::json!(
            "ks_Rp7Jc4afS8V51Ng4i88Z0Msy6bpALhDm2k5E6F"
        )])
}

/// The `access_key` field of a body: longer texts are refused before any
/// checksum is computed.
fn sent_key_schema() -> RefOr<Schema> {
    access_key_schema("The access key (the secret).")
        .max_length(Some(256))
        .into()
}

/// A `session_id` field's schema: the contract's id grammar.
fn session_id_schema(description: &str, nullable: bool) -> RefOr<Schema> {
    let kind = if nullable {
        SchemaType::from_iter([Type::String, Type::Null])
    } else {
        SchemaType::Type(Type::String)
    };
    ObjectBuilder::new()
        .schema_type(kind)
        .description(Some(description))
        .min_length(Some(8))
        .max_length(Some(128))
        .pattern(Some("^[A-Za-z0-9._-]{8,128}$"))
        .examples([serde_json::json!("3f1c9a7e-office-pc")])
        .into()
}

fn own_session_id_schema() -> RefOr<Schema> {
    session_id_schema(
        "The client's own id, for idempotent retries; a UUID without it.",
        true,
    )
}

/// The optional `nonce` of a session request: with one, the answer is
/// signed (docs/api.md, "Signed answers").
fn nonce_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .description(Some(
            "A fresh random value per request (v1.1): the answer echoes it with `server_time` \
             and `key_prefix` and carries a `Keyseat-Signature` header (Ed25519 over the exact body).",
        ))
        .min_length(Some(8))
        .max_length(Some(128))
        .pattern(Some("^[A-Za-z0-9._-]{8,128}$"))
        .examples([serde_json::json!("Jt0q7c1m2Vd3cS9xw4Rk8Q")])
        .into()
}

fn the_session_id_schema() -> RefOr<Schema> {
    session_id_schema("The session's id.", false)
}

/// `POST /api/session/start`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StartBody {
    #[schema(schema_with = sent_key_schema)]
    pub access_key: String,
    #[schema(schema_with = own_session_id_schema)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, deserialize_with = "super::object_or_null")]
    pub device: Option<DeviceBody>,
    #[schema(schema_with = nonce_schema)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// The device a start comes from.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct DeviceBody {
    /// Shown to the device it supersedes, and in logs and the audit log.
    #[schema(max_length = 128, example = "office-pc")]
    pub name: Option<String>,
    /// A stable id of the device, for the same-device rules.
    #[schema(max_length = 256, example = "a1b2c3d4")]
    pub fingerprint: Option<String>,
}

/// `POST /api/session/end`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionBody {
    #[schema(schema_with = sent_key_schema)]
    pub access_key: String,
    #[schema(schema_with = the_session_id_schema)]
    pub session_id: String,
    #[schema(schema_with = nonce_schema)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

fn wait_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
        .description(Some(
            "Hold the answer up to this many seconds (0 up to `heartbeat_interval_seconds`; v1.1):              it comes when the wait is over (200), or at once when the session ends (its 409/410).              The lease is renewed when the request arrives.",
        ))
        .minimum(Some(0))
        .examples([serde_json::json!(25)])
        .into()
}

/// `POST /api/session/heartbeat`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatBody {
    #[schema(schema_with = sent_key_schema)]
    pub access_key: String,
    #[schema(schema_with = the_session_id_schema)]
    pub session_id: String,
    #[schema(schema_with = wait_schema)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_seconds: Option<u64>,
    #[schema(schema_with = nonce_schema)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// `POST /api/session/status`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StatusBody {
    #[schema(schema_with = sent_key_schema)]
    pub access_key: String,
    #[schema(schema_with = nonce_schema)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

fn borrow_hours_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .description(Some(
            "How long to hold the seat offline, in hours: 1 up to the key's `max_borrow_hours`.",
        ))
        .minimum(Some(1))
        .maximum(Some(8760))
        .examples([serde_json::json!(72)])
        .into()
}

/// `POST /api/session/borrow` (v1.1): a start, or the device's own live
/// session (`session_id`), whose seat is then held offline for `hours`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BorrowBody {
    #[schema(schema_with = sent_key_schema)]
    pub access_key: String,
    #[schema(schema_with = own_session_id_schema)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, deserialize_with = "super::object_or_null")]
    pub device: Option<DeviceBody>,
    #[schema(schema_with = borrow_hours_schema)]
    pub hours: u32,
    #[schema(schema_with = nonce_schema)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// `POST /api/session/borrow`, 200: a start's answer, the borrow's end and
/// the token an app checks offline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BorrowAnswer {
    /// The session, as a start answers it.
    #[serde(flatten)]
    pub session: StartAnswer,
    /// Until when the seat is held without heartbeats (never past the
    /// key's own expiry).
    pub borrowed_until: Timestamp,
    /// A compact JWS (EdDSA, `kid` of the signing key): claims `iss`
    /// (`keyseat`), `sub` (session id), `key_prefix`, `fence`,
    /// `device_fingerprint` (when given), `iat`, `exp` (= `borrowed_until`,
    /// Unix seconds).
    #[schema(example = "eyJhbGciOiJFZERTQSIsImtpZCI6Ii4uLiJ9.eyJpc3MiOiJrZXlzZWF0In0.c2ln")]
    pub lease_token: String,
}

/// The end of a session's borrow while it lasts, `None` otherwise: what
/// the status answer, the admin list and the dashboard show.
pub fn borrowed_at(s: &Session, now: Timestamp) -> Option<Timestamp> {
    s.borrowed_until.filter(|_| s.is_borrowed_at(now))
}

/// A session a start superseded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TerminatedSession {
    /// Its id.
    pub session_id: String,
    /// Its device's name, if it gave one.
    pub device_name: Option<String>,
    /// Its last heartbeat.
    pub last_heartbeat: Timestamp,
}

impl From<&Session> for TerminatedSession {
    fn from(s: &Session) -> Self {
        TerminatedSession {
            session_id: s.session_id.clone(),
            device_name: s.device_name.clone(),
            last_heartbeat: s.last_heartbeat,
        }
    }
}

/// `POST /api/session/start`, 200.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StartAnswer {
    /// The session's id (the client's, or a server-generated UUID).
    #[schema(example = "3f1c9a7e-office-pc")]
    pub session_id: String,
    /// Strictly increasing per key.
    #[schema(minimum = 1, example = 1)]
    pub fence: i64,
    /// When the session started.
    pub started_at: Timestamp,
    /// When it stops being live unless a heartbeat arrives.
    pub expires_at: Timestamp,
    /// How often to heartbeat.
    #[schema(minimum = 1, example = 30)]
    pub heartbeat_interval_seconds: u64,
    /// How long a session lives after its last heartbeat.
    #[schema(minimum = 1, example = 60)]
    pub session_timeout_seconds: u64,
    /// Whether this start superseded other sessions.
    pub previous_session_terminated: bool,
    /// The sessions it superseded.
    pub terminated_sessions: Vec<TerminatedSession>,
    /// True for a retry of a start whose session is still live.
    pub resumed: bool,
}

/// `POST /api/session/heartbeat`, 200.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatAnswer {
    /// The session's id.
    pub session_id: String,
    /// The session's fence.
    #[schema(minimum = 1)]
    pub fence: i64,
    /// This heartbeat's time.
    pub last_heartbeat: Timestamp,
    /// The renewed lease.
    pub expires_at: Timestamp,
    /// How often to heartbeat.
    #[schema(minimum = 1)]
    pub heartbeat_interval_seconds: u64,
}

/// `POST /api/session/end`, 200.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EndAnswer {
    /// True when the session was live and is now ended.
    pub ended: bool,
    /// Present when it had already ended: why.
    #[schema(value_type = EndReason, required = false)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<EndReason>,
}

/// A live session in a status answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatusSession {
    /// Its id.
    pub session_id: String,
    /// Its device's name, if it gave one.
    pub device_name: Option<String>,
    /// When it started.
    pub started_at: Timestamp,
    /// Its last heartbeat.
    pub last_heartbeat: Timestamp,
    /// When it stops being live unless a heartbeat arrives.
    pub expires_at: Timestamp,
    /// Its fence.
    #[schema(minimum = 1)]
    pub fence: i64,
    /// While it is borrowed (held offline, never superseded): until when;
    /// `null` otherwise (v1.1).
    pub borrowed_until: Option<Timestamp>,
}

impl StatusSession {
    /// `s` as seen at `now`.
    pub fn new(s: &Session, now: Timestamp) -> Self {
        StatusSession {
            session_id: s.session_id.clone(),
            device_name: s.device_name.clone(),
            started_at: s.started_at,
            last_heartbeat: s.last_heartbeat,
            expires_at: s.expires_at,
            fence: s.fence,
            borrowed_until: borrowed_at(s, now),
        }
    }
}

/// `POST /api/session/status`, 200.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatusAnswer {
    /// True when the key has at least one live session.
    pub active: bool,
    /// The key's seat limit.
    #[schema(minimum = 1, maximum = 1000)]
    pub max_sessions: u32,
    /// The key's conflict policy.
    pub on_conflict: ConflictPolicy,
    /// Live sessions, oldest start first.
    pub sessions: Vec<StatusSession>,
}

/// `superseded_by` in a `session_superseded` error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SupersededBy {
    /// The device that took the seat, if it gave a name.
    pub device_name: Option<String>,
    /// When it started.
    pub started_at: Timestamp,
}
