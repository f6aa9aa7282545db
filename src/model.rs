//! The domain's nouns: keys, sessions, end reasons and audit events, as the
//! rest of the crate and the wire contract see them. Storage maps rows into
//! these; the HTTP and CLI layers render them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::clock::Timestamp;

/// What happens when a key's seats are all taken and another device starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConflictPolicy {
    /// The new device wins; the live session with the oldest heartbeat ends.
    Takeover,
    /// The new device is refused with `seats_full`.
    Reject,
}

impl ConflictPolicy {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictPolicy::Takeover => "takeover",
            ConflictPolicy::Reject => "reject",
        }
    }

    /// Parses the wire and database spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "takeover" => Some(ConflictPolicy::Takeover),
            "reject" => Some(ConflictPolicy::Reject),
            _ => None,
        }
    }
}

/// An access key's administrative state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    /// Usable.
    Active,
    /// Temporarily refused; can be resumed.
    Suspended,
    /// Permanently refused.
    Revoked,
}

impl KeyStatus {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Suspended => "suspended",
            KeyStatus::Revoked => "revoked",
        }
    }

    /// Parses the wire and database spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(KeyStatus::Active),
            "suspended" => Some(KeyStatus::Suspended),
            "revoked" => Some(KeyStatus::Revoked),
            _ => None,
        }
    }
}

/// Why a session is no longer live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The client ended it.
    Ended,
    /// Another device started on the same key.
    Superseded,
    /// No heartbeat within the session timeout.
    Expired,
    /// An admin kicked it, or its key was revoked, suspended or expired.
    Revoked,
}

impl EndReason {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Ended => "ended",
            EndReason::Superseded => "superseded",
            EndReason::Expired => "expired",
            EndReason::Revoked => "revoked",
        }
    }

    /// Parses the wire and database spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ended" => Some(EndReason::Ended),
            "superseded" => Some(EndReason::Superseded),
            "expired" => Some(EndReason::Expired),
            "revoked" => Some(EndReason::Revoked),
            _ => None,
        }
    }
}

/// An access key as admins see it (never with its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Key {
    /// Public name, `key_…`.
    #[schema(example = "key_Rqy55lb8QkfTg3hO")]
    pub key_id: String,
    /// `ks_` + the first 8 characters of the secret.
    #[schema(example = "ks_Rp7Jc4af", pattern = "^ks_[0-9A-Za-z]{8}$")]
    pub prefix: String,
    /// Free text for the operator (customer name, order number…).
    #[schema(max_length = 200, example = "Acme Corp, order 1042")]
    pub label: Option<String>,
    /// Seat limit.
    #[schema(minimum = 1, maximum = 1000)]
    pub max_sessions: u32,
    /// What a start does when all seats are live.
    pub on_conflict: ConflictPolicy,
    /// The longest a device may borrow a seat for (offline use); 0: never.
    #[schema(minimum = 0, maximum = 8760)]
    pub max_borrow_hours: u32,
    /// Administrative state.
    pub status: KeyStatus,
    /// When the key stops working, if ever.
    pub expires_at: Option<Timestamp>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change by an admin.
    pub updated_at: Timestamp,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
    /// Sessions live right now.
    pub live_sessions: u32,
}

impl Key {
    /// Whether the key's own expiry has passed at `now`.
    pub fn is_expired_at(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// A session row, live or ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Client-chosen or server-generated id, unique across all keys.
    pub session_id: String,
    /// The key it holds a seat of.
    pub key_id: String,
    /// The key's display prefix.
    pub key_prefix: String,
    /// Strictly increasing per key.
    pub fence: i64,
    /// The device's self-reported name.
    pub device_name: Option<String>,
    /// The device's self-reported stable fingerprint.
    pub fingerprint: Option<String>,
    /// Address the start came from.
    pub client_addr: Option<String>,
    /// When it started.
    pub started_at: Timestamp,
    /// Its last heartbeat (the start counts as one).
    pub last_heartbeat: Timestamp,
    /// When it stops being live unless another heartbeat arrives.
    pub expires_at: Timestamp,
    /// When it ended, if it did.
    pub ended_at: Option<Timestamp>,
    /// Why it ended, if it did.
    pub end_reason: Option<EndReason>,
    /// The session that took its seat, if it was superseded.
    pub superseded_by: Option<String>,
    /// Until when it was borrowed (held offline, never superseded), if it
    /// was.
    #[serde(default)]
    pub borrowed_until: Option<Timestamp>,
}

impl Session {
    /// Live: not ended and its lease has not run out at `now`. This is the
    /// contract's definition; it holds whether or not the sweep has run.
    pub fn is_live_at(&self, now: Timestamp) -> bool {
        self.ended_at.is_none() && now < self.expires_at
    }

    /// Borrowed at `now`: live and within its borrow, so no start may
    /// supersede it (its device cannot be told).
    pub fn is_borrowed_at(&self, now: Timestamp) -> bool {
        self.is_live_at(now) && self.borrowed_until.is_some_and(|until| now < until)
    }
}

/// The kinds of audit event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// A key was created.
    KeyCreated,
    /// A key's settings or status changed.
    KeyUpdated,
    /// A key was revoked.
    KeyRevoked,
    /// A session started.
    SessionStarted,
    /// A session was borrowed for offline use.
    SessionBorrowed,
    /// A client ended its session.
    SessionEnded,
    /// A session lost its seat to another device.
    SessionSuperseded,
    /// A session missed its heartbeats.
    SessionExpired,
    /// An admin ended a session, or its key stopped being usable.
    SessionRevoked,
    /// A start was refused because all seats were live (policy `reject`).
    StartRejected,
}

impl EventType {
    /// Every event type, for validation messages.
    pub const ALL: [EventType; 10] = [
        EventType::KeyCreated,
        EventType::KeyUpdated,
        EventType::KeyRevoked,
        EventType::SessionStarted,
        EventType::SessionBorrowed,
        EventType::SessionEnded,
        EventType::SessionSuperseded,
        EventType::SessionExpired,
        EventType::SessionRevoked,
        EventType::StartRejected,
    ];

    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::KeyCreated => "key_created",
            EventType::KeyUpdated => "key_updated",
            EventType::KeyRevoked => "key_revoked",
            EventType::SessionStarted => "session_started",
            EventType::SessionBorrowed => "session_borrowed",
            EventType::SessionEnded => "session_ended",
            EventType::SessionSuperseded => "session_superseded",
            EventType::SessionExpired => "session_expired",
            EventType::SessionRevoked => "session_revoked",
            EventType::StartRejected => "start_rejected",
        }
    }

    /// Parses the wire and database spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == text)
    }

    /// The event recorded when a session ends for `reason`.
    pub fn for_end(reason: EndReason) -> Self {
        match reason {
            EndReason::Ended => EventType::SessionEnded,
            EndReason::Superseded => EventType::SessionSuperseded,
            EndReason::Expired => EventType::SessionExpired,
            EndReason::Revoked => EventType::SessionRevoked,
        }
    }
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Increasing id; newest first in listings.
    pub id: i64,
    /// When it happened.
    pub at: Timestamp,
    /// What happened.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// The key concerned.
    pub key_id: Option<String>,
    /// The key's display prefix.
    pub key_prefix: Option<String>,
    /// The session concerned.
    pub session_id: Option<String>,
    /// The device concerned.
    pub device_name: Option<String>,
    /// Who caused it: an IP address, `cli`, or `server` for the sweep.
    pub client_addr: Option<String>,
    /// Event-specific details (the superseding session, changed fields…).
    #[schema(value_type = Option<Object>)]
    pub detail: Option<serde_json::Value>,
}

/// Who is acting, recorded on events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

impl Actor {
    /// The server itself (sweep, restart recovery).
    pub fn server() -> Self {
        Actor("server".into())
    }
    /// The command-line tool.
    pub fn cli() -> Self {
        Actor("cli".into())
    }
}
