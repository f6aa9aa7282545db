//! The operations on one session on PostgreSQL: start, heartbeat, end,
//! kick, and the reads of live sessions. Each loads its inputs under the
//! locks that make it exact across servers, asks [`crate::rules`], and
//! applies the answer, as `store/sqlite/sessions.rs` does on one file.
//!
//! The locks: a start (like every change to a key's seats) locks the key's
//! row, then its open sessions' rows, and only then reads the time it
//! decides at. A heartbeat is one `UPDATE` of one session row, so it waits
//! for a start or an end holding that row and then sees what it decided:
//! no heartbeat succeeds on a session once its end is committed, and no
//! start decides on a lease a heartbeat is still extending.

use deadpool_postgres::Transaction;

use super::rows::{self, effective_expiry, effective_expiry_at, session_from_row, DB_NOW};
use super::work::{EventRecord, Work};
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::keys::AccessKey;
use crate::model::{Actor, EndReason, EventType, Key, Session};
use crate::rules::{self, EndPlan, StartDecision, Timing};
use crate::store::{records, EndOutcome, StartOutcome, StartRequest};

/// Starts (or resumes) a session; `Ok(Err(..))` is a refusal to answer
/// after committing (a rejected start is recorded). `now` is the lease
/// time when the caller's clock decides, else read after the key's lock.
pub(super) async fn start(
    tx: &Transaction<'_>,
    source: super::TimeSource,
    req: &StartRequest,
    given: Timestamp,
    timing: Timing,
) -> Result<Result<StartOutcome>> {
    let Some(key) = rows::key_by_hash(tx, &req.key.hash(), given, true).await? else {
        return Ok(Err(Error::InvalidKey));
    };
    let now = super::work::lease_time(tx, source, given).await?;
    let work = Work { tx, now };
    let asked_borrow = match req.borrow_hours.map(|h| rules::borrow_until(&key, h, now)) {
        Some(Err(refusal)) => return Ok(Err(refusal)),
        Some(Ok(until)) => Some(until),
        None => None,
    };
    // The key's open sessions first, locked: the requested session is read
    // after, so an end or a kick of it that committed meanwhile is seen
    // (they lock the session's row, which is now ours to hold).
    let open = rows::lock_open_sessions(tx, &key.key_id, now).await?;
    let requested = match &req.session_id {
        Some(id) => match open.iter().find(|s| &s.session_id == id) {
            Some(locked) => Some(locked.clone()),
            None => work.session(id).await?,
        },
        None => None,
    };
    let plan = match rules::plan_start(
        &key,
        requested.as_ref(),
        &open,
        req.fingerprint.as_deref(),
        now,
    ) {
        Ok(plan) => plan,
        Err(refusal @ Error::SeatsFull { .. }) => {
            work.record(EventRecord {
                event_type: EventType::StartRejected,
                key_id: Some(&key.key_id),
                session_id: req.session_id.as_deref(),
                device_name: req.device_name.as_deref(),
                actor: &req.actor,
                detail: Some(records::rejected_detail()),
            })
            .await?;
            return Ok(Err(refusal));
        }
        Err(refusal) => return Ok(Err(refusal)),
    };

    let mut by_id: std::collections::HashMap<String, Session> = open
        .into_iter()
        .map(|s| (s.session_id.clone(), s))
        .collect();
    let mut expired = Vec::with_capacity(plan.expire.len());
    for id in &plan.expire {
        if let Some(s) = by_id.remove(id) {
            expired.push(work.record_dead_session(s).await?);
        }
    }
    let lease = timing.lease_until(now);

    match plan.decision {
        StartDecision::Resume { session_id } => {
            let borrowed = asked_borrow.map(|until| {
                let current = requested.as_ref().and_then(|r| r.borrowed_until);
                rules::borrow_extended(current, until)
            });
            let lease = borrowed.map_or(lease, |until| lease.max(until));
            extend(tx, &session_id, now, lease, borrowed).await?;
            let mut session = work
                .session(&session_id)
                .await?
                .ok_or_else(|| Error::Internal("resumed session vanished".into()))?;
            session.last_heartbeat = now;
            if let Some(until) = borrowed {
                record_borrow(&work, &req.actor, &session, until, req.borrow_hours).await?;
            }
            Ok(Ok(StartOutcome {
                session,
                resumed: true,
                terminated: vec![],
                expired,
            }))
        }
        StartDecision::Admit { supersede } => {
            let lease = asked_borrow.map_or(lease, |until| lease.max(until));
            let session_id = req
                .session_id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            let stmt = tx
                .prepare_cached(
                    "UPDATE keys SET next_fence = next_fence + 1 WHERE key_id = $1 \
                     RETURNING next_fence - 1",
                )
                .await?;
            let fence: i64 = tx.query_one(&stmt, &[&key.key_id]).await?.get(0);
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO sessions (session_id, key_id, fence, device_name, fingerprint, \
                     client_addr, started_at, last_heartbeat, expires_at, borrowed_until) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9)",
                )
                .await?;
            tx.execute(
                &stmt,
                &[
                    &session_id,
                    &key.key_id,
                    &fence,
                    &req.device_name,
                    &req.fingerprint,
                    &req.actor.0,
                    &now.0,
                    &lease.0,
                    &asked_borrow.map(|t| t.0),
                ],
            )
            .await?;
            let mut terminated = Vec::with_capacity(supersede.len());
            for victim_id in &supersede {
                let Some(victim) = by_id.remove(victim_id) else {
                    continue;
                };
                terminated.push(
                    work.end_open_session(
                        victim,
                        EndReason::Superseded,
                        now,
                        Some(&session_id),
                        &req.actor,
                        Some(records::superseded_detail(
                            &session_id,
                            req.device_name.as_deref(),
                        )),
                    )
                    .await?,
                );
            }
            work.record(EventRecord {
                event_type: EventType::SessionStarted,
                key_id: Some(&key.key_id),
                session_id: Some(&session_id),
                device_name: req.device_name.as_deref(),
                actor: &req.actor,
                detail: Some(records::started_detail(fence, &supersede)),
            })
            .await?;
            let session =
                records::admitted_session(req, &key, session_id, fence, now, lease, asked_borrow);
            if let Some(until) = asked_borrow {
                record_borrow(&work, &req.actor, &session, until, req.borrow_hours).await?;
            }
            Ok(Ok(StartOutcome {
                session,
                resumed: false,
                terminated,
                expired,
            }))
        }
    }
}

/// Moves a session's heartbeat to `now`, its lease to at least `lease`
/// and, for a borrow, its borrow to `borrowed`.
async fn extend(
    tx: &Transaction<'_>,
    id: &str,
    now: Timestamp,
    lease: Timestamp,
    borrowed: Option<Timestamp>,
) -> Result<()> {
    let stmt = tx
        .prepare_cached(
            "UPDATE sessions SET last_heartbeat = $2, expires_at = GREATEST(expires_at, $3), \
             borrowed_until = COALESCE($4, borrowed_until) \
             WHERE session_id = $1 AND ended_at IS NULL",
        )
        .await?;
    let touched = tx
        .execute(&stmt, &[&id, &now.0, &lease.0, &borrowed.map(|t| t.0)])
        .await?;
    if touched == 0 {
        // Locked above, so it cannot have ended: a bug, not a race.
        return Err(Error::Internal("a resumed session was not open".into()));
    }
    Ok(())
}

/// Records `session_borrowed` for a session borrowed until `until`.
async fn record_borrow(
    work: &Work<'_>,
    actor: &Actor,
    session: &Session,
    until: Timestamp,
    hours: Option<u32>,
) -> Result<()> {
    work.record(EventRecord {
        event_type: EventType::SessionBorrowed,
        key_id: Some(&session.key_id),
        session_id: Some(&session.session_id),
        device_name: session.device_name.as_deref(),
        actor,
        detail: Some(records::borrowed_detail(
            session.fence,
            until,
            hours.unwrap_or(0),
        )),
    })
    .await
}

/// The heartbeat's one statement: extends the lease of a live session of
/// a usable key and returns it, or touches nothing (then [`explain`] says
/// why). `$4` is the caller's lease time, or NULL for the database's.
pub(super) fn heartbeat_sql() -> String {
    format!(
        "UPDATE sessions s SET last_heartbeat = t.now, expires_at = GREATEST(s.expires_at, t.now + $3) \
         FROM keys k, (SELECT COALESCE($4::BIGINT, {DB_NOW}) AS now) t \
         WHERE s.session_id = $2 AND k.key_id = s.key_id AND k.key_hash = $1 \
           AND k.status = 'active' AND (k.expires_at IS NULL OR k.expires_at > t.now) \
           AND s.ended_at IS NULL AND {live} > t.now \
         RETURNING s.session_id, s.key_id, k.prefix, s.fence, s.device_name, \
           s.fingerprint, s.client_addr, s.started_at, s.last_heartbeat, {live}, \
           s.ended_at, s.end_reason, s.superseded_by, s.borrowed_until",
        live = effective_expiry_at("t.now")
    )
}

/// A heartbeat's answer from the row [`heartbeat_sql`] returned.
pub(super) fn beat_from_row(row: &tokio_postgres::Row) -> Session {
    session_from_row(row)
}

/// Why a heartbeat touched nothing: the key's problem, an unknown
/// session, or how the session ended (recording an end not yet recorded
/// is left to the sweep and the next start, as on SQLite).
pub(super) async fn explain(work: &Work<'_>, key: &AccessKey, session_id: &str) -> Result<Session> {
    let key = work.usable_key(key).await?;
    let session = work
        .session(session_id)
        .await?
        .filter(|s| s.key_id == key.key_id)
        .ok_or(Error::SessionNotFound)?;
    if session.is_live_at(work.now) {
        Ok(session)
    } else {
        Err(work.explain_not_live(&session).await?)
    }
}

/// Ends a session at its client's request.
pub(super) async fn end(
    work: &Work<'_>,
    key: &AccessKey,
    session_id: &str,
    actor: &Actor,
) -> Result<EndOutcome> {
    let key = work.usable_key(key).await?;
    let session = rows::lock_session(work.tx, session_id, work.now)
        .await?
        .filter(|s| s.key_id == key.key_id)
        .ok_or(Error::SessionNotFound)?;
    end_if_live(work, session, EndReason::Ended, actor).await
}

/// Ends a session at an operator's request.
pub(super) async fn kick(work: &Work<'_>, session_id: &str, actor: &Actor) -> Result<EndOutcome> {
    let session = rows::lock_session(work.tx, session_id, work.now)
        .await?
        .ok_or_else(|| Error::AdminSessionNotFound(crate::keys::redact_secret(session_id)))?;
    end_if_live(work, session, EndReason::Revoked, actor).await
}

/// Ends a session for `reason` if it is live; otherwise says how it ended,
/// recording an end not yet recorded (as [`rules::plan_end`] decides).
async fn end_if_live(
    work: &Work<'_>,
    session: Session,
    reason: EndReason,
    actor: &Actor,
) -> Result<EndOutcome> {
    let key_expires_at = work.key_expiry(&session.key_id).await?;
    Ok(
        match rules::plan_end(&session, key_expires_at, reason, work.now) {
            EndPlan::End(ending) => {
                EndOutcome::Ended(Box::new(work.apply_ending(session, &ending, actor).await?))
            }
            EndPlan::AlreadyOver(ending) => {
                work.apply_ending(session, &ending, actor).await?;
                EndOutcome::AlreadyEnded(ending.reason)
            }
            EndPlan::AlreadyEnded(reason) => EndOutcome::AlreadyEnded(reason),
        },
    )
}

/// A key and its live sessions, for the device that holds the key.
pub(super) async fn key_status(work: &Work<'_>, key: &AccessKey) -> Result<(Key, Vec<Session>)> {
    let mut key = work.usable_key(key).await?;
    let mut live = rows::sessions_where(
        work.tx,
        "s.key_id = $2 AND s.ended_at IS NULL ORDER BY s.fence",
        work.now,
        &[&key.key_id],
    )
    .await?;
    live.retain(|s| s.is_live_at(work.now));
    key.live_sessions = live.len() as u32;
    Ok((key, live))
}

/// Live sessions of usable keys (optionally one key), most recent
/// heartbeat first.
pub(super) async fn live(work: &Work<'_>, key_ref: Option<&str>) -> Result<Vec<Session>> {
    let key_id = match key_ref {
        Some(r) => Some(rows::resolve_key(work.tx, r, work.now).await?.key_id),
        None => None,
    };
    let filter = format!(
        "s.ended_at IS NULL AND {} > $1 \
         AND k.status = 'active' AND (k.expires_at IS NULL OR k.expires_at > $1) \
         AND ($2::TEXT IS NULL OR s.key_id = $2)",
        effective_expiry()
    );
    let mut rows = rows::sessions_where(work.tx, &filter, work.now, &[&key_id]).await?;
    rows.retain(|s| s.is_live_at(work.now));
    rows.sort_by(|a, b| {
        b.last_heartbeat
            .cmp(&a.last_heartbeat)
            .then_with(|| a.session_id.cmp(&b.session_id))
    });
    Ok(rows)
}
