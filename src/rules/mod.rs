//! The session rules, pure: given a key, its sessions, a request and the
//! current time, decide what happens. No SQL and no HTTP here; storage
//! loads the inputs and applies the decision inside one transaction, so the
//! decision is made on a consistent view and applied atomically, and a
//! second storage engine calls the same functions instead of copying them.
//!
//! By topic, so a reader finds each rule in one place:
//!
//! - [`seats`]: starting a session (seats, takeover, reject, retries) and
//!   how many seats a key has in use;
//! - [`borrowing`]: how long a seat borrowed for offline use is held;
//! - [`leases`]: how long a session lives, after a restart or a gap, and
//!   how a session whose lease ran out ended;
//! - [`key_changes`]: a new key's defaults, what a change to a key may do
//!   and which sessions it ends;
//! - [`ends`]: ending a session on request, and explaining one that is over.
//!
//! Here: [`Timing`], and the check every use of a key starts with.

pub mod borrowing;
pub mod ends;
pub mod key_changes;
pub mod leases;
pub mod seats;

#[cfg(test)]
mod fixtures;

pub use borrowing::{borrow_extended, borrow_until, MAX_BORROW_HOURS};
pub use ends::{
    end_reason_at, ending_of_dead_session, key_expiry_ending, not_live_error, plan_end, Cause,
    EndPlan, EndedBy, Ending,
};
pub use key_changes::{
    check_key_change, ended_before_change, ended_by_change, excess_after_limit_change,
    new_key_terms, revoke_needed, Revocation,
};
pub use leases::{lease_after_gap, lease_after_restart};
pub use seats::{plan_start, seats_in_use, StartDecision, StartPlan};

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::model::{Key, KeyStatus};

/// The two durations every liveness rule depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How often clients are told to heartbeat.
    pub heartbeat_interval_secs: u64,
    /// How long a session lives after its last heartbeat.
    pub session_timeout_secs: u64,
}

impl Timing {
    /// When a session that heartbeats at `now` stops being live.
    pub fn lease_until(&self, now: Timestamp) -> Timestamp {
        now.plus_secs(self.session_timeout_secs)
    }
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat_interval_secs: 30,
            session_timeout_secs: 60,
        }
    }
}

/// Refuses a key that cannot be used at `now`, with the contract's reason.
/// Revocation wins over suspension, which wins over expiry: the most
/// permanent reason is the most useful one to show a customer.
pub fn check_key(key: &Key, now: Timestamp) -> Result<()> {
    match key.status {
        KeyStatus::Revoked => Err(Error::KeyRevoked),
        KeyStatus::Suspended => Err(Error::KeySuspended),
        KeyStatus::Active if key.is_expired_at(now) => Err(Error::KeyExpired),
        KeyStatus::Active => Ok(()),
    }
}

/// The status a person is shown for a key at `now`, in the CLI and the
/// dashboard: what [`check_key`] would answer a device, so a suspended key
/// past its expiry reads `suspended`, and an active one past it `expired`.
pub fn shown_status(key: &Key, now: Timestamp) -> &'static str {
    match check_key(key, now) {
        Ok(()) => "active",
        Err(Error::KeyRevoked) => "revoked",
        Err(Error::KeySuspended) => "suspended",
        Err(_) => "expired",
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{key, T0};
    use super::*;
    use crate::model::ConflictPolicy;

    /// Key problems come first, most permanent reason first.
    #[test]
    fn key_state_is_checked_first() {
        let mut k = key(1, ConflictPolicy::Takeover);
        k.expires_at = Some(T0);
        assert!(matches!(check_key(&k, T0), Err(Error::KeyExpired)));
        assert!(check_key(&k, Timestamp(T0.0 - 1)).is_ok());
        k.status = KeyStatus::Suspended;
        assert!(matches!(check_key(&k, T0), Err(Error::KeySuspended)));
        k.status = KeyStatus::Revoked;
        assert!(matches!(
            plan_start(&k, None, &[], None, T0),
            Err(Error::KeyRevoked)
        ));
    }
}
