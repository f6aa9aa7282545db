//! Leases: how long a session lives. A restart or a gap in the server's
//! progress never ends a session by itself (the contract's outage rule).

use super::Timing;
use crate::clock::{Gap, Timestamp};

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

#[cfg(test)]
mod tests {
    use super::super::fixtures::T0;
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
}
