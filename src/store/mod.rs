//! The storage boundary. Everything above this module (HTTP, CLI, sweep)
//! talks to a [`Storage`]; only the engines know SQL: `sqlite/` (one
//! server on a file, the default; the server wraps it in [`LiveStore`])
//! and `postgres/` (any number of servers on one database), chosen by the
//! `database` setting.
//!
//! Storage never decides policy: each write loads its inputs, asks
//! [`crate::rules`] what to do, and applies the answer in one transaction,
//! so a second engine calls the same rules rather than copying them.
//! All methods are blocking; async callers go through [`blocking`].

mod file_guard;
mod key_ref;
mod live;
mod memory;
mod postgres;
mod records;
mod sqlite;
mod writer;

pub use live::{LiveOptions, LiveStore};
pub use memory::Beat;
pub use postgres::{PostgresOptions, PostgresStore, TimeSource};
pub use sqlite::{Durability, OpenMode, SqliteStore};

/// The PostgreSQL engine's heartbeat statement (`$1` key hash, `$2`
/// session id, `$3` timeout in ms, `$4` the caller's time or NULL), for
/// the benchmark's pgbench script: not an API.
#[doc(hidden)]
pub fn postgres_heartbeat_sql() -> String {
    postgres::heartbeat_sql()
}

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::keys::AccessKey;
pub use crate::metrics::StateReading;
use crate::model::{Actor, ConflictPolicy, EndReason, Event, EventType, Key, KeyStatus, Session};
use crate::rules::Timing;
use crate::signing::KeyRecord;

/// Called with the id of every session that ends, once the end is visible
/// to a lookup (it wakes held heartbeats: [`crate::held`]); `None` when
/// any session may have ended unheard (a notification channel was lost).
pub type EndListener = std::sync::Arc<dyn Fn(Option<&str>) + Send + Sync>;

/// A boxed future that owns what it needs.
pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

/// A device asking for a seat.
#[derive(Debug, Clone)]
pub struct StartRequest {
    /// The checksum-verified key.
    pub key: AccessKey,
    /// The client's own session id, if it chose one (for idempotent retries).
    pub session_id: Option<String>,
    /// Self-reported device name.
    pub device_name: Option<String>,
    /// Self-reported stable device fingerprint.
    pub fingerprint: Option<String>,
    /// Who sent it.
    pub actor: Actor,
    /// A borrow for this many hours (docs/api.md, "Borrowing"): the seat is
    /// held without heartbeats and never superseded. `None`: a start.
    pub borrow_hours: Option<u32>,
}

/// The result of a successful start.
#[derive(Debug, Clone)]
pub struct StartOutcome {
    /// The session now holding a seat.
    pub session: Session,
    /// True when this was a retry of a start whose session is still live.
    pub resumed: bool,
    /// Sessions this start superseded.
    pub terminated: Vec<Session>,
    /// Sessions found dead (lease ran out) and recorded as expired.
    pub expired: Vec<Session>,
}

/// The result of ending a session.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum EndOutcome {
    /// It was live and is now ended.
    Ended(Box<Session>),
    /// It had already ended, for this reason.
    AlreadyEnded(EndReason),
}

/// Fields of a new key; `None` takes the default.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    /// Operator's note.
    pub label: Option<String>,
    /// Seat limit (default 1).
    pub max_sessions: Option<u32>,
    /// Conflict policy (default takeover).
    pub on_conflict: Option<ConflictPolicy>,
    /// Expiry, if any.
    pub expires_at: Option<Timestamp>,
    /// Longest borrow for offline use (default 0: off).
    pub max_borrow_hours: Option<u32>,
}

/// A new key with its secret, which is never available again.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    /// The stored key.
    pub key: Key,
    /// The secret.
    pub access_key: AccessKey,
}

/// Changes to a key. Outer `None` leaves a field alone; for nullable fields
/// `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct KeyPatch {
    /// New label.
    pub label: Option<Option<String>>,
    /// New seat limit; live sessions beyond it end (reason `revoked`).
    pub max_sessions: Option<u32>,
    /// New conflict policy.
    pub on_conflict: Option<ConflictPolicy>,
    /// New expiry.
    pub expires_at: Option<Option<Timestamp>>,
    /// `Active` or `Suspended` (revocation has its own call).
    pub status: Option<KeyStatus>,
    /// New longest borrow; sessions already borrowed keep their borrow.
    pub max_borrow_hours: Option<u32>,
}

impl KeyPatch {
    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.label.is_none()
            && self.max_sessions.is_none()
            && self.on_conflict.is_none()
            && self.expires_at.is_none()
            && self.status.is_none()
            && self.max_borrow_hours.is_none()
    }
}

/// A key change and the sessions it ended.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct KeyChange {
    /// The key after the change.
    pub key: Key,
    /// Live sessions ended by it (reason `revoked`).
    pub ended: Vec<Session>,
}

/// One page of keys.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct KeyPage {
    /// Keys in creation order.
    pub keys: Vec<Key>,
    /// Pass as `after` to get the next page; `None` on the last page.
    pub next_after: Option<String>,
}

/// One page of a key search.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct KeySearch {
    /// The matching keys of the page, in creation order.
    pub keys: Vec<Key>,
    /// Keys matching in all.
    pub matched: u64,
    /// Keys in all.
    pub total: u64,
}

/// Which events to list.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only this key (id).
    pub key_id: Option<String>,
    /// Only this type.
    pub event_type: Option<EventType>,
    /// Only at or after this time.
    pub since: Option<Timestamp>,
    /// Only with an id below this (paging, newest first).
    pub before_id: Option<i64>,
    /// At most this many.
    pub limit: u32,
}

/// What one sweep pass did.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SweepReport {
    /// Sessions whose lease ran out, now recorded as expired.
    pub expired: Vec<Session>,
    /// Live sessions of keys whose own expiry passed, now revoked.
    pub revoked: Vec<Session>,
    /// Ended sessions deleted for being older than the history window.
    pub pruned_sessions: usize,
    /// Events deleted for being older than the history window.
    pub pruned_events: usize,
}

/// What start-up recovery did.
#[derive(Debug, Clone, Default)]
pub struct ResumeReport {
    /// Sessions live at the stop, each given a full timeout from readiness.
    pub resumed: usize,
}

/// Everything keyseat keeps. Implementations must make every write
/// atomic and must serialise starts per key, so that concurrent starts can
/// never leave more live sessions than seats.
pub trait Storage: Send + Sync + 'static {
    /// A cheap read that proves the database answers.
    fn check_health(&self) -> Result<()>;

    /// Starts (or resumes) a session. Errors: key problems,
    /// `session_id_taken`, `seats_full` (recorded as `start_rejected`).
    fn start_session(
        &self,
        req: &StartRequest,
        now: Timestamp,
        timing: Timing,
    ) -> Result<StartOutcome>;

    /// A heartbeat answered at once, without blocking (from memory), when
    /// the store can; `None` means "call [`Storage::heartbeat`]".
    fn heartbeat_fast(&self, _key: &AccessKey, _session_id: &str) -> Option<Result<Beat>> {
        None
    }

    /// A heartbeat as a future on the caller's runtime, for an engine whose
    /// driver is asynchronous (PostgreSQL): no blocking thread is held
    /// while the database answers. `None` means "call
    /// [`Storage::heartbeat`] on the blocking pool".
    fn heartbeat_async(
        &self,
        _key: &AccessKey,
        _session_id: &str,
        _now: Timestamp,
        _timing: Timing,
    ) -> Option<BoxFuture<Result<Session>>> {
        None
    }

    /// Tells `listener` of every session that ends from now on, whoever
    /// ended it (this process, another on the same file, another server on
    /// the same database). Engines that cannot say call nothing; held
    /// heartbeats then simply run their time.
    fn on_session_end(&self, _listener: EndListener) {}

    /// Background upkeep, called about twice a second by the server:
    /// persisting heartbeat times, noticing other processes' writes,
    /// checkpointing.
    fn maintain(&self) -> Result<()> {
        Ok(())
    }

    /// Extends a live session's lease, or says precisely why it is over.
    fn heartbeat(
        &self,
        key: &AccessKey,
        session_id: &str,
        now: Timestamp,
        timing: Timing,
    ) -> Result<Session>;

    /// Ends a session at its client's request.
    fn end_session(
        &self,
        key: &AccessKey,
        session_id: &str,
        now: Timestamp,
        actor: &Actor,
    ) -> Result<EndOutcome>;

    /// The key and its live sessions (checks the key like every session call).
    fn key_status(&self, key: &AccessKey, now: Timestamp) -> Result<(Key, Vec<Session>)>;

    /// Creates a key with a fresh secret.
    fn create_key(&self, new: &NewKey, now: Timestamp, actor: &Actor) -> Result<CreatedKey>;

    /// Keys in creation order, `limit` at a time, after the given key id.
    fn list_keys(&self, limit: u32, after: Option<&str>, now: Timestamp) -> Result<KeyPage>;

    /// Keys whose label contains `query`, whose display prefix (with or
    /// without `ks_`) or key id starts with it (case-insensitive; empty
    /// matches all), `limit` from the `offset`-th match on.
    fn search_keys(
        &self,
        query: &str,
        limit: u32,
        offset: u64,
        now: Timestamp,
    ) -> Result<KeySearch>;

    /// One key, by key id or display prefix (`ks_xxxxxxxx` or `xxxxxxxx`).
    fn get_key(&self, key_ref: &str, now: Timestamp) -> Result<Key>;

    /// Applies a patch; suspending, expiring or lowering the seat limit ends
    /// the live sessions that no longer fit (reason `revoked`).
    fn update_key(
        &self,
        key_ref: &str,
        patch: &KeyPatch,
        now: Timestamp,
        actor: &Actor,
    ) -> Result<KeyChange>;

    /// Revokes a key for good and ends its live sessions. Idempotent.
    fn revoke_key(&self, key_ref: &str, now: Timestamp, actor: &Actor) -> Result<KeyChange>;

    /// Live sessions, most recent heartbeat first, optionally of one key.
    fn live_sessions(&self, key_ref: Option<&str>, now: Timestamp) -> Result<Vec<Session>>;

    /// Ends a session as an admin (reason `revoked`).
    fn kick_session(&self, session_id: &str, now: Timestamp, actor: &Actor) -> Result<EndOutcome>;

    /// The audit log, newest first.
    fn events(&self, filter: &EventFilter) -> Result<Vec<Event>>;

    /// Live sessions and keys by status, for the metrics gauges.
    fn metrics_reading(&self, now: Timestamp) -> Result<StateReading>;

    /// Events of the session types counted per bucket of `bucket_secs`
    /// from `since` (the dashboard's overview chart).
    fn event_counts(
        &self,
        since: Timestamp,
        bucket_secs: u64,
    ) -> Result<Vec<crate::report::EventCount>>;

    /// What the sharing report reads: sessions active since `since`, per
    /// key and device, and the takeovers since then.
    fn sharing_input(&self, since: Timestamp) -> Result<crate::report::SharingInput>;

    /// The sharing report for the last `since_secs` before `now` (the CLI
    /// and the dashboard both ask for it): this store's input, analysed by
    /// [`crate::report::sharing`].
    fn sharing_report(
        &self,
        now: Timestamp,
        since_secs: u64,
        ping_pong_secs: u64,
    ) -> Result<crate::report::SharingReport> {
        let since = now.minus_secs(since_secs);
        let input = self.sharing_input(since)?;
        Ok(crate::report::sharing(
            &input,
            crate::report::SharingOptions {
                since,
                until: now,
                ping_pong_secs,
            },
        ))
    }

    /// Records expired sessions, ends sessions of expired keys, prunes
    /// history older than `history_days`; with `mark_alive`, notes that the
    /// server was up at `now` (for restart recovery).
    fn sweep(&self, now: Timestamp, history_days: u32, mark_alive: bool) -> Result<SweepReport>;

    /// Start-up recovery: sessions live when the server last stopped get a
    /// full timeout from `ready_at`.
    fn resume_after_restart(&self, ready_at: Timestamp, timing: Timing) -> Result<ResumeReport>;

    /// Notes a clean stop at `now` and flushes the write-ahead log.
    fn mark_stopped(&self, now: Timestamp) -> Result<()>;

    /// The stored signing keys (docs/api.md, "Signed answers"), oldest
    /// first.
    fn signing_keys(&self) -> Result<Vec<KeyRecord>>;

    /// Stores a first signing key, made at `now`, unless a current one
    /// exists (servers starting at once agree on one); returns them all.
    fn ensure_signing_key(&self, now: Timestamp) -> Result<Vec<KeyRecord>>;

    /// Makes a new current signing key: the current one is retired at
    /// `now` (still listed for the overlap), keys retired before
    /// `forget_before` are deleted. Returns the new key's public half.
    fn rotate_signing_key(&self, now: Timestamp, forget_before: Timestamp) -> Result<KeyRecord>;
}

/// Runs blocking storage work on tokio's blocking pool, never on an async
/// worker, and re-raises a panic from it in the caller (where the HTTP
/// layer's panic guard turns it into a 500).
pub async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(join) => Err(Error::Internal(format!("storage task cancelled: {join}"))),
    }
}
