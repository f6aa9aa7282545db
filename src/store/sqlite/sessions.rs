//! The operations on one session: start, heartbeat, end, kick, and the
//! reads a device or an operator makes of live sessions. Each loads its
//! inputs through the [`UnitOfWork`], asks [`crate::rules`], and applies
//! the answer.

use rusqlite::{named_params, params};

use super::rows::{key_by_hash, resolve_key, session_columns, session_from_row, EFFECTIVE_EXPIRY};
use super::unit_of_work::{EventRecord, UnitOfWork};
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::keys::key_tag;
use crate::keys::AccessKey;
use crate::model::{Actor, EndReason, EventType, Key, Session};
use crate::rules::{self, EndPlan, StartDecision, Timing};
use crate::store::memory::{Change, LiveSession, NEVER};
use crate::store::{records, EndOutcome, StartOutcome, StartRequest};

/// Starts (or resumes) a session. The outer error aborts the transaction;
/// the inner one is a refusal to answer after committing (a rejected start
/// is recorded).
pub(in crate::store) fn start(
    work: &mut UnitOfWork<'_>,
    req: &StartRequest,
    now: Timestamp,
    timing: Timing,
) -> Result<Result<StartOutcome>> {
    let key = key_by_hash(work.conn, &req.key.hash(), now)?.ok_or(Error::InvalidKey);
    let key = match key {
        Ok(k) => k,
        Err(e) => return Ok(Err(e)),
    };
    let asked_borrow = match req.borrow_hours.map(|h| rules::borrow_until(&key, h, now)) {
        Some(Err(refusal)) => return Ok(Err(refusal)),
        Some(Ok(until)) => Some(until),
        None => None,
    };
    let requested = match &req.session_id {
        Some(id) => work.session(id)?,
        None => None,
    };
    let open = work.open_sessions_of(&key.key_id)?;
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
                at: now,
                event_type: EventType::StartRejected,
                key_id: Some(&key.key_id),
                session_id: req.session_id.as_deref(),
                device_name: req.device_name.as_deref(),
                actor: &req.actor,
                detail: Some(records::rejected_detail()),
            })?;
            return Ok(Err(refusal));
        }
        Err(refusal) => return Ok(Err(refusal)),
    };

    let mut by_id: std::collections::HashMap<String, Session> = open
        .into_iter()
        .map(|s| (s.session_id.clone(), s))
        .collect();
    let expired = plan
        .expire
        .iter()
        .filter_map(|id| by_id.remove(id))
        .map(|s| work.record_dead_session(s))
        .collect::<Result<Vec<_>>>()?;
    let lease = timing.lease_until(now);

    match plan.decision {
        StartDecision::Resume { session_id } => {
            let borrowed = asked_borrow.map(|until| {
                let current = requested.as_ref().and_then(|r| r.borrowed_until);
                rules::borrow_extended(current, until)
            });
            let lease = borrowed.map_or(lease, |until| lease.max(until));
            work.conn.execute(
                "UPDATE sessions SET last_heartbeat = ?2, expires_at = MAX(expires_at, ?3), \
                 borrowed_until = IFNULL(?4, borrowed_until) WHERE session_id = ?1",
                params![
                    session_id,
                    now.0,
                    work.disk_lease(lease),
                    borrowed.map(|t| t.0)
                ],
            )?;
            work.memory_changes.push(Change::Extended {
                id: session_id.clone(),
                at: now.0,
                expires_at: lease.0,
                borrowed_until: borrowed.map(|t| t.0),
            });
            let mut session = work
                .session(&session_id)?
                .ok_or_else(|| Error::Internal("resumed session vanished".into()))?;
            session.last_heartbeat = now;
            // With memory, the overlay already gives the exact lease (this
            // write's, or a later one memory holds); on the disk alone the
            // row's effective lease carries slack, so answer the exact one.
            if work.mem.is_none() || borrowed.is_some() {
                session.expires_at = session.expires_at.max(lease);
            }
            if let Some(until) = borrowed {
                record_borrow(work, &req.actor, &session, until, req.borrow_hours, now)?;
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
            let fence: i64 = work
                .conn
                .prepare_cached(
                    "UPDATE keys SET next_fence = next_fence + 1 WHERE key_id = ?1 \
                     RETURNING next_fence - 1",
                )?
                .query_row([&key.key_id], |r| r.get(0))?;
            work.conn
                .prepare_cached(
                    "INSERT INTO sessions (session_id, key_id, fence, device_name, fingerprint, \
                 client_addr, started_at, last_heartbeat, expires_at, borrowed_until) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9)",
                )?
                .execute(params![
                    session_id,
                    key.key_id,
                    fence,
                    req.device_name,
                    req.fingerprint,
                    req.actor.0,
                    now.0,
                    work.disk_lease(lease),
                    asked_borrow.map(|t| t.0)
                ])?;
            let mut terminated = Vec::with_capacity(supersede.len());
            for victim_id in &supersede {
                let Some(victim) = by_id.remove(victim_id) else {
                    continue;
                };
                terminated.push(work.end_open_session(
                    victim,
                    EndReason::Superseded,
                    now,
                    Some(&session_id),
                    &req.actor,
                    Some(records::superseded_detail(
                        &session_id,
                        req.device_name.as_deref(),
                    )),
                )?);
            }
            work.record(EventRecord {
                at: now,
                event_type: EventType::SessionStarted,
                key_id: Some(&key.key_id),
                session_id: Some(&session_id),
                device_name: req.device_name.as_deref(),
                actor: &req.actor,
                detail: Some(records::started_detail(fence, &supersede)),
            })?;
            work.memory_changes.push(Change::Started {
                id: session_id.clone(),
                session: LiveSession {
                    key_tag: key_tag(&req.key.hash()),
                    key_expires_at: key.expires_at.map_or(NEVER, |t| t.0),
                    fence,
                    last_heartbeat: now.0,
                    expires_at: lease.0,
                    borrowed_until: asked_borrow.map_or(0, |t| t.0),
                    dirty: false,
                },
            });
            let session =
                records::admitted_session(req, &key, session_id, fence, now, lease, asked_borrow);
            if let Some(until) = asked_borrow {
                record_borrow(work, &req.actor, &session, until, req.borrow_hours, now)?;
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

/// Records `session_borrowed` for a session borrowed until `until`.
fn record_borrow(
    work: &UnitOfWork<'_>,
    actor: &Actor,
    session: &Session,
    until: Timestamp,
    hours: Option<u32>,
    now: Timestamp,
) -> Result<()> {
    work.record(EventRecord {
        at: now,
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
}

/// A heartbeat on the database alone (the CLI's store; the server answers
/// heartbeats from memory).
pub(in crate::store) fn heartbeat(
    work: &mut UnitOfWork<'_>,
    key: &AccessKey,
    session_id: &str,
    now: Timestamp,
    timing: Timing,
) -> Result<Session> {
    let key = work.usable_key(key, now)?;
    let lease = timing.lease_until(now);
    let session = work
        .session(session_id)?
        .filter(|s| s.key_id == key.key_id)
        .ok_or(Error::SessionNotFound)?;
    if !session.is_live_at(now) {
        return Err(work.explain_not_live(&session, now));
    }
    work.conn.execute(
        "UPDATE sessions SET last_heartbeat = ?2, expires_at = MAX(expires_at, ?3) \
         WHERE session_id = ?1",
        params![session_id, now.0, work.disk_lease(lease)],
    )?;
    Ok(Session {
        last_heartbeat: now,
        expires_at: lease,
        ..session
    })
}

/// Explains why a session is not live for this key (or that it is).
pub(in crate::store) fn explain(
    work: &UnitOfWork<'_>,
    key: &AccessKey,
    session_id: &str,
    now: Timestamp,
) -> Result<Session> {
    let key = work.usable_key(key, now)?;
    let session = work
        .session(session_id)?
        .filter(|s| s.key_id == key.key_id)
        .ok_or(Error::SessionNotFound)?;
    if session.is_live_at(now) {
        Ok(session)
    } else {
        Err(work.explain_not_live(&session, now))
    }
}

/// Ends a session at its client's request.
pub(in crate::store) fn end(
    work: &mut UnitOfWork<'_>,
    key: &AccessKey,
    session_id: &str,
    now: Timestamp,
    actor: &Actor,
) -> Result<EndOutcome> {
    let key = work.usable_key(key, now)?;
    let session = work
        .session(session_id)?
        .filter(|s| s.key_id == key.key_id)
        .ok_or(Error::SessionNotFound)?;
    end_if_live(work, session, EndReason::Ended, now, actor)
}

/// A key and its live sessions, for the device that holds the key.
pub(in crate::store) fn key_status(
    work: &UnitOfWork<'_>,
    key: &AccessKey,
    now: Timestamp,
) -> Result<(Key, Vec<Session>)> {
    let mut key = work.usable_key(key, now)?;
    let mut live = work.open_sessions_of(&key.key_id)?;
    live.retain(|s| s.is_live_at(now));
    key.live_sessions = live.len() as u32;
    Ok((key, live))
}

/// Live sessions of usable keys (optionally one key), most recent
/// heartbeat first.
pub(in crate::store) fn live(
    work: &UnitOfWork<'_>,
    key_ref: Option<&str>,
    now: Timestamp,
) -> Result<Vec<Session>> {
    let key_id = match key_ref {
        Some(r) => Some(resolve_key(work.conn, r, now)?.key_id),
        None => None,
    };
    let sql = format!(
        "SELECT {} FROM sessions s JOIN keys k ON k.key_id = s.key_id \
         WHERE s.ended_at IS NULL AND {EFFECTIVE_EXPIRY} > :now \
         AND k.status = 'active' AND (k.expires_at IS NULL OR k.expires_at > :now) \
         AND (:key IS NULL OR s.key_id = :key)",
        session_columns()
    );
    let mut stmt = work.conn.prepare(&sql)?;
    let mut rows: Vec<Session> = stmt
        .query_map(
            named_params! {":now": now.0, ":key": key_id},
            session_from_row,
        )?
        .map(|r| r.map(|s| work.overlay(s)))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.retain(|s| s.is_live_at(now));
    rows.sort_by(|a, b| {
        b.last_heartbeat
            .cmp(&a.last_heartbeat)
            .then_with(|| a.session_id.cmp(&b.session_id))
    });
    Ok(rows)
}

/// Ends a session at an operator's request.
pub(in crate::store) fn kick(
    work: &mut UnitOfWork<'_>,
    session_id: &str,
    now: Timestamp,
    actor: &Actor,
) -> Result<EndOutcome> {
    let session = work
        .session(session_id)?
        .ok_or_else(|| Error::AdminSessionNotFound(crate::keys::redact_secret(session_id)))?;
    end_if_live(work, session, EndReason::Revoked, now, actor)
}

/// Ends a session for `reason` if it is live; otherwise says how it ended,
/// recording an end not yet recorded (as [`rules::plan_end`] decides).
fn end_if_live(
    work: &mut UnitOfWork<'_>,
    session: Session,
    reason: EndReason,
    now: Timestamp,
    actor: &Actor,
) -> Result<EndOutcome> {
    let key_expires_at = work.key_expiry(&session.key_id)?;
    Ok(
        match rules::plan_end(&session, key_expires_at, reason, now) {
            EndPlan::End(ending) => {
                EndOutcome::Ended(Box::new(work.apply_ending(session, &ending, actor)?))
            }
            EndPlan::AlreadyOver(ending) => {
                work.apply_ending(session, &ending, actor)?;
                EndOutcome::AlreadyEnded(ending.reason)
            }
            EndPlan::AlreadyEnded(reason) => EndOutcome::AlreadyEnded(reason),
        },
    )
}
