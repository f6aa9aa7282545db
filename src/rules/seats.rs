//! Seats: what a start turns into (a new session, a retry resumed, a
//! takeover, a refusal), and how many seats a key has in use. Why one
//! function for a start: the victim order and the `reject` exception for a
//! restarting device depend on each other, and a second engine must get
//! both exactly as the first does.

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::model::{ConflictPolicy, Key, Session};

use super::check_key;

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
    // A borrowed session keeps its seat: its device is offline and cannot
    // be told, so with every seat borrowed a start is refused whatever the
    // policy.
    live.retain(|s| !s.is_borrowed_at(now));
    if live.len() < need {
        return Err(Error::SeatsFull {
            max_sessions: key.max_sessions,
        });
    }
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

/// The seats a key has in use at `now`: its live sessions, or none once
/// the key is past its expiry (they ended then, recorded or not yet).
pub fn seats_in_use(key: &Key, open: &[Session], now: Timestamp) -> u32 {
    if key.is_expired_at(now) {
        return 0;
    }
    open.iter().filter(|s| s.is_live_at(now)).count() as u32
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{key, session, T0};
    use super::*;
    use crate::model::EndReason;

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

    /// A borrowed session is never superseded: takeover takes the seat of
    /// a session that is not borrowed, and with every seat borrowed a
    /// start is refused even under takeover.
    #[test]
    fn borrowed_sessions_are_never_superseded() {
        let mut borrowed = session("aaaaaaaa", 1, T0, Some("fp-a"));
        borrowed.borrowed_until = Some(T0.plus_secs(3600));
        borrowed.expires_at = T0.plus_secs(3600);
        let online = session("bbbbbbbb", 2, T0.plus_secs(5), None);
        let now = T0.plus_secs(10);
        let takeover = key(2, ConflictPolicy::Takeover);
        let open = [borrowed.clone(), online];
        let plan = plan_start(&takeover, None, &open, None, now).unwrap();
        assert_eq!(admit(&plan), vec!["bbbbbbbb".to_string()]);

        let only_borrowed = [borrowed.clone()];
        let one = key(1, ConflictPolicy::Takeover);
        let err = plan_start(&one, None, &only_borrowed, None, now).unwrap_err();
        assert!(matches!(err, Error::SeatsFull { max_sessions: 1 }));
        // Not even the same device restarting takes it under reject.
        let reject = key(1, ConflictPolicy::Reject);
        let err = plan_start(&reject, None, &only_borrowed, Some("fp-a"), now).unwrap_err();
        assert!(matches!(err, Error::SeatsFull { .. }));
        // Its own retry resumes it.
        let plan = plan_start(&one, Some(&borrowed), &only_borrowed, None, now).unwrap();
        assert!(matches!(plan.decision, StartDecision::Resume { .. }));
        // Once the borrow is over it is an ordinary session again (here
        // still live on a heartbeat), and takeover takes its seat.
        let mut after = borrowed;
        after.expires_at = T0.plus_secs(3660);
        let later = T0.plus_secs(3601);
        let plan = plan_start(&one, None, std::slice::from_ref(&after), None, later).unwrap();
        assert_eq!(admit(&plan), vec!["aaaaaaaa".to_string()]);
    }

    /// A key's seats in use are its live sessions; none once it expired.
    #[test]
    fn seats_in_use_count_live_sessions_of_an_unexpired_key() {
        let open = [
            session("aaaaaaaa", 1, T0, None),
            session("bbbbbbbb", 2, T0.plus_secs(30), None),
        ];
        let mut k = key(3, ConflictPolicy::Takeover);
        assert_eq!(seats_in_use(&k, &open, T0.plus_secs(1)), 2);
        // The first lease ran out at 60 s.
        assert_eq!(seats_in_use(&k, &open, T0.plus_secs(60)), 1);
        k.expires_at = Some(T0.plus_secs(10));
        assert_eq!(seats_in_use(&k, &open, T0.plus_secs(10)), 0);
        assert_eq!(seats_in_use(&k, &open, T0.plus_secs(9)), 2);
    }
}
