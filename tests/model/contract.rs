//! The contract as a model: a key's sessions as a `Vec` and the answers
//! the contract gives, written as plain code.

use serde_json::{json, Value};

use crate::ops::{Device, Policy};
use crate::TIMEOUT_MS;

/// Why a session ended, as the contract names it; `Superseded` keeps who
/// took the seat, which the superseded device is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndKind {
    Ended,
    /// `by` is the index of the session that took the seat.
    Superseded {
        by: usize,
        by_device: Device,
        by_started_at: i64,
    },
    Expired,
    /// With the audit log's `detail.cause`.
    Revoked(&'static str),
}

impl EndKind {
    pub fn reason(self) -> &'static str {
        match self {
            EndKind::Ended => "ended",
            EndKind::Superseded { .. } => "superseded",
            EndKind::Expired => "expired",
            EndKind::Revoked(_) => "revoked",
        }
    }
}

#[derive(Debug, Clone)]
pub struct MSession {
    pub sid: String,
    pub device: Device,
    pub fingerprint: bool,
    pub fence: i64,
    pub started_at: i64,
    pub last_heartbeat: i64,
    pub end: Option<EndKind>,
    /// When it ended (for an expiry: when the lease ran out).
    pub ended_at: i64,
    /// The end of its borrow, if it was borrowed.
    pub borrowed_until: Option<i64>,
}

impl MSession {
    /// When its lease runs out: a timeout after its last heartbeat, or the
    /// end of its borrow, whichever is later.
    pub fn lease(&self) -> i64 {
        (self.last_heartbeat + TIMEOUT_MS).max(self.borrowed_until.unwrap_or(0))
    }

    /// Borrowed at `now`: no start may supersede it.
    pub fn borrowed_at(&self, now: i64) -> bool {
        self.end.is_none() && self.borrowed_until.is_some_and(|u| now < u)
    }
}

/// A `session_borrowed` event: session, time, fence, borrow end.
#[derive(Debug, Clone)]
pub struct MBorrow {
    pub sid: String,
    pub at: i64,
    pub fence: i64,
    pub until: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Active,
    Suspended,
    Revoked,
}

/// The contract, for one key.
pub struct Model {
    pub seats: u32,
    pub policy: Policy,
    /// The key's `max_borrow_hours` (0: off).
    pub max_borrow_hours: u32,
    /// Every successful borrow, in order.
    pub borrows: Vec<MBorrow>,
    pub state: KeyState,
    /// Every session this key ever had, in start order.
    pub sessions: Vec<MSession>,
    /// The highest fence handed out so far (0 before the first start).
    pub last_fence: i64,
    /// Starts refused with `seats_full` (each is a `start_rejected` event).
    pub rejected: usize,
    /// The key's own expiry, and whether the sessions it ended are marked.
    pub expires_at: Option<i64>,
    pub expiry_applied: bool,
    /// The time of the current op.
    pub now: i64,
}

impl Model {
    /// Records the expiry of every session whose lease ran out by `now`:
    /// live means `now - last_heartbeat < timeout`, exactly.
    ///
    /// A key that reaches its own `expires_at` ends, at that instant, the
    /// sessions live then (reason `revoked`, cause `key_expired`): the sweep
    /// only records it, as it records a lease that ran out, so clearing the
    /// expiry later brings none of them back.
    pub fn expire(&mut self, now: i64) {
        self.now = now;
        if let Some(x) = self
            .expires_at
            .filter(|&x| x <= now && !self.expiry_applied)
        {
            self.expiry_applied = true;
            for s in self.sessions.iter_mut().filter(|s| s.end.is_none()) {
                if s.lease() <= x {
                    s.end = Some(EndKind::Expired);
                    s.ended_at = s.lease();
                } else {
                    s.end = Some(EndKind::Revoked("key_expired"));
                    s.ended_at = x;
                }
            }
        }
        for s in &mut self.sessions {
            if s.end.is_none() && now >= s.lease() {
                s.end = Some(EndKind::Expired);
                s.ended_at = s.lease();
            }
        }
    }

    pub fn live(&self) -> Vec<usize> {
        (0..self.sessions.len())
            .filter(|&i| self.sessions[i].end.is_none())
            .collect()
    }

    /// The key's own 403, which wins over anything about sessions.
    pub fn key_error(&self) -> Option<Value> {
        match self.state {
            KeyState::Active if self.expires_at.is_some_and(|x| x <= self.now) => {
                Some(error(403, "key_expired"))
            }
            KeyState::Active => None,
            KeyState::Suspended => Some(error(403, "key_suspended")),
            KeyState::Revoked => Some(error(403, "key_revoked")),
        }
    }

    /// Live sessions in the order they lose their seat: oldest heartbeat
    /// first, then lowest fence (docs/api.md, "Seats and conflict policy").
    pub fn victims_order(&self, among: &[usize]) -> Vec<usize> {
        let mut v = among.to_vec();
        v.sort_by_key(|&i| (self.sessions[i].last_heartbeat, self.sessions[i].fence));
        v
    }

    pub fn find(&self, sid: &str) -> Option<usize> {
        self.sessions.iter().position(|s| s.sid == sid)
    }

    /// A heartbeat's answer for a session that is no longer live.
    pub fn dead_answer(s: &MSession) -> Value {
        match s.end.expect("ended") {
            EndKind::Superseded {
                by_device,
                by_started_at,
                ..
            } => json!({
                "status": 409, "code": "session_superseded",
                "superseded_by": {"device_name": by_device.name(), "started_at": by_started_at},
            }),
            kind => json!({
                "status": 410, "code": format!("session_{}", kind.reason()),
                "reason": kind.reason(),
            }),
        }
    }
}

pub fn error(status: u16, code: &str) -> Value {
    json!({"status": status, "code": code})
}
