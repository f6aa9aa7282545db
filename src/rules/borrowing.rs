//! Borrowing (docs/api.md, "Borrowing (offline use)"): a device takes its
//! seat offline for some hours, with a signed lease token it checks
//! without the network. Why it is off by default: a borrowed seat cannot
//! be taken back from the device. An admin can end the session, but the
//! token still verifies offline until it runs out.
//!
//! A borrow is a start (or, with the id of the device's live session, a
//! change to it) whose lease runs to `borrowed_until`; [`plan_start`]
//! never supersedes a borrowed session, so with every seat borrowed a
//! start is `seats_full` whatever the policy.
//!
//! [`plan_start`]: super::plan_start

use super::check_key;
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::model::Key;

/// The longest borrow any key may allow: a year.
pub const MAX_BORROW_HOURS: u32 = 8760;

/// Until when a borrow of `key` for `hours` at `now` holds its seat, or
/// why it may not: the key's own problems first (as for a start), then
/// borrowing off (403 `borrow_not_allowed`), then too many hours (400).
/// Never past the key's own expiry: a token must not outlive its key.
pub fn borrow_until(key: &Key, hours: u32, now: Timestamp) -> Result<Timestamp> {
    check_key(key, now)?;
    if key.max_borrow_hours == 0 {
        return Err(Error::BorrowNotAllowed);
    }
    if hours == 0 || hours > key.max_borrow_hours {
        return Err(Error::InvalidRequest(format!(
            "hours must be between 1 and this key's max_borrow_hours ({}), not {hours}",
            key.max_borrow_hours
        )));
    }
    let until = now.plus_secs(u64::from(hours) * 3600);
    Ok(key.expires_at.map_or(until, |at| until.min(at)))
}

/// The borrow a session ends up with when it is borrowed again (a retry,
/// or a longer borrow): the later of the two. `asked` comes from
/// [`borrow_until`], so what a re-borrow *adds* is capped by the key's
/// expiry as it is now (it may have been moved earlier since); what a
/// token already handed out promises is never shortened (the device holds
/// that token offline whatever the server records, and the key's expiry
/// ends the session when it comes).
pub fn borrow_extended(current: Option<Timestamp>, asked: Timestamp) -> Timestamp {
    current.map_or(asked, |c| c.max(asked))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{key, T0};
    use super::*;
    use crate::model::{ConflictPolicy, KeyStatus};

    fn borrowing_key(max_hours: u32) -> Key {
        let mut k = key(1, ConflictPolicy::Takeover);
        k.max_borrow_hours = max_hours;
        k
    }

    /// A key that allows borrowing holds the seat for the hours asked.
    #[test]
    fn a_borrow_runs_for_the_hours_asked() {
        let until = borrow_until(&borrowing_key(72), 24, T0).unwrap();
        assert_eq!(until, T0.plus_secs(24 * 3600));
        assert_eq!(
            borrow_until(&borrowing_key(72), 72, T0).unwrap(),
            T0.plus_secs(72 * 3600)
        );
    }

    /// Borrowing off (the default) is 403, whatever the hours.
    #[test]
    fn borrowing_off_is_not_allowed() {
        assert!(matches!(
            borrow_until(&borrowing_key(0), 1, T0),
            Err(Error::BorrowNotAllowed)
        ));
    }

    /// More hours than the key allows, or none, is a bad request naming
    /// the limit.
    #[test]
    fn hours_over_the_key_limit_are_refused() {
        for hours in [0, 25, MAX_BORROW_HOURS] {
            match borrow_until(&borrowing_key(24), hours, T0) {
                Err(Error::InvalidRequest(m)) => {
                    assert!(m.contains("max_borrow_hours (24)"), "{m}")
                }
                other => panic!("{hours} h: {other:?}"),
            }
        }
    }

    /// The key's own state comes first: a revoked key is revoked.
    #[test]
    fn a_revoked_key_cannot_borrow() {
        let mut k = borrowing_key(24);
        k.status = KeyStatus::Revoked;
        assert!(matches!(borrow_until(&k, 1, T0), Err(Error::KeyRevoked)));
    }

    /// A borrow never runs past the key's expiry.
    #[test]
    fn a_borrow_ends_with_the_key() {
        let mut k = borrowing_key(48);
        k.expires_at = Some(T0.plus_secs(3600));
        assert_eq!(borrow_until(&k, 48, T0).unwrap(), T0.plus_secs(3600));
    }

    /// Borrowing again keeps the later end.
    #[test]
    fn borrowing_again_never_shortens() {
        let (a, b) = (T0.plus_secs(10), T0.plus_secs(20));
        assert_eq!(borrow_extended(Some(b), a), b);
        assert_eq!(borrow_extended(Some(a), b), b);
        assert_eq!(borrow_extended(None, a), a);
    }

    /// A key whose expiry moved earlier caps what a re-borrow adds, never
    /// what was handed out already (found by the model-based test: the
    /// server answered a retry with an end before the one it had given).
    #[test]
    fn a_key_expiry_moved_earlier_caps_the_extension_not_the_borrow() {
        let mut k = borrowing_key(48);
        let given = borrow_until(&k, 24, T0).unwrap();
        k.expires_at = Some(T0.plus_secs(60));
        let asked = borrow_until(&k, 48, T0.plus_secs(10)).unwrap();
        assert_eq!(asked, T0.plus_secs(60));
        assert_eq!(borrow_extended(Some(given), asked), given);
        // Without a borrow before, the key's expiry is the end.
        assert_eq!(borrow_extended(None, asked), T0.plus_secs(60));
    }
}
