//! The admin API's answers (docs/api.md, "Admin API"). Keys and events are
//! the model's own types ([`crate::model::Key`], [`crate::model::Event`]);
//! these are the pages and envelopes around them.

use serde::{Deserialize, Serialize};
use utoipa::openapi::{RefOr, Schema};
use utoipa::ToSchema;

use crate::clock::Timestamp;
use crate::model::{EndReason, Event, Key, Session};

fn secret_schema() -> RefOr<Schema> {
    super::session::access_key_schema("The secret, shown only here.").into()
}

/// `POST /api/admin/keys`, 201: the key and, this once, its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreatedKey {
    /// The key.
    #[serde(flatten)]
    pub key: Key,
    /// The secret, shown only here.
    #[schema(schema_with = secret_schema)]
    pub access_key: String,
}

/// `GET /api/admin/keys`, 200.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KeyPage {
    /// Keys in creation order.
    pub keys: Vec<Key>,
    /// When more keys follow: pass as `after` for the next page.
    pub next_after: Option<String>,
}

/// A live session as the admin API, the CLI's `sessions list --json` and
/// the dashboard show it: the key it holds a seat of, the device, and how
/// long since it was heard from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AdminSession {
    /// The key it holds a seat of.
    pub key_id: String,
    /// The key's display prefix.
    pub key_prefix: String,
    /// The session's id.
    pub session_id: String,
    /// The device's name, if it gave one.
    pub device_name: Option<String>,
    /// The device's fingerprint, if it gave one.
    pub fingerprint: Option<String>,
    /// The address the start came from.
    pub client_addr: Option<String>,
    /// Its fence.
    #[schema(minimum = 1)]
    pub fence: i64,
    /// When it started.
    pub started_at: Timestamp,
    /// Its last heartbeat.
    pub last_heartbeat: Timestamp,
    /// Whole seconds since its last heartbeat.
    pub seconds_since_heartbeat: u64,
    /// When it stops being live unless a heartbeat arrives.
    pub expires_at: Timestamp,
    /// While it is borrowed (held offline, never superseded): until when;
    /// `null` otherwise.
    pub borrowed_until: Option<Timestamp>,
}

impl AdminSession {
    /// `s` as seen at `now`.
    pub fn new(s: &Session, now: Timestamp) -> Self {
        AdminSession {
            key_id: s.key_id.clone(),
            key_prefix: s.key_prefix.clone(),
            session_id: s.session_id.clone(),
            device_name: s.device_name.clone(),
            fingerprint: s.fingerprint.clone(),
            client_addr: s.client_addr.clone(),
            fence: s.fence,
            started_at: s.started_at,
            last_heartbeat: s.last_heartbeat,
            seconds_since_heartbeat: now.secs_since(s.last_heartbeat),
            expires_at: s.expires_at,
            borrowed_until: super::session::borrowed_at(s, now),
        }
    }
}

/// `GET /api/admin/sessions`, 200.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SessionList {
    /// Live sessions, most recent heartbeat first.
    pub sessions: Vec<AdminSession>,
}

/// `DELETE /api/admin/sessions/{session_id}`, 200.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KickAnswer {
    /// The session.
    pub session_id: String,
    /// True when it was live and is now ended.
    pub ended: bool,
    /// Present when it had already ended: why.
    #[schema(value_type = EndReason, required = false)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<EndReason>,
}

/// `GET /api/admin/events`, 200.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    /// Newest first.
    pub events: Vec<Event>,
    /// When the page is full: pass as `before` for the next page.
    pub next_before: Option<i64>,
}

/// The statuses a PATCH may set (revoking has its own route).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PatchStatus {
    /// Resume a suspended key.
    Active,
    /// Suspend: ends its live sessions (reason `revoked`).
    Suspended,
}
