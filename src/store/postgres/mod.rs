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

#[macro_use]
mod transact;
mod beats;
mod connect;
mod contact;
mod keys;
mod listen;
mod reports;
mod rows;
mod sessions;
mod signing;
mod upkeep;
mod work;

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

pub use self::connect::{PostgresOptions, TimeSource};
use self::contact::{Inner, MARK_EVERY};
use self::transact::OPERATION_DEADLINE;
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
                unreachable: AtomicBool::new(false),
                lost_contact: AtomicBool::new(false),
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

impl Storage for PostgresStore {
    /// Every server LISTENs for the ends the schema's trigger notifies.
    fn on_session_end(&self, listener: crate::store::EndListener) {
        if let Some(runtime) = &self.runtime {
            runtime.spawn(listen::run(self.inner.url.clone(), listener));
        }
    }

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
        self.run(move |inner| beats::heartbeat(inner, key, id, now, timing))
    }

    fn heartbeat_async(
        &self,
        key: &AccessKey,
        session_id: &str,
        now: Timestamp,
        timing: Timing,
    ) -> Option<crate::store::BoxFuture<Result<Session>>> {
        let (key, id) = (key.clone(), session_id.to_owned());
        Some(Box::pin(beats::heartbeat(
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
