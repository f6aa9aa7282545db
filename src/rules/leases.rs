//! Leases: how long a session lives. A restart or a gap in the server's
//! progress never ends a session by itself (the contract's outage rule),
//! and a session whose lease ran out ended at its lease's end, or at its
//! key's expiry if that came first, whichever path notices it.

use crate::clock::{Gap, Timestamp};
use crate::model::{EndReason, Session};

use super::ends::{Cause, EndedBy, Ending};
use super::Timing;

/// After a restart, the lease a session that was live at the stop gets: a
/// full timeout from the moment the server is ready, or its own lease if
/// that is later. A restart or outage never ends a session by itself.
pub fn lease_after_restart(current: Timestamp, ready_at: Timestamp, timing: Timing) -> Timestamp {
    current.max(timing.lease_until(ready_at))
}

/// After a gap in the server's own progress (the process was stopped, its
/// VM paused, the host starved it), the lease a session gets. A gap is an
/// outage without a restart, so the restart rule applies from the gap's
/// end: a session live when the gap began gets a full timeout from its
/// end; one whose lease had already run out stays dead.
pub fn lease_after_gap(lease: Timestamp, gap: Gap, timing: Timing) -> Timestamp {
    if lease > gap.from {
        lease.max(timing.lease_until(gap.to))
    } else {
        lease
    }
}

/// How a session that is open on record but no longer live ended on its
/// own: at its key's expiry (revoked, cause `key_expired`) if the key
/// expired while the lease still ran, else at its lease's end (expired).
/// Every path that finds a dead open session (sweep, key changes, starts,
/// heartbeats, ends) asks this, so they agree whichever runs first.
pub fn ending_of_dead_session(session: &Session, key_expires_at: Option<Timestamp>) -> Ending {
    match key_expires_at.filter(|k| *k < session.expires_at) {
        Some(k) => Ending {
            reason: EndReason::Revoked,
            at: k,
            cause: Some(Cause::KeyExpired),
            by: EndedBy::Server,
        },
        None => Ending {
            reason: EndReason::Expired,
            at: session.expires_at,
            cause: None,
            by: EndedBy::Server,
        },
    }
}

/// How a live session of a key past its expiry ends once noticed at
/// `now`: revoked, cause `key_expired`, by the server (as the sweep does).
pub fn key_expiry_ending(now: Timestamp) -> Ending {
    Ending {
        reason: EndReason::Revoked,
        at: now,
        cause: Some(Cause::KeyExpired),
        by: EndedBy::Server,
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{session, T0};
    use super::*;

    /// After a restart a session gets a full timeout from readiness.
    #[test]
    fn restart_grants_a_full_timeout() {
        let t = Timing::default();
        let ready = T0.plus_secs(600);
        assert_eq!(
            lease_after_restart(T0.plus_secs(60), ready, t),
            ready.plus_secs(60)
        );
        let far = ready.plus_secs(1000);
        assert_eq!(lease_after_restart(far, ready, t), far);
    }

    #[test]
    fn a_freeze_is_an_outage_sessions_live_before_it_get_a_full_timeout_after_it() {
        let timing = Timing {
            heartbeat_interval_secs: 1,
            session_timeout_secs: 3,
        };
        let gap = Gap {
            from: T0,
            to: T0.plus_secs(6),
        };
        // Live at the start of the freeze (1 s left): 3 s from its end.
        assert_eq!(
            lease_after_gap(T0.plus_secs(1), gap, timing),
            T0.plus_secs(9)
        );
        // Its lease ended exactly when the freeze began: dead, stays dead.
        assert_eq!(lease_after_gap(T0, gap, timing), T0);
        // A lease longer than the rule's (a just-resumed restart) is kept.
        assert_eq!(
            lease_after_gap(T0.plus_secs(20), gap, timing),
            T0.plus_secs(20)
        );
    }

    /// A dead session ended at its lease's end, unless its key expired
    /// first: then at the key's expiry, revoked, cause `key_expired`.
    #[test]
    fn a_dead_session_ended_at_whichever_came_first() {
        let s = session("aaaaaaaa", 1, T0, None); // lease ends at 60 s
        let expired = Ending {
            reason: EndReason::Expired,
            at: T0.plus_secs(60),
            cause: None,
            by: EndedBy::Server,
        };
        assert_eq!(ending_of_dead_session(&s, None), expired);
        assert_eq!(ending_of_dead_session(&s, Some(T0.plus_secs(60))), expired);
        assert_eq!(ending_of_dead_session(&s, Some(T0.plus_secs(90))), expired);
        assert_eq!(
            ending_of_dead_session(&s, Some(T0.plus_secs(59))),
            Ending {
                reason: EndReason::Revoked,
                at: T0.plus_secs(59),
                cause: Some(Cause::KeyExpired),
                by: EndedBy::Server,
            }
        );
    }
}
