//! PostgreSQL behind the [`Storage`] boundary: any number of keyseat
//! servers (and the CLI) on one database, each answering as if it were
//! the only one.
//!
//! Why it is exact across servers (docs/high-availability.md says more):
//!
//! - **One clock.** Every lease is decided at the database's clock
//!   (`clock_timestamp()`), read inside the transaction after its locks
//!   are held; no server's clock decides whether a session is live.
//! - **Row locks, not memory.** A start, an end, a key change and each
//!   key's part of a sweep lock the key's row and then its open sessions'
//!   rows, so they take turns per key across servers, and a heartbeat (one
//!   `UPDATE` of one session row) waits for them and then sees what they
//!   decided. Fences come from the locked key row, so they strictly
//!   increase per key. No server keeps sessions in memory, so there is
//!   nothing to tell another server: what one commits, the next request on
//!   any server reads.
//! - **Heartbeats are cheap and safe to lose.** One statement on a pool
//!   whose connections commit with `synchronous_commit = off`: visible to
//!   every server at once, flushed to disk within a fraction of a second.
//!   A crash of the database can lose the last heartbeat times, never a
//!   start, an end or an event; a lost time only shortens a lease that the
//!   restart rule then extends (the database's own outage is an outage).
//! - **Outages are the service's, not a server's.** Each server marks
//!   itself alive about once a second (`server_marks`). While no server
//!   has for a few seconds, or none has since the database itself started
//!   again, every open session counts as live, and the first server back
//!   raises a lease floor of one timeout (the restart rule). A server that
//!   lost contact with the database raises it too before answering again;
//!   one restarted beside running servers raises nothing.
//! - **Deadlines.** Every connection has lock, statement and
//!   idle-in-transaction timeouts, and every operation a deadline of its
//!   own (a commit waiting for an absent synchronous standby is covered by
//!   none of the database's), so an outage or a stuck peer is a 503 within
//!   seconds, never a hang.
//! - **Retries.** A serialization failure, a deadlock or a unique-key race
//!   (two servers inserting the same client-made session id) rolls back and
//!   runs the operation again from its reads, where the rules decide anew.
//!
//! The SQL stays within what CockroachDB and YugabyteDB also accept where
//! that costs nothing (row locks rather than advisory locks, `GREATEST`,
//! identity columns); neither is tested.
//!
//! The [`Storage`] methods are blocking, like SQLite's; each runs its
//! future on this store's own small runtime and waits for it, so it works
//! the same from the server's blocking pool and from the CLI.

mod beats;
mod connect;
mod keys;
mod reports;
mod rows;
mod sessions;
mod signing;
mod upkeep;
mod work;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio_postgres::error::SqlState;

use self::work::Work;
use crate::clock::Timestamp;
use crate::config::PostgresUrl;
use crate::error::{Error, Result};
use crate::keys::{new_key_id, AccessKey};
use crate::model::{Actor, Event, Key, Session};
use crate::rules::Timing;
use crate::signing::KeyRecord;
use crate::store::{
    CreatedKey, EndOutcome, EventFilter, KeyChange, KeyPage, KeyPatch, KeySearch, NewKey, OpenMode,
    ResumeReport, StartOutcome, StartRequest, StateReading, Storage, SweepReport,
};

/// The heartbeat's statement, exactly as the engine prepares it (for the
/// benchmark's pgbench script, through [`crate::store`]).
pub(super) fn heartbeat_sql() -> String {
    sessions::heartbeat_sql()
}

/// Which clock decides leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSource {
    /// The database's (every real deployment: server clocks may differ).
    Database,
    /// The caller's `now` (tests that drive time by hand).
    Caller,
}

/// How to run the PostgreSQL engine.
#[derive(Debug, Clone, Copy)]
pub struct PostgresOptions {
    /// The timeout every outage's lease floor grants.
    pub timing: Timing,
    /// Connections in the pool of durable writes and reads.
    pub pool_size: usize,
    /// Connections every heartbeat shares (pipelined; see `beats`).
    pub heartbeat_connections: usize,
    /// Which clock decides leases.
    pub time: TimeSource,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            timing: Timing::default(),
            pool_size: 16,
            heartbeat_connections: 4,
            time: TimeSource::Database,
        }
    }
}

/// Operations retried after a serialization failure, a deadlock, a
/// unique-key race or a connection found closed before the work began.
const RETRIES: u32 = 5;
/// The longest one operation may take, commit included: past it the
/// device gets 503 and the connection is dropped. Longer than the
/// statement timeout, so it only ends waits that nothing else ends.
const OPERATION_DEADLINE: Duration = Duration::from_secs(12);
/// How often a server marks itself alive.
const MARK_EVERY: Duration = Duration::from_millis(1_000);

/// Whether an error is worth running the whole operation again for.
fn retryable(e: &Error) -> bool {
    match e {
        Error::Postgres(pe) => matches!(
            pe.code(),
            Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::UNIQUE_VIOLATION
        ),
        _ => false,
    }
}

/// Runs `$body` (which uses the transaction `$tx` and may `?`) in a
/// transaction on `$inner.pool`, commits, and runs it all again on a
/// retryable failure.
macro_rules! transact {
    ($inner:expr, |$tx:ident| $body:expr) => {{
        let inner = &$inner;
        let mut attempt = 0u32;
        loop {
            let mut client = inner.client(&inner.pool).await?;
            let mut begun = false;
            let timed = tokio::time::timeout(OPERATION_DEADLINE, async {
                let $tx = client.transaction().await?;
                begun = true;
                let value = $body;
                $tx.commit().await?;
                Ok::<_, Error>(value)
            })
            .await;
            let outcome = match timed {
                Ok(outcome) => outcome,
                Err(_) => {
                    // Stuck (a commit waiting for a synchronous standby
                    // that is not there, which no statement timeout
                    // covers): this connection is not given back to the
                    // pool, and the device is told to retry.
                    drop(deadpool_postgres::Object::take(client));
                    break Err(Error::Unavailable(format!(
                        "the database {} did not finish the change within {} s",
                        inner.url,
                        OPERATION_DEADLINE.as_secs()
                    )));
                }
            };
            match outcome {
                // A pooled connection the database closed (it restarted)
                // before anything was done: take another.
                Err(Error::Postgres(e)) if !begun && e.is_closed() && attempt < RETRIES => {
                    attempt += 1;
                }
                Err(e) if retryable(&e) && attempt < RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 5)).await;
                }
                other => {
                    if let Err(e) = &other {
                        inner.note(e);
                    }
                    break other;
                }
            }
        }
    }};
}

/// Runs `$body` with a [`Work`] named `$work` at the lease time `$given`.
macro_rules! with_work {
    ($inner:expr, $given:expr, |$work:ident| $body:expr) => {
        transact!($inner, |tx| {
            let now = $inner.now(&tx, $given).await?;
            let $work = Work { tx: &tx, now };
            $body
        })
    };
}

/// What every operation's future holds.
struct Inner {
    pool: Pool,
    beats: beats::Lines,
    url: PostgresUrl,
    instance: String,
    time: TimeSource,
    timeout_secs: u64,
    last_mark: Mutex<Option<Instant>>,
    /// Whether the last upkeep could not reach the database (so an outage
    /// is logged once when it starts and once when it ends, not twice a
    /// second).
    unreachable: std::sync::atomic::AtomicBool,
    /// Whether this server failed to reach the database since it last
    /// could: devices could not be heard meanwhile, so before it answers
    /// anything again it gives every open session a full timeout (the
    /// restart rule, for an outage of the database however short).
    lost_contact: std::sync::atomic::AtomicBool,
}

/// The PostgreSQL implementation of [`Storage`].
pub struct PostgresStore {
    inner: Arc<Inner>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.inner.url)
            .finish()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Not `drop(runtime)`: that blocks, and the store may be dropped
        // on an async worker.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl PostgresStore {
    /// Connects, and in `CreateAndMigrate` mode applies pending
    /// migrations; in `Existing` mode refuses a database without the
    /// current schema (so a mistyped URL is not a new empty database).
    pub fn open(url: &PostgresUrl, mode: OpenMode, opts: PostgresOptions) -> Result<Self> {
        let (config, tls) = connect::parse(url)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("keyseat-postgres")
            .enable_all()
            .build()
            .map_err(|e| Error::Internal(format!("cannot start the database runtime: {e}")))?;
        let pool = {
            let _entered = runtime.enter();
            connect::pool(&config, &tls, opts.pool_size, None)?
        };
        let beats = beats::Lines::new(
            connect::with_options(&config, "-c synchronous_commit=off"),
            tls,
            url.clone(),
            sessions::heartbeat_sql(),
            opts.heartbeat_connections,
            OPERATION_DEADLINE,
        );
        let store = PostgresStore {
            inner: Arc::new(Inner {
                pool,
                beats,
                url: url.clone(),
                instance: uuid::Uuid::new_v4().to_string(),
                time: opts.time,
                timeout_secs: opts.timing.session_timeout_secs,
                last_mark: Mutex::new(None),
                unreachable: std::sync::atomic::AtomicBool::new(false),
                lost_contact: std::sync::atomic::AtomicBool::new(false),
            }),
            runtime: Some(runtime),
        };
        store.run(move |inner| async move {
            match mode {
                OpenMode::CreateAndMigrate => connect::migrate(&inner.pool, &inner.url).await,
                OpenMode::Existing => connect::check_migrated(&inner.pool, &inner.url).await,
            }
        })?;
        Ok(store)
    }

    /// The database, as shown to people (password redacted).
    pub fn url(&self) -> &PostgresUrl {
        &self.inner.url
    }

    /// Runs an operation on this store's runtime and waits for it.
    fn run<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(Arc<Inner>) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| Error::Internal("database runtime stopped".into()))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let fut = f(self.inner.clone());
        runtime.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| Error::Internal("database task failed".into()))?
    }
}

impl Inner {
    async fn client(&self, pool: &Pool) -> Result<deadpool_postgres::Object> {
        let client = pool.get().await.map_err(|e| {
            if connect::pool_lost_contact(&e) {
                self.lost_contact
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            connect::pool_error(e, &self.url)
        })?;
        if self.lost_contact.load(std::sync::atomic::Ordering::Relaxed) {
            self.recover(&client).await?;
        }
        Ok(client)
    }

    /// Notes a failure that means the database could not be reached (as
    /// opposed to a refusal, a conflict or a busy pool).
    fn note(&self, e: &Error) {
        if let Error::Postgres(pe) = e {
            let lost = pe.is_closed()
                || pe
                    .code()
                    .is_none_or(|c| matches!(&c.code()[..2], "08" | "57"));
            if lost {
                self.lost_contact
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// Back in contact after losing it: every open session's lease floor
    /// becomes one timeout from now, before this server answers anything.
    async fn recover(&self, client: &deadpool_postgres::Object) -> Result<()> {
        let timeout_ms = i64::try_from(self.timeout_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        client
            .execute(
                &format!(
                    "UPDATE server_state SET value = GREATEST(value, {} + $1) \
                     WHERE name = 'lease_floor'",
                    rows::DB_NOW
                ),
                &[&timeout_ms],
            )
            .await
            .inspect_err(|e| {
                if e.is_closed() {
                    tracing::debug!("the database is still away");
                }
            })?;
        if self
            .lost_contact
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::info!(
                "the database {} answers again; every open session has a full timeout from now",
                self.url
            );
        }
        Ok(())
    }

    /// The lease time for an operation that decides at `given` (or at the
    /// database's clock).
    async fn now(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        given: Timestamp,
    ) -> Result<Timestamp> {
        work::lease_time(tx, self.time, given).await
    }

    /// Marks this server alive (at most once a second unless `force`).
    async fn mark(&self, given: Timestamp, force: bool) -> Result<bool> {
        {
            let last = self.last_mark.lock().unwrap_or_else(|p| p.into_inner());
            if !force && last.is_some_and(|t| t.elapsed() < MARK_EVERY) {
                return Ok(false);
            }
        }
        let raised = transact!(self, |tx| {
            let now = self.now(&tx, given).await?;
            upkeep::mark_alive(&tx, &self.instance, now, self.timeout_secs).await?
        })?;
        *self.last_mark.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        Ok(raised)
    }
}

/// A heartbeat: the one statement on the heartbeat pool, and only when it
/// touched nothing a transaction to say why.
async fn heartbeat(
    inner: Arc<Inner>,
    key: AccessKey,
    id: String,
    now: Timestamp,
    timing: Timing,
) -> Result<Session> {
    let hash = key.hash();
    let hash: &[u8] = &hash;
    let given = (inner.time == TimeSource::Caller).then_some(now.0);
    let timeout_ms =
        i64::try_from(timing.session_timeout_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    if inner
        .lost_contact
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        // Back from an outage: the lease floor first (see Inner::client).
        drop(inner.client(&inner.pool).await?);
    }
    let mut attempt = 0;
    let found = loop {
        let answer = if given.is_some() {
            // A caller's clock (a test's manual clock) is read before the
            // statement is sent, so a heartbeat queued behind others on a
            // shared connection could apply an earlier time after a later
            // status read: its own connection keeps that queue short. The
            // database's clock (every real server) is read by the
            // statement itself, so the shared connections cannot reorder.
            heartbeat_alone(&inner, &[&hash, &id, &timeout_ms, &given]).await
        } else {
            inner
                .beats
                .query_opt(&[&hash, &id, &timeout_ms, &given])
                .await
        };
        match answer {
            // Idempotent, so a connection the database closed is simply
            // tried again (on a new one).
            Err(Error::Postgres(e)) if e.is_closed() && attempt < RETRIES => {
                inner.note(&Error::Postgres(e));
                attempt += 1
            }
            Err(e) => {
                inner.note(&e);
                return Err(e);
            }
            Ok(found) => break found,
        }
    };
    match found {
        Some(row) => Ok(sessions::beat_from_row(&row)),
        None => with_work!(inner, now, |work| {
            sessions::explain(&work, &key, &id).await
        })?,
    }
}

/// The heartbeat statement on a pooled connection of its own.
async fn heartbeat_alone(
    inner: &Inner,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Option<tokio_postgres::Row>> {
    let client = inner.client(&inner.pool).await?;
    let stmt = client.prepare_cached(&sessions::heartbeat_sql()).await?;
    Ok(client.query_opt(&stmt, params).await?)
}

impl Storage for PostgresStore {
    fn check_health(&self) -> Result<()> {
        self.run(|inner| async move {
            let client = inner.client(&inner.pool).await?;
            client.query_one("SELECT 1", &[]).await?;
            Ok(())
        })
    }

    fn start_session(
        &self,
        req: &StartRequest,
        now: Timestamp,
        timing: Timing,
    ) -> Result<StartOutcome> {
        let req = req.clone();
        self.run(move |inner| async move {
            transact!(inner, |tx| {
                sessions::start(&tx, inner.time, &req, now, timing).await?
            })?
        })
    }

    fn heartbeat(
        &self,
        key: &AccessKey,
        session_id: &str,
        now: Timestamp,
        timing: Timing,
    ) -> Result<Session> {
        let (key, id) = (key.clone(), session_id.to_owned());
        self.run(move |inner| heartbeat(inner, key, id, now, timing))
    }

    fn heartbeat_async(
        &self,
        key: &AccessKey,
        session_id: &str,
        now: Timestamp,
        timing: Timing,
    ) -> Option<crate::store::BoxFuture<Result<Session>>> {
        let (key, id) = (key.clone(), session_id.to_owned());
        Some(Box::pin(heartbeat(
            self.inner.clone(),
            key,
            id,
            now,
            timing,
        )))
    }

    fn end_session(
        &self,
        key: &AccessKey,
        session_id: &str,
        now: Timestamp,
        actor: &Actor,
    ) -> Result<EndOutcome> {
        let (key, id, actor) = (key.clone(), session_id.to_owned(), actor.clone());
        self.run(move |inner| async move {
            with_work!(inner, now, |work| {
                sessions::end(&work, &key, &id, &actor).await?
            })
        })
    }

    fn key_status(&self, key: &AccessKey, now: Timestamp) -> Result<(Key, Vec<Session>)> {
        let key = key.clone();
        self.run(move |inner| async move {
            with_work!(inner, now, |work| sessions::key_status(&work, &key).await?)
        })
    }

    fn create_key(&self, new: &NewKey, now: Timestamp, actor: &Actor) -> Result<CreatedKey> {
        let (new, actor) = (new.clone(), actor.clone());
        let access_key = AccessKey::generate();
        let key_id = new_key_id();
        let secret = access_key.clone();
        let key = self.run(move |inner| async move {
            with_work!(inner, now, |work| {
                keys::create(&work, &new, &secret, &key_id, &actor).await?
            })
        })?;
        Ok(CreatedKey { key, access_key })
    }

    fn list_keys(&self, limit: u32, after: Option<&str>, now: Timestamp) -> Result<KeyPage> {
        let after = after.map(str::to_owned);
        self.run(move |inner| async move {
            with_work!(inner, now, |work| {
                keys::list(&work, limit, after.as_deref()).await?
            })
        })
    }

    fn search_keys(
        &self,
        query: &str,
        limit: u32,
        offset: u64,
        now: Timestamp,
    ) -> Result<KeySearch> {
        let query = query.to_owned();
        self.run(move |inner| async move {
            with_work!(inner, now, |work| {
                keys::search(&work, &query, limit, offset).await?
            })
        })
    }

    fn get_key(&self, key_ref: &str, now: Timestamp) -> Result<Key> {
        let key_ref = key_ref.to_owned();
        self.run(move |inner| async move {
            with_work!(inner, now, |work| keys::get(&work, &key_ref).await?)
        })
    }

    fn update_key(
        &self,
        key_ref: &str,
        patch: &KeyPatch,
        now: Timestamp,
        actor: &Actor,
    ) -> Result<KeyChange> {
        let (key_ref, patch, actor) = (key_ref.to_owned(), patch.clone(), actor.clone());
        self.run(move |inner| async move {
            with_work!(inner, now, |work| {
                keys::update(&work, &key_ref, &patch, &actor).await?
            })
        })
    }

    fn revoke_key(&self, key_ref: &str, now: Timestamp, actor: &Actor) -> Result<KeyChange> {
        let (key_ref, actor) = (key_ref.to_owned(), actor.clone());
        self.run(move |inner| async move {
            with_work!(inner, now, |work| {
                keys::revoke(&work, &key_ref, &actor).await?
            })
        })
    }

    fn live_sessions(&self, key_ref: Option<&str>, now: Timestamp) -> Result<Vec<Session>> {
        let key_ref = key_ref.map(str::to_owned);
        self.run(move |inner| async move {
            with_work!(inner, now, |work| {
                sessions::live(&work, key_ref.as_deref()).await?
            })
        })
    }

    fn kick_session(&self, session_id: &str, now: Timestamp, actor: &Actor) -> Result<EndOutcome> {
        let (id, actor) = (session_id.to_owned(), actor.clone());
        self.run(move |inner| async move {
            with_work!(inner, now, |work| sessions::kick(&work, &id, &actor)
                .await?)
        })
    }

    fn events(&self, filter: &EventFilter) -> Result<Vec<Event>> {
        let filter = filter.clone();
        self.run(
            move |inner| async move { transact!(inner, |tx| reports::events(&tx, &filter).await?) },
        )
    }

    fn metrics_reading(&self, now: Timestamp) -> Result<StateReading> {
        self.run(move |inner| async move {
            with_work!(inner, now, |work| StateReading {
                live_sessions: reports::count_live(work.tx, work.now).await?,
                keys_by_status: reports::keys_by_status(work.tx, work.now).await?,
            })
        })
    }

    fn event_counts(
        &self,
        since: Timestamp,
        bucket_secs: u64,
    ) -> Result<Vec<crate::report::EventCount>> {
        self.run(move |inner| async move {
            transact!(inner, |tx| {
                reports::event_counts(&tx, since, bucket_secs).await?
            })
        })
    }

    fn sharing_input(&self, since: Timestamp) -> Result<crate::report::SharingInput> {
        self.run(move |inner| async move {
            transact!(inner, |tx| reports::sharing_input(&tx, since).await?)
        })
    }

    fn sweep(&self, now: Timestamp, history_days: u32, mark_alive: bool) -> Result<SweepReport> {
        self.run(move |inner| async move {
            if mark_alive {
                inner.mark(now, true).await?;
            }
            let mut report = SweepReport::default();
            // Candidates by a plain read; each key settled under its lock.
            // Bounded passes: a key found busy again is the next sweep's.
            for _ in 0..8 {
                let (dead, expired_keys) = with_work!(inner, now, |work| {
                    (
                        upkeep::keys_with_dead_sessions(work.tx, work.now).await?,
                        upkeep::expired_keys_with_sessions(work.tx, work.now).await?,
                    )
                })?;
                if dead.is_empty() && expired_keys.is_empty() {
                    break;
                }
                let full = dead.len() as i64 == upkeep::CHUNK;
                let mut ids = dead;
                ids.extend(expired_keys);
                ids.sort();
                ids.dedup();
                for key_id in &ids {
                    let (expired, revoked) = with_work!(inner, now, |work| {
                        upkeep::settle_key(&work, key_id).await?
                    })?;
                    report.expired.extend(expired);
                    report.revoked.extend(revoked);
                }
                if !full {
                    break;
                }
            }
            loop {
                let (sessions, events) = with_work!(inner, now, |work| {
                    let cutoff = work.now.minus_secs(u64::from(history_days) * 86_400);
                    upkeep::prune(work.tx, cutoff).await?
                })?;
                report.pruned_sessions += sessions as usize;
                report.pruned_events += events as usize;
                if (sessions as i64) < upkeep::CHUNK && (events as i64) < upkeep::CHUNK {
                    break;
                }
            }
            Ok(report)
        })
    }

    fn resume_after_restart(&self, ready_at: Timestamp, _timing: Timing) -> Result<ResumeReport> {
        self.run(move |inner| async move {
            // The restart rule holds for the service, not for one server:
            // a server restarted beside running ones resumes nothing (the
            // service never stopped). Whether others run: a mark from the
            // last few seconds may be a crashed server's (this one's own
            // previous run, killed a moment ago), so it counts only if it
            // moves on while this one watches.
            let seen = transact!(inner, |tx| {
                upkeep::recent_marks(&tx, &inner.instance).await?
            })?;
            let alone = seen.is_empty() || {
                tokio::time::sleep(MARK_EVERY * 3 / 2).await;
                let again = transact!(inner, |tx| {
                    upkeep::recent_marks(&tx, &inner.instance).await?
                })?;
                !again
                    .iter()
                    .any(|(id, at)| !seen.iter().any(|(old, old_at)| old == id && old_at >= at))
            };
            let open = transact!(inner, |tx| {
                let now = inner.now(&tx, ready_at).await?;
                if alone {
                    upkeep::raise_floor(&tx, now, inner.timeout_secs).await?;
                }
                upkeep::count_open(&tx).await?
            })?;
            inner.mark(ready_at, true).await?;
            Ok(ResumeReport {
                resumed: if alone { open as usize } else { 0 },
            })
        })
    }

    fn maintain(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        self.run(move |inner| async move {
            // The lease time of a raised floor is the database's; with a
            // caller's clock (tests) there is none at hand here, and 0
            // leaves the floor as it was (it only ever rises).
            let given = Timestamp(0);
            match inner.mark(given, false).await {
                Ok(raised) => {
                    if inner.unreachable.swap(false, Ordering::Relaxed) {
                        tracing::info!("the database {} answers again", inner.url);
                    }
                    if raised {
                        tracing::info!(
                            "the service was out (no server alive on the database for a while); \
                             every open session has a full timeout from now"
                        );
                    }
                    Ok(())
                }
                Err(e) if e.is_transient() => {
                    if inner.unreachable.swap(true, Ordering::Relaxed) {
                        Ok(())
                    } else {
                        Err(e)
                    }
                }
                Err(e) => Err(e),
            }
        })
    }

    fn mark_stopped(&self, now: Timestamp) -> Result<()> {
        // A last sweep, so a restart resumes exactly the sessions that
        // were live at the stop (as on SQLite).
        self.sweep(now, u32::MAX / 86_400, false)?;
        self.run(move |inner| async move {
            transact!(inner, |tx| upkeep::forget_mark(&tx, &inner.instance)
                .await?)
        })
    }

    fn signing_keys(&self) -> Result<Vec<KeyRecord>> {
        self.run(move |inner| async move { transact!(inner, |tx| signing::all(&tx).await?) })
    }

    fn ensure_signing_key(&self, now: Timestamp) -> Result<Vec<KeyRecord>> {
        self.run(move |inner| async move {
            with_work!(inner, now, |work| signing::ensure(&work).await?)
        })
    }

    fn rotate_signing_key(&self, now: Timestamp, forget_before: Timestamp) -> Result<KeyRecord> {
        self.run(move |inner| async move {
            with_work!(inner, now, |work| signing::rotate(&work, forget_before)
                .await?)
        })
    }
}
