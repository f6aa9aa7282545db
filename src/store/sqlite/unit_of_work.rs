//! [`UnitOfWork`]: what every operation reads and writes through. Not a
//! transaction (the caller opens and commits that) but a view and a change
//! log: reads of open sessions carry memory's exact leases, writes of
//! leases carry the slack that keeps the disk's lease an upper bound, and
//! what memory must learn is collected until the commit. So an operation
//! is written once and runs the same for the CLI (disk only) and the
//! server (disk and memory).

use rusqlite::{params, Connection, OptionalExtension};

use super::rows::{key_by_hash, open_session_rows, session_row};
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::keys::AccessKey;
use crate::model::{Actor, EndReason, EventType, Key, Session};
use crate::rules::{self, Ending, Revocation};
use crate::store::memory::{Change, Memory};

/// One unit of work on a connection. With `mem` (the server), the exact
/// heartbeat and lease of each open session come from memory, disk leases
/// get `slack` added (heartbeats reach the disk lazily, so the disk's lease
/// must stay an upper bound of the true one), and what changes is collected
/// in `memory_changes` for memory to apply after the commit.
pub(in crate::store) struct UnitOfWork<'a> {
    pub(in crate::store) conn: &'a Connection,
    pub(in crate::store) mem: Option<&'a Memory>,
    pub(in crate::store) slack_secs: u64,
    pub(in crate::store) timeout_secs: u64,
    pub(in crate::store) memory_changes: Vec<Change>,
}

impl<'a> UnitOfWork<'a> {
    /// Straight on the database (the CLI).
    pub(in crate::store) fn on_disk(conn: &'a Connection) -> Self {
        UnitOfWork {
            conn,
            mem: None,
            slack_secs: 0,
            timeout_secs: 0,
            memory_changes: Vec::new(),
        }
    }

    /// With the server's memory.
    pub(in crate::store) fn with_memory(
        conn: &'a Connection,
        mem: &'a Memory,
        slack_secs: u64,
        timeout_secs: u64,
    ) -> Self {
        UnitOfWork {
            conn,
            mem: Some(mem),
            slack_secs,
            timeout_secs,
            memory_changes: Vec::new(),
        }
    }

    /// The exact lease of an open session: memory's, unless a write
    /// earlier in this same batch (not yet applied to memory) extended it
    /// on disk, e.g. a start retry.
    pub(in crate::store) fn overlay(&self, mut s: Session) -> Session {
        if s.ended_at.is_none() {
            if let Some((hb, exp)) = self.mem.and_then(|m| m.lease_of(&s.session_id)) {
                let row_heartbeat = s.last_heartbeat;
                s.last_heartbeat = Timestamp(hb).max(row_heartbeat);
                s.expires_at = Timestamp(exp).max(row_heartbeat.plus_secs(self.timeout_secs));
            }
        }
        s
    }

    /// A session by id, with its exact lease.
    pub(in crate::store) fn session(&self, id: &str) -> Result<Option<Session>> {
        Ok(session_row(self.conn, id)?.map(|s| self.overlay(s)))
    }

    /// A key's sessions not recorded as ended, oldest fence first, with
    /// their exact leases.
    pub(in crate::store) fn open_sessions_of(&self, key_id: &str) -> Result<Vec<Session>> {
        Ok(open_session_rows(self.conn, key_id)?
            .into_iter()
            .map(|s| self.overlay(s))
            .collect())
    }

    /// The lease end written to disk for a lease ending at `exact`.
    pub(in crate::store) fn disk_lease(&self, exact: Timestamp) -> i64 {
        exact.plus_secs(self.slack_secs.saturating_mul(2)).0
    }

    /// Appends an event to the audit log.
    pub(in crate::store) fn record(&self, e: EventRecord<'_>) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO events (at, type, key_id, session_id, device_name, client_addr, detail) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                e.at.0,
                e.event_type.as_str(),
                e.key_id,
                e.session_id,
                e.device_name,
                e.actor.0,
                e.detail.map(|d| d.to_string()),
            ])?;
        Ok(())
    }

    /// Ends a session that is still open, records the event, returns the
    /// session as it is now. `at` is when it ended (for expiry, the moment
    /// its lease ran out, not the moment the sweep noticed).
    #[allow(clippy::too_many_arguments)]
    pub(in crate::store) fn end_open_session(
        &mut self,
        mut session: Session,
        reason: EndReason,
        at: Timestamp,
        superseded_by: Option<&str>,
        actor: &Actor,
        detail: Option<serde_json::Value>,
    ) -> Result<Session> {
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE sessions SET ended_at = ?2, end_reason = ?3, superseded_by = ?4, \
                 last_heartbeat = MAX(last_heartbeat, ?5) \
                 WHERE session_id = ?1 AND ended_at IS NULL",
            )?
            .execute(params![
                session.session_id,
                at.0,
                reason.as_str(),
                superseded_by,
                session.last_heartbeat.0,
            ])?;
        if changed == 1 {
            self.record(EventRecord {
                at,
                event_type: EventType::for_end(reason),
                key_id: Some(&session.key_id),
                session_id: Some(&session.session_id),
                device_name: session.device_name.as_deref(),
                actor,
                detail,
            })?;
            self.memory_changes.push(Change::Ended {
                id: session.session_id.clone(),
            });
        }
        session.ended_at = Some(at);
        session.end_reason = Some(reason);
        session.superseded_by = superseded_by.map(str::to_owned);
        Ok(session)
    }

    /// The `expires_at` of a key, if it has one.
    pub(in crate::store) fn key_expiry(&self, key_id: &str) -> Result<Option<Timestamp>> {
        Ok(self
            .conn
            .prepare_cached("SELECT expires_at FROM keys WHERE key_id = ?1")?
            .query_row([key_id], |r| r.get::<_, Option<i64>>(0))
            .optional()?
            .flatten()
            .map(Timestamp))
    }

    /// Records an ending the rules decided; `requester` is named when the
    /// ending is by the requester, the server otherwise.
    pub(in crate::store) fn apply_ending(
        &mut self,
        session: Session,
        ending: &Ending,
        requester: &Actor,
    ) -> Result<Session> {
        let (actor, detail) = crate::store::records::ending_record(ending, requester);
        self.end_open_session(session, ending.reason, ending.at, None, &actor, detail)
    }

    /// Records the sessions of `live` that a revocation names, in `live`'s
    /// order.
    pub(in crate::store) fn apply_revocation(
        &mut self,
        live: Vec<Session>,
        revocation: &Revocation,
        requester: &Actor,
    ) -> Result<Vec<Session>> {
        live.into_iter()
            .filter(|s| revocation.sessions.contains(&s.session_id))
            .map(|s| self.apply_ending(s, &revocation.ending, requester))
            .collect()
    }

    /// Records how a session that is no longer live ended on its own, as
    /// [`rules::ending_of_dead_session`] says.
    pub(in crate::store) fn record_dead_session(&mut self, session: Session) -> Result<Session> {
        let key_expires_at = self.key_expiry(&session.key_id)?;
        let ending = rules::ending_of_dead_session(&session, key_expires_at);
        self.apply_ending(session, &ending, &Actor::server())
    }

    /// Open sessions of a key split into (dead ones, now recorded as
    /// ended; live ones).
    pub(in crate::store) fn settle_open_sessions(
        &mut self,
        key_id: &str,
        now: Timestamp,
    ) -> Result<(Vec<Session>, Vec<Session>)> {
        let (live, dead): (Vec<_>, Vec<_>) = self
            .open_sessions_of(key_id)?
            .into_iter()
            .partition(|s| s.is_live_at(now));
        let expired = dead
            .into_iter()
            .map(|s| self.record_dead_session(s))
            .collect::<Result<Vec<_>>>()?;
        Ok((expired, live))
    }

    /// The contract's error for a session that is not live (see
    /// [`rules::not_live_error`]).
    pub(in crate::store) fn explain_not_live(&self, session: &Session, now: Timestamp) -> Error {
        rules::not_live_error(session, now, |id| session_row(self.conn, id).ok().flatten())
    }

    /// Sets one of the server's own marks (`LAST_ALIVE`, ...).
    pub(in crate::store) fn set_server_state(&self, name: &str, value: i64) -> Result<()> {
        self.conn.execute(
            "INSERT INTO server_state (name, value) VALUES (?1, ?2) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            params![name, value],
        )?;
        Ok(())
    }

    /// One of the server's own marks, if set.
    pub(in crate::store) fn server_state(&self, name: &str) -> Result<Option<i64>> {
        Ok(self
            .conn
            .query_row(
                "SELECT value FROM server_state WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The key behind an access key, checked like on every session endpoint.
    pub(in crate::store) fn usable_key(&self, key: &AccessKey, now: Timestamp) -> Result<Key> {
        let found = key_by_hash(self.conn, &key.hash(), now)?.ok_or(Error::InvalidKey)?;
        rules::check_key(&found, now)?;
        Ok(found)
    }
}

/// One audit log line, as [`UnitOfWork::record`] writes it.
pub(in crate::store) struct EventRecord<'a> {
    pub(in crate::store) at: Timestamp,
    pub(in crate::store) event_type: EventType,
    pub(in crate::store) key_id: Option<&'a str>,
    pub(in crate::store) session_id: Option<&'a str>,
    pub(in crate::store) device_name: Option<&'a str>,
    pub(in crate::store) actor: &'a Actor,
    pub(in crate::store) detail: Option<serde_json::Value>,
}

/// When the server was last known up (restart recovery counts from it).
pub(in crate::store) const LAST_ALIVE: &str = "last_alive";
/// The earliest lease end of every open session on disk (see `EFFECTIVE_EXPIRY`).
pub(in crate::store) const LEASE_FLOOR: &str = "lease_floor";
/// Timeout plus slack: how far the disk's heartbeat time implies a lease.
pub(in crate::store) const LEASE_SPAN: &str = "lease_span";
