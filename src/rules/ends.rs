//! Ends: how a session ends when its client or an operator asks, and how
//! a session that is over is explained. The reasons and causes are the
//! audit log's and the contract's words, so they are chosen here once and
//! every path (end, kick, key change, sweep, start) records the same ones.

use crate::clock::Timestamp;
use crate::error::Error;
use crate::model::{EndReason, Session};

/// Why a session was revoked: the `cause` the audit log records with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// An operator ended it.
    Kicked,
    /// Its key's expiry passed.
    KeyExpired,
    /// Its key was suspended.
    KeySuspended,
    /// Its key was revoked.
    KeyRevoked,
    /// Its key's seat limit dropped below the seats in use.
    SeatLimitLowered,
}

impl Cause {
    /// The word in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Kicked => "kicked",
            Cause::KeyExpired => "key_expired",
            Cause::KeySuspended => "key_suspended",
            Cause::KeyRevoked => "key_revoked",
            Cause::SeatLimitLowered => "seat_limit_lowered",
        }
    }
}

/// Whom the audit log names as having ended a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedBy {
    /// Whoever sent the request (the device, the operator).
    Requester,
    /// The server itself: the session ended on its own (a lease ran out, a
    /// key's expiry passed) and a request merely noticed.
    Server,
}

/// How one session ends: what the store records for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    /// The end reason.
    pub reason: EndReason,
    /// When it ended (for a lease that ran out, the lease's end, not the
    /// moment it was noticed).
    pub at: Timestamp,
    /// Why, for the audit log (revocations only).
    pub cause: Option<Cause>,
    /// Who ended it.
    pub by: EndedBy,
}

/// What a request to end a session does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndPlan {
    /// It is live: end it so (answer "ended").
    End(Ending),
    /// It is over but not yet recorded: record how it ended on its own,
    /// then answer "already ended" with that reason.
    AlreadyOver(Ending),
    /// It is recorded as ended, for this reason.
    AlreadyEnded(EndReason),
}

/// Decides an end (`reason` `ended`, by its client) or a kick (`revoked`,
/// by an operator) of `session`, whose key expires at `key_expires_at`.
/// A session of a key past its expiry ended then, recorded or not: it is
/// over, not live.
pub fn plan_end(
    session: &Session,
    key_expires_at: Option<Timestamp>,
    reason: EndReason,
    now: Timestamp,
) -> EndPlan {
    let key_expired = key_expires_at.is_some_and(|k| k <= now);
    if session.is_live_at(now) && !key_expired {
        return EndPlan::End(Ending {
            reason,
            at: now,
            cause: (reason == EndReason::Revoked).then_some(Cause::Kicked),
            by: EndedBy::Requester,
        });
    }
    if session.ended_at.is_none() {
        return EndPlan::AlreadyOver(if session.is_live_at(now) {
            key_expiry_ending(now)
        } else {
            ending_of_dead_session(session, key_expires_at)
        });
    }
    EndPlan::AlreadyEnded(session.end_reason.unwrap_or(EndReason::Expired))
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

/// The contract's error for a session that is not live: who superseded it
/// (looked up by `superseder`, only when it was superseded), or why it is
/// over.
pub fn not_live_error(
    session: &Session,
    now: Timestamp,
    superseder: impl FnOnce(&str) -> Option<Session>,
) -> Error {
    match end_reason_at(session, now) {
        Some(EndReason::Superseded) => {
            let by = session.superseded_by.as_deref().and_then(superseder);
            Error::SessionSuperseded {
                device_name: by.as_ref().and_then(|s| s.device_name.clone()),
                started_at: by.map(|s| s.started_at).or(session.ended_at).unwrap_or(now),
            }
        }
        Some(reason) => Error::SessionOver(reason),
        None => Error::Internal("session is live but was explained as ended".into()),
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

    /// A live session ends for the asked reason, by the requester; a kick
    /// records the cause `kicked`.
    #[test]
    fn a_live_session_ends_as_asked() {
        let s = session("aaaaaaaa", 1, T0, None);
        let now = T0.plus_secs(5);
        assert_eq!(
            plan_end(&s, None, EndReason::Ended, now),
            EndPlan::End(Ending {
                reason: EndReason::Ended,
                at: now,
                cause: None,
                by: EndedBy::Requester,
            })
        );
        assert_eq!(
            plan_end(&s, Some(now.plus_secs(1)), EndReason::Revoked, now),
            EndPlan::End(Ending {
                reason: EndReason::Revoked,
                at: now,
                cause: Some(Cause::Kicked),
                by: EndedBy::Requester,
            })
        );
    }

    /// A session whose lease ran out, or whose key expired, is already
    /// over: the end records how, by the server, and answers "already".
    #[test]
    fn an_unrecorded_end_is_recorded_not_repeated() {
        let s = session("aaaaaaaa", 1, T0, None);
        // Lease ran out at 60 s.
        assert_eq!(
            plan_end(&s, None, EndReason::Ended, T0.plus_secs(61)),
            EndPlan::AlreadyOver(Ending {
                reason: EndReason::Expired,
                at: T0.plus_secs(60),
                cause: None,
                by: EndedBy::Server,
            })
        );
        // Key expired at 10 s while the lease ran: revoked, noticed now.
        let now = T0.plus_secs(20);
        assert_eq!(
            plan_end(&s, Some(T0.plus_secs(10)), EndReason::Revoked, now),
            EndPlan::AlreadyOver(Ending {
                reason: EndReason::Revoked,
                at: now,
                cause: Some(Cause::KeyExpired),
                by: EndedBy::Server,
            })
        );
    }

    /// A recorded end is answered with its reason, and nothing is written.
    #[test]
    fn a_recorded_end_is_reported() {
        let mut s = session("aaaaaaaa", 1, T0, None);
        s.ended_at = Some(T0.plus_secs(1));
        s.end_reason = Some(EndReason::Superseded);
        assert_eq!(
            plan_end(&s, None, EndReason::Ended, T0.plus_secs(2)),
            EndPlan::AlreadyEnded(EndReason::Superseded)
        );
    }

    /// A superseded session names the device that took its seat and when;
    /// any other is over for its reason.
    #[test]
    fn not_live_errors_say_who_or_why() {
        let mut s = session("aaaaaaaa", 1, T0, None);
        s.ended_at = Some(T0.plus_secs(3));
        s.end_reason = Some(EndReason::Superseded);
        s.superseded_by = Some("bbbbbbbb".into());
        let mut by = session("bbbbbbbb", 2, T0.plus_secs(3), None);
        by.started_at = T0.plus_secs(3);
        let err = not_live_error(&s, T0.plus_secs(4), |id| {
            assert_eq!(id, "bbbbbbbb");
            Some(by.clone())
        });
        assert!(matches!(
            err,
            Error::SessionSuperseded { device_name: Some(ref d), started_at }
                if d == "device-bbbbbbbb" && started_at == T0.plus_secs(3)
        ));
        // The superseder is gone (pruned): the end time stands in.
        let err = not_live_error(&s, T0.plus_secs(4), |_| None);
        assert!(matches!(
            err,
            Error::SessionSuperseded { device_name: None, started_at } if started_at == T0.plus_secs(3)
        ));
        let dead = session("cccccccc", 3, T0, None);
        let err = not_live_error(&dead, T0.plus_secs(60), |_| panic!("not superseded"));
        assert!(matches!(err, Error::SessionOver(EndReason::Expired)));
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
