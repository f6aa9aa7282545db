//! The server's upkeep on the disk: recording expiries, the sweep, restart
//! recovery, heartbeat times written lazily, lease floors after a gap.
//! Each is bounded per call (chunks, batches), so no single write holds
//! the writer, and the starts queued behind it, for long.

use rusqlite::params;

use super::rows::{session_columns, session_from_row, EFFECTIVE_EXPIRY};
use super::unit_of_work::{UnitOfWork, LAST_ALIVE, LEASE_FLOOR, LEASE_SPAN};
use crate::clock::Timestamp;
use crate::error::Result;
use crate::model::{Actor, Session};
use crate::rules::{self, Timing};
use crate::store::{ResumeReport, SweepReport};

/// Records sessions that memory found expired: `(id, lease end seen)`.
/// Each is checked again here, since a start retry may have extended it
/// between the sweep's look and this write; one still live at `now` is
/// left alone.
pub(in crate::store) fn record_expired(
    work: &mut UnitOfWork<'_>,
    due: &[(String, i64)],
    now: Timestamp,
) -> Result<Vec<Session>> {
    let mut out = Vec::with_capacity(due.len());
    for (id, _seen_end) in due {
        if let Some(s) = work.session(id)? {
            if s.ended_at.is_none() && !s.is_live_at(now) {
                out.push(work.record_dead_session(s)?);
            }
        }
    }
    Ok(out)
}

/// Rows deleted per statement when pruning, so no single write holds the
/// writer for long.
const PRUNE_CHUNK: i64 = 2_000;

/// What one [`end_expired_keys_and_prune`] did.
pub(in crate::store) struct SweepStep {
    /// Sessions of keys past their expiry, now revoked.
    pub revoked: Vec<Session>,
    /// Ended sessions deleted.
    pub pruned_sessions: usize,
    /// Events deleted.
    pub pruned_events: usize,
    /// Whether a chunk was full, so more history may be left to prune.
    pub more: bool,
}

impl SweepStep {
    /// Adds this step to a sweep's report; true while more is left to do.
    pub(in crate::store) fn add_to(self, report: &mut SweepReport) -> bool {
        report.revoked.extend(self.revoked);
        report.pruned_sessions += self.pruned_sessions;
        report.pruned_events += self.pruned_events;
        self.more
    }
}

/// The rest of a sweep, after the expiries: ends the open sessions of keys
/// whose expiry passed, prunes (a chunk of) history older than
/// `history_days`, notes the server alive.
pub(in crate::store) fn end_expired_keys_and_prune(
    work: &mut UnitOfWork<'_>,
    now: Timestamp,
    history_days: u32,
    mark_alive: bool,
) -> Result<SweepStep> {
    let sql = format!(
        "SELECT {} FROM sessions s JOIN keys k ON k.key_id = s.key_id \
         WHERE s.ended_at IS NULL AND k.expires_at IS NOT NULL AND k.expires_at <= ?1 \
         AND k.status != 'revoked'",
        session_columns()
    );
    let of_expired_keys = work
        .conn
        .prepare_cached(&sql)?
        .query_map([now.0], session_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let of_expired_keys: Vec<Session> = of_expired_keys
        .into_iter()
        .map(|s| work.overlay(s))
        .collect();
    // The SQL finds the sessions of keys past their expiry; how they end
    // is the rules' (as when a request notices it first).
    let ending = rules::key_expiry_ending(now);
    let revoked = of_expired_keys
        .into_iter()
        .map(|s| work.apply_ending(s, &ending, &Actor::server()))
        .collect::<Result<Vec<_>>>()?;

    let cutoff = now.minus_secs(u64::from(history_days) * 86_400);
    let pruned_events = work
        .conn
        .prepare_cached(
            "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE at < ?1 LIMIT ?2)",
        )?
        .execute(params![cutoff.0, PRUNE_CHUNK])?;
    let pruned_sessions = work
        .conn
        .prepare_cached(
            "DELETE FROM sessions WHERE rowid IN (SELECT rowid FROM sessions \
         WHERE ended_at IS NOT NULL AND ended_at < ?1 LIMIT ?2)",
        )?
        .execute(params![cutoff.0, PRUNE_CHUNK])?;
    if mark_alive {
        work.set_server_state(LAST_ALIVE, now.0)?;
    }
    let more = pruned_events as i64 == PRUNE_CHUNK || pruned_sessions as i64 == PRUNE_CHUNK;
    Ok(SweepStep {
        revoked,
        pruned_sessions,
        pruned_events,
        more,
    })
}

/// A whole sweep on the database alone (the CLI's `keyseat sweep`).
pub(in crate::store) fn sweep(
    work: &mut UnitOfWork<'_>,
    now: Timestamp,
    history_days: u32,
    mark_alive: bool,
) -> Result<SweepReport> {
    let sql = format!(
        "SELECT {} FROM sessions s JOIN keys k ON k.key_id = s.key_id \
         WHERE s.ended_at IS NULL AND {EFFECTIVE_EXPIRY} <= ?1",
        session_columns()
    );
    let due = work
        .conn
        .prepare(&sql)?
        .query_map([now.0], session_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let expired = due
        .into_iter()
        .map(|s| work.record_dead_session(s))
        .collect::<Result<Vec<_>>>()?;
    let mut report = SweepReport {
        expired,
        ..Default::default()
    };
    while end_expired_keys_and_prune(work, now, history_days, mark_alive)?.add_to(&mut report) {}
    Ok(report)
}

/// Start-up recovery: records sessions that expired while the server was
/// still up, and gives every other open session a lease floor of one full
/// timeout from `ready_at` (one row in `server_state`, not a rewrite of
/// every session).
pub(in crate::store) fn resume(
    work: &mut UnitOfWork<'_>,
    ready_at: Timestamp,
    timing: Timing,
) -> Result<ResumeReport> {
    // A clean stop swept everything that had expired; after a crash, the
    // few sessions that expired since the last sweep are resumed too:
    // generous, never early.
    let resumed: i64 = work.conn.query_row(
        "SELECT COUNT(*) FROM sessions WHERE ended_at IS NULL",
        [],
        |r| r.get(0),
    )?;
    let floor = rules::lease_after_restart(Timestamp(i64::MIN), ready_at, timing);
    // Not the later of this floor and the last run's: a floor (or a lease,
    // or a heartbeat) later than this one was written while the wall clock
    // was ahead of today's, and must not hold a seat past one timeout from
    // readiness.
    work.set_server_state(LEASE_FLOOR, floor.0)?;
    work.conn.execute(
        // Only sessions whose heartbeat is later than now: the on-disk
        // lease of every other session is at most its heartbeat plus the
        // span, which the floor's rule already bounds. A borrow keeps its
        // end.
        "UPDATE sessions SET expires_at = MIN(expires_at, MAX(?1, IFNULL(borrowed_until, 0))), \
         last_heartbeat = ?2 WHERE ended_at IS NULL AND last_heartbeat > ?2",
        params![floor.0, ready_at.0],
    )?;
    // Twice the persistence interval: a flush that fails or runs late
    // must not make the disk's lease fall behind the true one.
    let span = Timestamp(0)
        .plus_secs(timing.session_timeout_secs)
        .plus_secs(work.slack_secs.saturating_mul(2));
    let old_span = work.server_state(LEASE_SPAN)?.unwrap_or(0);
    work.set_server_state(LEASE_SPAN, span.0.max(old_span))?;
    work.set_server_state(LAST_ALIVE, ready_at.0)?;
    Ok(ResumeReport {
        resumed: resumed as usize,
    })
}

/// Writes heartbeat times to disk: `(session id, heartbeat)`. Only
/// `last_heartbeat` changes (no index to update); the lease it implies is
/// derived on read (see `EFFECTIVE_EXPIRY`).
pub(in crate::store) fn flush_heartbeats(
    work: &mut UnitOfWork<'_>,
    beats: &[(String, i64)],
) -> Result<usize> {
    let mut stmt = work.conn.prepare_cached(
        "UPDATE sessions SET last_heartbeat = MAX(last_heartbeat, ?2) \
         WHERE session_id = ?1 AND ended_at IS NULL",
    )?;
    let mut n = 0;
    for (id, at) in beats {
        n += stmt.execute(params![id, at])?;
    }
    Ok(n)
}

/// After a gap in the server's progress: every open session's lease on
/// disk ends no earlier than `floor` (memory holds the exact leases).
pub(in crate::store) fn raise_lease_floor(
    work: &mut UnitOfWork<'_>,
    floor: Timestamp,
) -> Result<()> {
    let old = work.server_state(LEASE_FLOOR)?.unwrap_or(i64::MIN);
    work.set_server_state(LEASE_FLOOR, floor.0.max(old))
}

/// Notes that the server was up at `now` (restart recovery counts from it).
pub(in crate::store) fn mark_alive(work: &UnitOfWork<'_>, now: Timestamp) -> Result<()> {
    work.set_server_state(LAST_ALIVE, now.0)
}
