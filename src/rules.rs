//! The session rules, pure: given a key, its sessions, a request and the
//! current time, decide what happens. No SQL and no HTTP here; storage
//! loads the inputs and applies the decision inside one transaction, so the
//! decision is made on a consistent view and applied atomically.

use crate::clock::{Gap, Timestamp};
use crate::error::{Error, Result};
use crate::model::{ConflictPolicy, EndReason, Key, KeyStatus, Session};

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

/// What a start request turns into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartDecision {
    /// A retry of a start whose session is still live: answer with that
    /// session again and terminate nothing.
    Resume {
        /// The session being resumed.
        session_id: String,
    },
    /// Start a new session, first ending these live ones (reason
    /// `superseded`) to make room.
    Admit {
        /// Live sessions that lose their seat, oldest heartbeat first.
        supersede: Vec<String>,
    },
}

/// The plan for a start: sessions whose lease already ran out (to record as
/// expired, so the audit log is exact even if the sweep has not run yet),
/// and the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartPlan {
    /// Not-yet-recorded sessions of the key that are already dead.
    pub expire: Vec<String>,
    /// What to do with the request.
    pub decision: StartDecision,
}

/// Decides a start.
///
/// - `requested`: the session with the client-supplied id, if the client
///   supplied one and it exists (for any key).
/// - `open`: every session of this key that has not been recorded as ended.
/// - `fingerprint`: the starting device's fingerprint, if any.
///
/// Errors: the key's own problems, `session_id_taken`, `seats_full`.
pub fn plan_start(
    key: &Key,
    requested: Option<&Session>,
    open: &[Session],
    fingerprint: Option<&str>,
    now: Timestamp,
) -> Result<StartPlan> {
    check_key(key, now)?;
    let expire: Vec<String> = open
        .iter()
        .filter(|s| s.ended_at.is_none() && !s.is_live_at(now))
        .map(|s| s.session_id.clone())
        .collect();

    if let Some(existing) = requested {
        if existing.key_id == key.key_id && existing.is_live_at(now) {
            return Ok(StartPlan {
                expire,
                decision: StartDecision::Resume {
                    session_id: existing.session_id.clone(),
                },
            });
        }
        return Err(Error::SessionIdTaken(existing.session_id.clone()));
    }

    let mut live: Vec<&Session> = open.iter().filter(|s| s.is_live_at(now)).collect();
    let limit = key.max_sessions.max(1) as usize;
    if live.len() < limit {
        return Ok(StartPlan {
            expire,
            decision: StartDecision::Admit { supersede: vec![] },
        });
    }
    let need = live.len() + 1 - limit;
    let fingerprint = fingerprint.filter(|f| !f.is_empty());
    // Victim order: the same device restarting first (its old session is a
    // ghost), then the oldest heartbeat (the device most likely gone), with
    // the older fence breaking ties so the order is total.
    live.sort_by_key(|s| {
        let same_device = fingerprint.is_some() && s.fingerprint.as_deref() == fingerprint;
        (!same_device, s.last_heartbeat, s.fence)
    });
    let same_device = live
        .iter()
        .take_while(|s| fingerprint.is_some() && s.fingerprint.as_deref() == fingerprint)
        .count();
    let allowed = match key.on_conflict {
        ConflictPolicy::Takeover => true,
        // `reject` still lets a device that restarted take back its own
        // seat, or it would be locked out for a full timeout by its ghost.
        ConflictPolicy::Reject => same_device >= need,
    };
    if !allowed {
        return Err(Error::SeatsFull {
            max_sessions: key.max_sessions,
        });
    }
    Ok(StartPlan {
        expire,
        decision: StartDecision::Admit {
            supersede: live
                .iter()
                .take(need)
                .map(|s| s.session_id.clone())
                .collect(),
        },
    })
}

/// Why a session that is not live stopped being live. A session that was
/// never recorded as ended but whose lease ran out is `expired`.
pub fn end_reason_at(session: &Session, now: Timestamp) -> Option<EndReason> {
    match session.end_reason {
        Some(reason) => Some(reason),
        None if !session.is_live_at(now) => Some(EndReason::Expired),
        None => None,
    }
}

/// Live sessions to end when a key's seat limit drops below the number in
/// use: the oldest heartbeats go first, as with a takeover.
pub fn excess_after_limit_change(open: &[Session], new_limit: u32, now: Timestamp) -> Vec<String> {
    let mut live: Vec<&Session> = open.iter().filter(|s| s.is_live_at(now)).collect();
    let limit = new_limit.max(1) as usize;
    if live.len() <= limit {
        return vec![];
    }
    live.sort_by_key(|s| (s.last_heartbeat, s.fence));
    let excess = live.len() - limit;
    live.iter()
        .take(excess)
        .map(|s| s.session_id.clone())
        .collect()
}

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
    use super::*;
    use crate::model::{KeyStatus, Session};

    const T0: Timestamp = Timestamp(1_800_000_000_000);

    fn key(max: u32, policy: ConflictPolicy) -> Key {
        Key {
            key_id: "key_test".into(),
            prefix: "ks_abcdefgh".into(),
            label: None,
            max_sessions: max,
            on_conflict: policy,
            status: KeyStatus::Active,
            expires_at: None,
            created_at: T0,
            updated_at: T0,
            revoked_at: None,
            live_sessions: 0,
        }
    }

    fn session(id: &str, fence: i64, heartbeat_at: Timestamp, fp: Option<&str>) -> Session {
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
        }
    }

    fn admit(plan: &StartPlan) -> Vec<String> {
        match &plan.decision {
            StartDecision::Admit { supersede } => supersede.clone(),
            other => panic!("expected admit, got {other:?}"),
        }
    }

    /// A free seat admits without ending anyone.
    #[test]
    fn free_seat_admits_without_supersede() {
        let plan = plan_start(&key(1, ConflictPolicy::Takeover), None, &[], None, T0).unwrap();
        assert!(admit(&plan).is_empty());
    }

    /// Takeover on a full key supersedes the live session with the oldest
    /// heartbeat.
    #[test]
    fn takeover_evicts_oldest_heartbeat() {
        let open = [
            session("aaaaaaaa", 1, T0.plus_secs(20), None),
            session("bbbbbbbb", 2, T0.plus_secs(5), None),
            session("cccccccc", 3, T0.plus_secs(30), None),
        ];
        let now = T0.plus_secs(40);
        let plan = plan_start(&key(3, ConflictPolicy::Takeover), None, &open, None, now).unwrap();
        assert_eq!(admit(&plan), vec!["bbbbbbbb".to_string()]);
    }

    /// Reject on a full key answers seats_full.
    #[test]
    fn reject_refuses_when_full() {
        let open = [session("aaaaaaaa", 1, T0, Some("fp-a"))];
        let err = plan_start(
            &key(1, ConflictPolicy::Reject),
            None,
            &open,
            Some("fp-b"),
            T0.plus_secs(1),
        )
        .unwrap_err();
        assert!(matches!(err, Error::SeatsFull { max_sessions: 1 }));
    }

    /// Reject lets the same device (same fingerprint) restart at once.
    #[test]
    fn reject_admits_the_same_device_restarting() {
        let open = [
            session("aaaaaaaa", 1, T0, Some("fp-a")),
            session("bbbbbbbb", 2, T0.plus_secs(9), Some("fp-b")),
        ];
        let plan = plan_start(
            &key(2, ConflictPolicy::Reject),
            None,
            &open,
            Some("fp-b"),
            T0.plus_secs(10),
        )
        .unwrap();
        assert_eq!(admit(&plan), vec!["bbbbbbbb".to_string()]);
    }

    /// An empty fingerprint matches nothing, even another empty one.
    #[test]
    fn empty_fingerprint_is_no_identity() {
        let open = [session("aaaaaaaa", 1, T0, Some(""))];
        let err = plan_start(
            &key(1, ConflictPolicy::Reject),
            None,
            &open,
            Some(""),
            T0.plus_secs(1),
        )
        .unwrap_err();
        assert!(matches!(err, Error::SeatsFull { .. }));
    }

    /// Takeover prefers the same device's ghost over an older stranger.
    #[test]
    fn takeover_prefers_same_device() {
        let open = [
            session("aaaaaaaa", 1, T0, Some("fp-a")),
            session("bbbbbbbb", 2, T0.plus_secs(9), Some("fp-b")),
        ];
        let plan = plan_start(
            &key(2, ConflictPolicy::Takeover),
            None,
            &open,
            Some("fp-b"),
            T0.plus_secs(10),
        )
        .unwrap();
        assert_eq!(admit(&plan), vec!["bbbbbbbb".to_string()]);
    }

    /// A session is dead exactly at last_heartbeat + timeout, sweep or not:
    /// it neither holds a seat nor is superseded, and it is recorded expired.
    #[test]
    fn liveness_is_exact_at_the_timeout() {
        let open = [session("aaaaaaaa", 1, T0, None)];
        let k = key(1, ConflictPolicy::Reject);
        let just_before = T0.plus_secs(60).0 - 1;
        assert!(plan_start(&k, None, &open, None, Timestamp(just_before)).is_err());
        let plan = plan_start(&k, None, &open, None, T0.plus_secs(60)).unwrap();
        assert!(admit(&plan).is_empty());
        assert_eq!(plan.expire, vec!["aaaaaaaa".to_string()]);
    }

    /// Retrying a start with the id of a live session resumes it.
    #[test]
    fn retry_of_live_session_resumes() {
        let s = session("aaaaaaaa", 1, T0, None);
        let plan = plan_start(
            &key(1, ConflictPolicy::Takeover),
            Some(&s),
            std::slice::from_ref(&s),
            None,
            T0.plus_secs(1),
        )
        .unwrap();
        assert_eq!(
            plan.decision,
            StartDecision::Resume {
                session_id: "aaaaaaaa".into()
            }
        );
    }

    /// A session id that exists but is not live for this key is taken.
    #[test]
    fn reused_session_id_is_taken() {
        let mut ended = session("aaaaaaaa", 1, T0, None);
        ended.ended_at = Some(T0.plus_secs(1));
        ended.end_reason = Some(EndReason::Ended);
        let k = key(1, ConflictPolicy::Takeover);
        let err = plan_start(&k, Some(&ended), &[], None, T0.plus_secs(2)).unwrap_err();
        assert!(matches!(err, Error::SessionIdTaken(_)));

        let mut other_key = session("bbbbbbbb", 1, T0, None);
        other_key.key_id = "key_other".into();
        let err = plan_start(&k, Some(&other_key), &[], None, T0.plus_secs(2)).unwrap_err();
        assert!(matches!(err, Error::SessionIdTaken(_)));

        let expired = session("cccccccc", 1, T0, None);
        let err = plan_start(&k, Some(&expired), &[], None, T0.plus_secs(61)).unwrap_err();
        assert!(matches!(err, Error::SessionIdTaken(_)));
    }

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

    /// The reason for a dead session is its recorded reason, or `expired`.
    #[test]
    fn end_reason_is_precise() {
        let mut s = session("aaaaaaaa", 1, T0, None);
        assert_eq!(end_reason_at(&s, T0.plus_secs(59)), None);
        assert_eq!(
            end_reason_at(&s, T0.plus_secs(60)),
            Some(EndReason::Expired)
        );
        s.ended_at = Some(T0.plus_secs(1));
        s.end_reason = Some(EndReason::Superseded);
        assert_eq!(
            end_reason_at(&s, T0.plus_secs(2)),
            Some(EndReason::Superseded)
        );
    }

    /// Lowering the seat limit ends the oldest heartbeats beyond it.
    #[test]
    fn lowering_the_limit_ends_the_excess() {
        let open = [
            session("aaaaaaaa", 1, T0.plus_secs(3), None),
            session("bbbbbbbb", 2, T0.plus_secs(1), None),
            session("cccccccc", 3, T0.plus_secs(2), None),
        ];
        let now = T0.plus_secs(4);
        assert_eq!(
            excess_after_limit_change(&open, 1, now),
            vec!["bbbbbbbb".to_string(), "cccccccc".to_string()]
        );
        assert!(excess_after_limit_change(&open, 3, now).is_empty());
    }

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
