//! Key changes: what a change to a key may do, and which live sessions it
//! ends. Revocation is final; a change first settles how the key's
//! sessions stood (so a new expiry or a resume cannot revive them), then
//! the sessions that no longer fit the key as it now is end, revoked, with
//! the cause the audit log shows.

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::model::{ConflictPolicy, EndReason, Key, KeyStatus, Session};

use super::ends::key_expiry_ending;
use super::ends::{Cause, EndedBy, Ending};

/// Live sessions a key change ends, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The sessions, by id.
    pub sessions: Vec<String>,
    /// How each of them ends.
    pub ending: Ending,
}

/// A new key's seat limit and conflict policy where the operator chose
/// none: one seat, takeover (docs/api.md, "Seats and conflict policy"):
/// the seat goes to the device starting now, since the live session most
/// likely to lose it is a ghost.
pub fn new_key_terms(
    max_sessions: Option<u32>,
    on_conflict: Option<ConflictPolicy>,
) -> (u32, ConflictPolicy) {
    (
        max_sessions.unwrap_or(1),
        on_conflict.unwrap_or(ConflictPolicy::Takeover),
    )
}

/// Refuses a patch of `key` that would set `new_status`: a revoked key
/// cannot change (revocation is final), and revoking goes through its own
/// call, which also ends the key's sessions and stamps `revoked_at`.
pub fn check_key_change(key: &Key, new_status: Option<KeyStatus>) -> Result<()> {
    if key.status == KeyStatus::Revoked {
        return Err(Error::Conflict(format!(
            "key {} is revoked; revocation is final",
            key.key_id
        )));
    }
    if new_status == Some(KeyStatus::Revoked) {
        return Err(Error::InvalidRequest(
            "status: use the revoke action to revoke a key".into(),
        ));
    }
    Ok(())
}

/// Whether revoking `key` changes anything: revoking a revoked key is
/// answered as it is, so the call is idempotent.
pub fn revoke_needed(key: &Key) -> bool {
    key.status != KeyStatus::Revoked
}

/// The live sessions that ended before a change to `key`: all of them if
/// the key is past its expiry (as the sweep would end them, by the
/// server), so that a new expiry cannot revive them.
pub fn ended_before_change(key: &Key, live: &[Session], now: Timestamp) -> Option<Revocation> {
    key.is_expired_at(now).then(|| Revocation {
        sessions: live.iter().map(|s| s.session_id.clone()).collect(),
        ending: key_expiry_ending(now),
    })
}

/// The live sessions that no longer fit `key` as a change left it, ended
/// by the requester: all of a revoked, suspended or expired key's (in that
/// order of cause, most permanent first), else those beyond its seat limit.
pub fn ended_by_change(key: &Key, live: &[Session], now: Timestamp) -> Revocation {
    let all = || live.iter().map(|s| s.session_id.clone()).collect();
    let (cause, sessions) = if key.status == KeyStatus::Revoked {
        (Cause::KeyRevoked, all())
    } else if key.status == KeyStatus::Suspended {
        (Cause::KeySuspended, all())
    } else if key.is_expired_at(now) {
        (Cause::KeyExpired, all())
    } else {
        (
            Cause::SeatLimitLowered,
            excess_after_limit_change(live, key.max_sessions, now),
        )
    };
    Revocation {
        sessions,
        ending: Ending {
            reason: EndReason::Revoked,
            at: now,
            cause: Some(cause),
            by: EndedBy::Requester,
        },
    }
}

/// Live sessions to end when a key's seat limit drops below the number in
/// use: the oldest heartbeats go first, as with a takeover, but borrowed
/// sessions last: ending one frees its seat on the server only, since its
/// offline device keeps a valid token, so ending an online one instead is
/// the change that actually takes effect.
pub fn excess_after_limit_change(open: &[Session], new_limit: u32, now: Timestamp) -> Vec<String> {
    let mut live: Vec<&Session> = open.iter().filter(|s| s.is_live_at(now)).collect();
    let limit = new_limit.max(1) as usize;
    if live.len() <= limit {
        return vec![];
    }
    live.sort_by_key(|s| (s.is_borrowed_at(now), s.last_heartbeat, s.fence));
    let excess = live.len() - limit;
    live.iter()
        .take(excess)
        .map(|s| s.session_id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{key, session, T0};
    use super::*;

    /// Lowering the seat limit ends online sessions before borrowed ones.
    #[test]
    fn lowering_the_limit_spares_borrowed_sessions() {
        let mut away = session("aaaaaaaa", 1, T0, None);
        away.borrowed_until = Some(T0.plus_secs(7200));
        away.expires_at = T0.plus_secs(7200);
        let open = [away, session("bbbbbbbb", 2, T0.plus_secs(5), None)];
        let now = T0.plus_secs(10);
        assert_eq!(excess_after_limit_change(&open, 1, now), vec!["bbbbbbbb"]);
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

    /// A new key has one seat and takes over unless told otherwise.
    #[test]
    fn a_new_key_defaults_to_one_seat_and_takeover() {
        assert_eq!(new_key_terms(None, None), (1, ConflictPolicy::Takeover));
        assert_eq!(
            new_key_terms(Some(3), Some(ConflictPolicy::Reject)),
            (3, ConflictPolicy::Reject)
        );
    }

    /// A revoked key cannot change, and a patch cannot revoke.
    #[test]
    fn revocation_is_final_and_has_its_own_call() {
        let mut k = key(1, ConflictPolicy::Takeover);
        assert!(check_key_change(&k, Some(KeyStatus::Suspended)).is_ok());
        assert!(matches!(
            check_key_change(&k, Some(KeyStatus::Revoked)),
            Err(Error::InvalidRequest(_))
        ));
        assert!(revoke_needed(&k));
        k.status = KeyStatus::Revoked;
        assert!(matches!(
            check_key_change(&k, Some(KeyStatus::Active)),
            Err(Error::Conflict(_))
        ));
        assert!(matches!(
            check_key_change(&k, None),
            Err(Error::Conflict(_))
        ));
        assert!(!revoke_needed(&k));
    }

    /// Before a change, the sessions of a key past its expiry end, by the
    /// server; those of a usable key stay.
    #[test]
    fn a_passed_expiry_ends_sessions_before_a_change() {
        let live = [session("aaaaaaaa", 1, T0, None)];
        let mut k = key(1, ConflictPolicy::Takeover);
        let now = T0.plus_secs(5);
        assert_eq!(ended_before_change(&k, &live, now), None);
        k.expires_at = Some(now);
        assert_eq!(
            ended_before_change(&k, &live, now),
            Some(Revocation {
                sessions: vec!["aaaaaaaa".into()],
                ending: key_expiry_ending(now),
            })
        );
    }

    /// After a change: a revoked, suspended or expired key ends all its
    /// live sessions with that cause; otherwise only the excess over the
    /// seat limit ends.
    #[test]
    fn a_change_ends_what_no_longer_fits() {
        let live = [
            session("aaaaaaaa", 1, T0.plus_secs(2), None),
            session("bbbbbbbb", 2, T0.plus_secs(1), None),
        ];
        let now = T0.plus_secs(3);
        let ended = |k: &Key| {
            let r = ended_by_change(k, &live, now);
            assert_eq!(r.ending.reason, EndReason::Revoked);
            assert_eq!(r.ending.at, now);
            assert_eq!(r.ending.by, EndedBy::Requester);
            (r.ending.cause, r.sessions)
        };
        let both = vec!["aaaaaaaa".to_string(), "bbbbbbbb".to_string()];
        let mut k = key(1, ConflictPolicy::Takeover);
        assert_eq!(
            ended(&k),
            (Some(Cause::SeatLimitLowered), vec!["bbbbbbbb".to_string()])
        );
        k.max_sessions = 2;
        assert_eq!(ended(&k), (Some(Cause::SeatLimitLowered), vec![]));
        k.expires_at = Some(now);
        assert_eq!(ended(&k), (Some(Cause::KeyExpired), both.clone()));
        k.status = KeyStatus::Suspended;
        assert_eq!(ended(&k), (Some(Cause::KeySuspended), both.clone()));
        k.status = KeyStatus::Revoked;
        assert_eq!(ended(&k), (Some(Cause::KeyRevoked), both));
    }
}
