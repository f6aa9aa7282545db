//! Upkeep on PostgreSQL, which every server runs: the sweep, history
//! pruning, the alive marks and the lease floor after an outage.
//!
//! The sweep may run on every server at once. It finds candidates with a
//! plain read, then settles each key in its own short transaction under
//! the key's lock, exactly as a start would; the `ended_at IS NULL` guard
//! of the write makes each dead session recorded once, whichever server
//! gets there first. Pruning deletes rows nobody reads as live, so two
//! servers pruning at once only share the work.

use deadpool_postgres::Transaction;

use super::rows::{self, effective_expiry, DB_NOW, OUTAGE_MS};
use super::work::Work;
use crate::clock::Timestamp;
use crate::error::Result;
use crate::model::{Actor, Session};
use crate::rules;

/// Rows looked at or deleted per statement, so no statement runs long.
pub(super) const CHUNK: i64 = 2_000;

/// Keys with open sessions whose lease ran out by `now`.
pub(super) async fn keys_with_dead_sessions(
    tx: &Transaction<'_>,
    now: Timestamp,
) -> Result<Vec<String>> {
    let sql = format!(
        "SELECT DISTINCT s.key_id FROM sessions s \
         WHERE s.ended_at IS NULL AND {} <= $1 LIMIT {CHUNK}",
        effective_expiry()
    );
    Ok(tx
        .query(&sql, &[&now.0])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Keys past their own expiry that still have open sessions.
pub(super) async fn expired_keys_with_sessions(
    tx: &Transaction<'_>,
    now: Timestamp,
) -> Result<Vec<String>> {
    Ok(tx
        .query(
            "SELECT DISTINCT s.key_id FROM sessions s JOIN keys k ON k.key_id = s.key_id \
             WHERE s.ended_at IS NULL AND k.expires_at IS NOT NULL AND k.expires_at <= $1 \
             AND k.status <> 'revoked' LIMIT 2000",
            &[&now.0],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// One key's part of a sweep, under its lock: dead sessions recorded as
/// they ended; if the key is past its expiry, its live ones revoked.
/// Returns (expired, revoked).
pub(super) async fn settle_key(
    work: &Work<'_>,
    key_id: &str,
) -> Result<(Vec<Session>, Vec<Session>)> {
    let Some(key) = rows::key_by_id(work.tx, key_id, work.now, true).await? else {
        return Ok((Vec::new(), Vec::new()));
    };
    let (expired, live) = work.settle_open_sessions(key_id).await?;
    let revoked = if key.is_expired_at(work.now) && key.status != crate::model::KeyStatus::Revoked {
        let ending = rules::key_expiry_ending(work.now);
        let mut out = Vec::with_capacity(live.len());
        for s in live {
            out.push(work.apply_ending(s, &ending, &Actor::server()).await?);
        }
        out
    } else {
        Vec::new()
    };
    Ok((expired, revoked))
}

/// Deletes a chunk of history older than `cutoff`: (sessions, events).
pub(super) async fn prune(tx: &Transaction<'_>, cutoff: Timestamp) -> Result<(u64, u64)> {
    let events = tx
        .execute(
            "DELETE FROM events WHERE id IN \
             (SELECT id FROM events WHERE at < $1 ORDER BY id LIMIT $2)",
            &[&cutoff.0, &CHUNK],
        )
        .await?;
    let sessions = tx
        .execute(
            "DELETE FROM sessions WHERE session_id IN (SELECT session_id FROM sessions \
             WHERE ended_at IS NOT NULL AND ended_at < $1 LIMIT $2)",
            &[&cutoff.0, &CHUNK],
        )
        .await?;
    Ok((sessions, events))
}

/// Marks this server alive by the database's clock. If the service was
/// out ([`rows::service_out`]: the database was away, or every server
/// was), every open session first gets a lease floor of one
/// timeout from `lease_now` (the restart rule). Returns whether it did.
pub(super) async fn mark_alive(
    tx: &Transaction<'_>,
    instance: &str,
    lease_now: Timestamp,
    timeout_secs: u64,
) -> Result<bool> {
    let out: bool = tx
        .query_one(&format!("SELECT {}", rows::service_out()), &[])
        .await?
        .get(0);
    if out {
        raise_floor(tx, lease_now, timeout_secs).await?;
    }
    tx.execute(
        &format!(
            "INSERT INTO server_marks (instance_id, alive_at) VALUES ($1, {DB_NOW}) \
             ON CONFLICT (instance_id) DO UPDATE SET alive_at = EXCLUDED.alive_at"
        ),
        &[&instance],
    )
    .await?;
    Ok(out)
}

fn timing(timeout_secs: u64) -> rules::Timing {
    rules::Timing {
        session_timeout_secs: timeout_secs,
        ..rules::Timing::default()
    }
}

/// Other servers' marks from the last [`OUTAGE_MS`]: (instance, alive at).
pub(super) async fn recent_marks(
    tx: &Transaction<'_>,
    instance: &str,
) -> Result<Vec<(String, i64)>> {
    Ok(tx
        .query(
            &format!(
                "SELECT instance_id, alive_at FROM server_marks \
                 WHERE instance_id <> $1 AND alive_at >= {DB_NOW} - {OUTAGE_MS}"
            ),
            &[&instance],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// Raises every open session's lease floor to one timeout from `lease_now`.
pub(super) async fn raise_floor(
    tx: &Transaction<'_>,
    lease_now: Timestamp,
    timeout_secs: u64,
) -> Result<()> {
    let floor = rules::lease_after_restart(Timestamp(i64::MIN), lease_now, timing(timeout_secs));
    tx.execute(
        "UPDATE server_state SET value = GREATEST(value, $1) WHERE name = 'lease_floor'",
        &[&floor.0],
    )
    .await?;
    Ok(())
}

/// Forgets this server's mark (a clean stop), and marks older than a day.
pub(super) async fn forget_mark(tx: &Transaction<'_>, instance: &str) -> Result<()> {
    tx.execute(
        &format!(
            "DELETE FROM server_marks WHERE instance_id = $1 OR alive_at < {DB_NOW} - 86400000"
        ),
        &[&instance],
    )
    .await?;
    Ok(())
}

/// Open sessions, for the start-up report.
pub(super) async fn count_open(tx: &Transaction<'_>) -> Result<u64> {
    let n: i64 = tx
        .query_one("SELECT COUNT(*) FROM sessions WHERE ended_at IS NULL", &[])
        .await?
        .get(0);
    Ok(u64::try_from(n).unwrap_or(0))
}
