//! The key and sessions every rules test starts from: one key, sessions
//! with a given heartbeat, so a test states only what it is about.

use super::Timing;
use crate::clock::Timestamp;
use crate::model::{ConflictPolicy, Key, KeyStatus, Session};

pub const T0: Timestamp = Timestamp(1_800_000_000_000);

pub fn key(max: u32, policy: ConflictPolicy) -> Key {
    Key {
        key_id: "key_test".into(),
        prefix: "ks_abcdefgh".into(),
        label: None,
        max_sessions: max,
        on_conflict: policy,
        max_borrow_hours: 0,
        status: KeyStatus::Active,
        expires_at: None,
        created_at: T0,
        updated_at: T0,
        revoked_at: None,
        live_sessions: 0,
    }
}

pub fn session(id: &str, fence: i64, heartbeat_at: Timestamp, fp: Option<&str>) -> Session {
    Session {
        session_id: id.into(),
        key_id: "key_test".into(),
        key_prefix: "ks_abcdefgh".into(),
        fence,
        device_name: Some(format!("device-{id}")),
        fingerprint: fp.map(str::to_owned),
        client_addr: None,
        started_at: T0,
        last_heartbeat: heartbeat_at,
        expires_at: Timing::default().lease_until(heartbeat_at),
        ended_at: None,
        end_reason: None,
        superseded_by: None,
        borrowed_until: None,
    }
}
