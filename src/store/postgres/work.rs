//! [`Work`]: what every PostgreSQL operation reads and writes through,
//! as `store/sqlite/unit_of_work.rs` is for SQLite: the transaction, the
//! lease time it decides at, and the writes every operation shares
//! (the audit log, ending a session, applying what the rules decided).
//!
//! There is no memory to overlay: every server reads the same rows, and
//! each lease on disk is exact.

use deadpool_postgres::Transaction;

use super::rows::{self, session_row, DB_NOW};
use super::TimeSource;
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::keys::AccessKey;
use crate::model::{Actor, EndReason, EventType, Key, Session};
use crate::rules::{self, Ending, Revocation};

/// One operation's transaction and the time it decides at.
pub(super) struct Work<'a> {
    pub(super) tx: &'a Transaction<'a>,
    /// The lease time every rule is asked at.
    pub(super) now: Timestamp,
}

/// The time an operation decides at: the database's clock (read after
/// the operation's locks are held, so a wait for another server's lock
/// never makes a decision stale), or the caller's in tests that drive
/// time by hand.
pub(super) async fn lease_time(
    tx: &Transaction<'_>,
    source: TimeSource,
    given: Timestamp,
) -> Result<Timestamp> {
    match source {
        TimeSource::Caller => Ok(given),
        TimeSource::Database => {
            let stmt = tx.prepare_cached(&format!("SELECT {DB_NOW}")).await?;
            Ok(Timestamp(tx.query_one(&stmt, &[]).await?.get(0)))
        }
    }
}

/// One audit log line.
pub(super) struct EventRecord<'a> {
    pub(super) event_type: EventType,
    pub(super) key_id: Option<&'a str>,
    pub(super) session_id: Option<&'a str>,
    pub(super) device_name: Option<&'a str>,
    pub(super) actor: &'a Actor,
    pub(super) detail: Option<serde_json::Value>,
}

impl<'a> Work<'a> {
    /// Appends an event to the audit log at `at`.
    pub(super) async fn record_at(&self, at: Timestamp, e: EventRecord<'_>) -> Result<()> {
        let stmt = self
            .tx
            .prepare_cached(
                "INSERT INTO events (at, type, key_id, session_id, device_name, client_addr, detail) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .await?;
        let detail = e.detail.map(|d| d.to_string());
        self.tx
            .execute(
                &stmt,
                &[
                    &at.0,
                    &e.event_type.as_str(),
                    &e.key_id,
                    &e.session_id,
                    &e.device_name,
                    &e.actor.0,
                    &detail,
                ],
            )
            .await?;
        Ok(())
    }

    /// Appends an event to the audit log now.
    pub(super) async fn record(&self, e: EventRecord<'_>) -> Result<()> {
        self.record_at(self.now, e).await
    }

    /// A session by id.
    pub(super) async fn session(&self, id: &str) -> Result<Option<Session>> {
        session_row(self.tx, id, self.now).await
    }

    /// The key behind an access key, checked like on every session call.
    pub(super) async fn usable_key(&self, key: &AccessKey) -> Result<Key> {
        let found = rows::key_by_hash(self.tx, &key.hash(), self.now, false)
            .await?
            .ok_or(Error::InvalidKey)?;
        rules::check_key(&found, self.now)?;
        Ok(found)
    }

    /// The `expires_at` of a key, if it has one.
    pub(super) async fn key_expiry(&self, key_id: &str) -> Result<Option<Timestamp>> {
        let stmt = self
            .tx
            .prepare_cached("SELECT expires_at FROM keys WHERE key_id = $1")
            .await?;
        Ok(self
            .tx
            .query_opt(&stmt, &[&key_id])
            .await?
            .and_then(|r| r.get::<_, Option<i64>>(0))
            .map(Timestamp))
    }

    /// Ends a session that is still open and records the event; the
    /// `ended_at IS NULL` guard makes the record happen once, whichever
    /// server gets there first.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn end_open_session(
        &self,
        mut session: Session,
        reason: EndReason,
        at: Timestamp,
        superseded_by: Option<&str>,
        actor: &Actor,
        detail: Option<serde_json::Value>,
    ) -> Result<Session> {
        let stmt = self
            .tx
            .prepare_cached(
                "UPDATE sessions SET ended_at = $2, end_reason = $3, superseded_by = $4 \
                 WHERE session_id = $1 AND ended_at IS NULL",
            )
            .await?;
        let changed = self
            .tx
            .execute(
                &stmt,
                &[&session.session_id, &at.0, &reason.as_str(), &superseded_by],
            )
            .await?;
        if changed == 1 {
            self.record_at(
                at,
                EventRecord {
                    event_type: EventType::for_end(reason),
                    key_id: Some(&session.key_id),
                    session_id: Some(&session.session_id),
                    device_name: session.device_name.as_deref(),
                    actor,
                    detail,
                },
            )
            .await?;
        }
        session.ended_at = Some(at);
        session.end_reason = Some(reason);
        session.superseded_by = superseded_by.map(str::to_owned);
        Ok(session)
    }

    /// Records an ending the rules decided.
    pub(super) async fn apply_ending(
        &self,
        session: Session,
        ending: &Ending,
        requester: &Actor,
    ) -> Result<Session> {
        let (actor, detail) = crate::store::records::ending_record(ending, requester);
        self.end_open_session(session, ending.reason, ending.at, None, &actor, detail)
            .await
    }

    /// Records the sessions of `live` that a revocation names.
    pub(super) async fn apply_revocation(
        &self,
        live: Vec<Session>,
        revocation: &Revocation,
        requester: &Actor,
    ) -> Result<Vec<Session>> {
        let mut out = Vec::new();
        for s in live {
            if revocation.sessions.contains(&s.session_id) {
                out.push(self.apply_ending(s, &revocation.ending, requester).await?);
            }
        }
        Ok(out)
    }

    /// Records how a session that is no longer live ended on its own.
    pub(super) async fn record_dead_session(&self, session: Session) -> Result<Session> {
        let key_expires_at = self.key_expiry(&session.key_id).await?;
        let ending = rules::ending_of_dead_session(&session, key_expires_at);
        self.apply_ending(session, &ending, &Actor::server()).await
    }

    /// A key's open sessions, locked, split into (dead ones, now recorded
    /// as ended; live ones). The caller holds the key's lock.
    pub(super) async fn settle_open_sessions(
        &self,
        key_id: &str,
    ) -> Result<(Vec<Session>, Vec<Session>)> {
        let (live, dead): (Vec<_>, Vec<_>) = rows::lock_open_sessions(self.tx, key_id, self.now)
            .await?
            .into_iter()
            .partition(|s| s.is_live_at(self.now));
        let mut expired = Vec::with_capacity(dead.len());
        for s in dead {
            expired.push(self.record_dead_session(s).await?);
        }
        Ok((expired, live))
    }

    /// The contract's error for a session that is not live.
    pub(super) async fn explain_not_live(&self, session: &Session) -> Result<Error> {
        let successor = match &session.superseded_by {
            Some(id) => self.session(id).await?,
            None => None,
        };
        Ok(rules::not_live_error(session, self.now, |id| {
            successor.clone().filter(|s| s.session_id == id)
        }))
    }
}
