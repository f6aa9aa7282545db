//! The server's store: live sessions in memory, durable writes through the
//! group-commit writer, reads from the pool (never behind the writer).
//!
//! - Heartbeats are answered from memory ([`Memory::heartbeat`]); their
//!   times reach the disk in batches every half persistence interval, and
//!   the disk's lease carries the persistence interval as slack so it stays
//!   an upper bound of the true lease (a CLI that cannot reach the server's
//!   control socket reads the disk).
//! - Starts, ends, kicks, key changes and expiries are durable before they
//!   are answered: one writer thread commits them in batches.
//! - Another process (the CLI) writing the file is noticed through
//!   `PRAGMA data_version` on the writer's connection within one
//!   maintenance tick, and memory is reconciled.
//! - The WAL is checkpointed (passively) on the writer's connection between
//!   batches, so the checkpoint finishes and the WAL starts over even under
//!   continuous writes; past a size limit (readers pinning it for long) the
//!   checkpoint becomes a blocking `TRUNCATE`, so the WAL stays bounded.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use super::file_guard::FileGuard;
use super::memory::{Change, Memory, MemoryAnswer};
use super::sqlite::{self, Durability, UnitOfWork};
use super::writer::Writer;
use super::*;
use crate::clock::Clock;
use crate::keys::{key_tag, new_key_id};

/// WAL size past which the checkpointer blocks until it is truncated.
const WAL_LIMIT_BYTES: u64 = 64 * 1024 * 1024;
/// Heartbeat times written per flush transaction.
const FLUSH_BATCH: usize = 2_000;
/// Expiries recorded per write, so a mass expiry never holds the writer
/// (and the starts queued behind it) for long.
const EXPIRE_BATCH: usize = 500;

/// Settings of the server's store.
#[derive(Debug, Clone, Copy)]
pub struct LiveOptions {
    /// Heartbeat interval and session timeout.
    pub timing: Timing,
    /// How stale heartbeat times on disk may be (seconds).
    pub persist_secs: u64,
    /// Commit durability.
    pub durability: Durability,
}

/// The server's [`Storage`].
pub struct LiveStore {
    db: SqliteStore,
    writer: Writer,
    mem: Arc<Memory>,
    clock: Arc<dyn Clock>,
    opts: LiveOptions,
    /// `PRAGMA data_version` as last seen by the writer's connection.
    data_version: Arc<AtomicI64>,
    /// The newest event already reflected in memory (for reconciling).
    last_event: Arc<AtomicI64>,
    /// When heartbeat times were last written (server clock: the lease
    /// arithmetic that the flush keeps true is in server time).
    last_flush: Mutex<Timestamp>,
    /// Whether the database file is still the one opened.
    guard: Arc<FileGuard>,
    /// Held while a gap in progress is taken and applied, so no decision
    /// runs between the two on leases the gap has not yet extended.
    gap_lock: Mutex<()>,
    /// How many of the clock's gaps have been applied.
    gaps_applied: std::sync::atomic::AtomicU64,
    /// A lease floor for the disk after a gap, written by the next upkeep
    /// (never by the request that noticed the gap: it may be on an async
    /// worker, and a failed write must not fail it).
    pending_floor: AtomicI64,
}

impl LiveStore {
    /// Opens (creating and migrating) the database, runs restart recovery
    /// with `ready_at` as the moment of readiness, loads every open session
    /// into memory and starts the writer.
    pub fn open(
        path: &Path,
        opts: LiveOptions,
        clock: Arc<dyn Clock>,
        ready_at: Timestamp,
    ) -> Result<(LiveStore, ResumeReport)> {
        let db = SqliteStore::open_with(path, OpenMode::CreateAndMigrate, opts.durability)?;
        let report = db.resume_after_restart(ready_at, opts.timing)?;
        let mem = Arc::new(Memory::default());
        let floor = opts.timing.lease_until(ready_at).0;
        db.read(|c| {
            mem.reserve(sqlite::memory_feed::count_open(c)?);
            sqlite::memory_feed::load_open_sessions(c, |id, mut session| {
                // Every session live at the stop gets one full timeout from
                // readiness, and no more: the disk lease carries slack, and
                // a heartbeat time "in the future" (the wall clock was set
                // back between two runs) must not hold a seat longer.
                // A borrow holds its seat to its end, restart or not.
                session.expires_at = floor.max(session.borrowed_until);
                session.last_heartbeat = session.last_heartbeat.min(ready_at.0);
                mem.insert(&id, session);
            })
        })?;
        // Loading a million sessions takes seconds: the full timeout counts
        // from the moment the server is actually ready, not from when it
        // began to load.
        let loaded_at = clock.now();
        let report = if loaded_at > ready_at {
            mem.raise_leases_to(opts.timing.lease_until(loaded_at).0);
            db.resume_after_restart(loaded_at, opts.timing)?
        } else {
            report
        };
        let last_event = db.read(sqlite::memory_feed::last_event_id)?;
        let conn = db.new_connection()?;
        // Checkpoints run on the maintenance tick, never inline in a commit.
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0;")?;
        let version: i64 = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        let guard = Arc::new(FileGuard::new(db.path())?);
        let check = guard.clone();
        let writer = Writer::start(conn, Box::new(move || check.check()))?;
        Ok((
            LiveStore {
                db,
                writer,
                mem,
                clock,
                opts,
                data_version: Arc::new(AtomicI64::new(version)),
                last_event: Arc::new(AtomicI64::new(last_event)),
                last_flush: Mutex::new(ready_at),
                guard,
                gap_lock: Mutex::new(()),
                gaps_applied: std::sync::atomic::AtomicU64::new(0),
                pending_floor: AtomicI64::new(i64::MIN),
            },
            report,
        ))
    }

    fn slack(&self) -> u64 {
        self.opts.persist_secs
    }

    /// Before any decision: refuses when the database file was replaced,
    /// and treats a gap in the server's own progress as an outage.
    fn prepare(&self) -> Result<()> {
        self.guard.ensure_intact()?;
        // Lock-free unless the clock has seen a gap this store has not
        // applied. Taking the gap and extending the leases is then one
        // step under the lock: a thread that finds the gap already taken
        // waits here until the leases are extended, so no decision after
        // a freeze sees the old ones.
        let seen = self.clock.gaps_seen();
        if seen != self.gaps_applied.load(Ordering::SeqCst) {
            let _one = self.gap_lock.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(gap) = self.clock.take_gap() {
                self.outage(gap);
            }
            self.gaps_applied.fetch_max(seen, Ordering::SeqCst);
        }
        Ok(())
    }

    /// The process was frozen (stopped, paused, starved) from `gap.from` to
    /// `gap.to`. The contract says an outage never ends a session by itself,
    /// and a restart gives every session live at the stop a full timeout
    /// from readiness; a freeze is the same outage without the restart, so
    /// it gets the same rule: sessions live at the gap's start get a full
    /// timeout from its end, in memory now and on disk (the lease floor) at
    /// the next upkeep.
    fn outage(&self, gap: crate::clock::Gap) {
        let timing = self.opts.timing;
        let held = self
            .mem
            .relet(|lease| crate::rules::lease_after_gap(lease, gap, timing));
        self.pending_floor
            .fetch_max(timing.lease_until(gap.to).0, Ordering::SeqCst);
        tracing::warn!(
            paused_ms = gap.millis(),
            sessions = held,
            "the server made no progress for {:.1} s (the process was stopped or paused, or \
             the host starved it); treated as an outage: every session live before it has a \
             full timeout from now",
            gap.millis() as f64 / 1000.0
        );
        crate::metrics::global().outage_noticed();
    }

    /// Writes the lease floor a gap left for the disk, if any.
    fn write_pending_floor(&self) -> Result<()> {
        let floor = self.pending_floor.swap(i64::MIN, Ordering::SeqCst);
        if floor == i64::MIN {
            return Ok(());
        }
        let mem = self.mem.clone();
        let (slack, timeout) = (self.slack(), self.opts.timing.session_timeout_secs);
        let written = self.writer.run(move |c| {
            let mut work = UnitOfWork::with_memory(c, &mem, slack, timeout);
            sqlite::upkeep::raise_lease_floor(&mut work, Timestamp(floor))?;
            let after: Box<dyn FnOnce() + Send> = Box::new(|| {});
            Ok(((), after))
        });
        if written.is_err() {
            // Again at the next upkeep.
            self.pending_floor.fetch_max(floor, Ordering::SeqCst);
        }
        written
    }

    /// Runs `f` in the writer's next batch; memory changes apply after
    /// the commit, before the answer.
    fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut UnitOfWork<'_>) -> Result<T> + Send + 'static,
    {
        self.prepare()?;
        let mem = self.mem.clone();
        let slack = self.slack();
        let timeout = self.opts.timing.session_timeout_secs;
        self.writer.run(move |c| {
            let mut work = UnitOfWork::with_memory(c, &mem, slack, timeout);
            let value = f(&mut work)?;
            let changes = std::mem::take(&mut work.memory_changes);
            let after: Box<dyn FnOnce() + Send> = Box::new(move || mem.apply(changes));
            Ok((value, after))
        })
    }

    fn read<T>(&self, f: impl FnOnce(&UnitOfWork<'_>) -> Result<T>) -> Result<T> {
        self.prepare()?;
        self.db.read(|c| {
            f(&UnitOfWork::with_memory(
                c,
                &self.mem,
                self.slack(),
                self.opts.timing.session_timeout_secs,
            ))
        })
    }

    /// Writes pending heartbeat times to disk. A batch that fails is
    /// marked dirty again, for the next flush.
    fn flush(&self) -> Result<usize> {
        let mut total = 0;
        let timeout = self.opts.timing.session_timeout_secs;
        loop {
            let batch = self.mem.take_dirty(FLUSH_BATCH);
            if batch.is_empty() {
                return Ok(total);
            }
            let n = batch.len();
            let mem = self.mem.clone();
            let slack = self.slack();
            let retry: Vec<String> = batch.iter().map(|(id, _)| id.clone()).collect();
            let written = self.writer.run(move |c| {
                let mut work = UnitOfWork::with_memory(c, &mem, slack, timeout);
                sqlite::upkeep::flush_heartbeats(&mut work, &batch)?;
                let after: Box<dyn FnOnce() + Send> = Box::new(|| {});
                Ok(((), after))
            });
            if let Err(e) = written {
                self.mem.mark_dirty(&retry);
                return Err(e);
            }
            total += n;
            if n < FLUSH_BATCH {
                return Ok(total);
            }
        }
    }

    /// Notices writes by other processes and reconciles memory from the
    /// audit log they wrote: sessions they ended leave memory, and key
    /// expiry changes reach the sessions of those keys.
    fn reconcile(&self) -> Result<()> {
        let mem = self.mem.clone();
        let seen = self.data_version.clone();
        let last_event = self.last_event.clone();
        self.writer.run(move |c| {
            let version: i64 = c.query_row("PRAGMA data_version", [], |r| r.get(0))?;
            if version == seen.load(Ordering::SeqCst) {
                // Nobody else wrote: every event so far is ours and already
                // in memory. Moving the mark keeps the next real reconcile
                // small.
                let newest = sqlite::memory_feed::last_event_id(c)?;
                let after: Box<dyn FnOnce() + Send> =
                    Box::new(move || last_event.store(newest, Ordering::SeqCst));
                return Ok(((), after));
            }
            let logged =
                sqlite::memory_feed::logged_changes_since(c, last_event.load(Ordering::SeqCst))?;
            // The marks move only once this batch is committed: a failed
            // batch leaves them, and the next tick reconciles again.
            let after: Box<dyn FnOnce() + Send> = Box::new(move || {
                seen.store(version, Ordering::SeqCst);
                last_event.store(logged.last_id, Ordering::SeqCst);
                let dropped = mem.remove_all(&logged.ended);
                let changes = logged
                    .keys
                    .into_iter()
                    .map(|(key_tag, expires_at)| Change::KeyExpiry {
                        key_tag,
                        expires_at,
                    })
                    .collect();
                mem.apply(changes);
                tracing::info!(
                    sessions_ended_elsewhere = dropped,
                    "another process changed the database; reconciled"
                );
            });
            Ok(((), after))
        })
    }

    /// Checkpoints the WAL between write batches (without waiting for
    /// readers); past the size limit, blocks until it is truncated.
    fn checkpoint(&self) -> Result<()> {
        let wal = {
            let mut p = self.db.path().as_os_str().to_owned();
            p.push("-wal");
            std::path::PathBuf::from(p)
        };
        let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        let mode = if size > WAL_LIMIT_BYTES {
            tracing::warn!(
                wal_bytes = size,
                "WAL over its limit; truncating with a blocking checkpoint"
            );
            "TRUNCATE"
        } else {
            "PASSIVE"
        };
        self.db.read(|c| {
            c.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()))?;
            Ok(())
        })?;
        if mode == "PASSIVE" {
            // The bulk was copied above, beside the writer; under continuous
            // writes that never catches up, so the few frames committed
            // meanwhile are copied between two batches, where nothing is
            // appended: the checkpoint completes (unless a reader pins old
            // frames) and the next batch starts the WAL over.
            self.writer.between(|c| {
                c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
                Ok(())
            })?;
        }
        Ok(())
    }
}

impl Storage for LiveStore {
    /// Every end reaches memory (this server's writes, and other processes'
    /// through the reconcile), so memory tells.
    fn on_session_end(&self, listener: crate::store::EndListener) {
        self.mem.set_end_listener(listener);
    }

    fn check_health(&self) -> Result<()> {
        self.guard.check()?;
        self.db.check_health()
    }

    fn start_session(
        &self,
        req: &StartRequest,
        now: Timestamp,
        timing: Timing,
    ) -> Result<StartOutcome> {
        let req = req.clone();
        self.write(move |work| sqlite::sessions::start(work, &req, now, timing))?
    }

    fn heartbeat_fast(&self, key: &AccessKey, session_id: &str) -> Option<Result<Beat>> {
        if let Err(e) = self.prepare() {
            return Some(Err(e));
        }
        let timeout = self.opts.timing.session_timeout_secs;
        match self.mem.heartbeat(
            session_id,
            key_tag(&key.hash()),
            self.clock.as_ref(),
            timeout,
        ) {
            MemoryAnswer::Beat(beat) => Some(Ok(beat)),
            MemoryAnswer::KeyExpired => Some(Err(Error::KeyExpired)),
            MemoryAnswer::NeedsDatabase => None,
        }
    }

    fn heartbeat(
        &self,
        key: &AccessKey,
        session_id: &str,
        _now: Timestamp,
        _timing: Timing,
    ) -> Result<Session> {
        // Memory could not extend it (unknown id, wrong key, lease run out,
        // or a start not yet applied): the disk, with memory's leases,
        // says why.
        let now = self.clock.now();
        let answer = self.read(|work| sqlite::sessions::explain(work, key, session_id, now));
        if let Err(Error::SessionOver(EndReason::Expired)) = &answer {
            // Record it now (if no sweep has), so that a crash before the
            // next sweep cannot bring back a session a device was told
            // had expired.
            let id = session_id.to_owned();
            let due = vec![(id, now.0)];
            self.write(move |work| sqlite::upkeep::record_expired(work, &due, now))?;
        }
        answer
    }

    fn end_session(
        &self,
        key: &AccessKey,
        session_id: &str,
        now: Timestamp,
        actor: &Actor,
    ) -> Result<EndOutcome> {
        let (key, id, actor) = (key.clone(), session_id.to_owned(), actor.clone());
        self.write(move |work| sqlite::sessions::end(work, &key, &id, now, &actor))
    }

    fn key_status(&self, key: &AccessKey, now: Timestamp) -> Result<(Key, Vec<Session>)> {
        self.read(|work| sqlite::sessions::key_status(work, key, now))
    }

    fn create_key(&self, new: &NewKey, now: Timestamp, actor: &Actor) -> Result<CreatedKey> {
        let access_key = AccessKey::generate();
        let (new, actor, secret) = (new.clone(), actor.clone(), access_key.clone());
        let key = self.write(move |work| {
            sqlite::keys::create(work, &new, &secret, &new_key_id(), now, &actor)
        })?;
        Ok(CreatedKey { key, access_key })
    }

    fn list_keys(&self, limit: u32, after: Option<&str>, now: Timestamp) -> Result<KeyPage> {
        self.read(|work| sqlite::keys::list(work, limit, after, now))
    }

    fn search_keys(
        &self,
        query: &str,
        limit: u32,
        offset: u64,
        now: Timestamp,
    ) -> Result<KeySearch> {
        self.read(|work| sqlite::keys::search(work, query, limit, offset, now))
    }

    fn get_key(&self, key_ref: &str, now: Timestamp) -> Result<Key> {
        self.read(|work| sqlite::keys::get(work, key_ref, now))
    }

    fn update_key(
        &self,
        key_ref: &str,
        patch: &KeyPatch,
        now: Timestamp,
        actor: &Actor,
    ) -> Result<KeyChange> {
        let (r, patch, actor) = (key_ref.to_owned(), patch.clone(), actor.clone());
        self.write(move |work| sqlite::keys::update(work, &r, &patch, now, &actor))
    }

    fn revoke_key(&self, key_ref: &str, now: Timestamp, actor: &Actor) -> Result<KeyChange> {
        let (r, actor) = (key_ref.to_owned(), actor.clone());
        self.write(move |work| sqlite::keys::revoke(work, &r, now, &actor))
    }

    fn live_sessions(&self, key_ref: Option<&str>, now: Timestamp) -> Result<Vec<Session>> {
        self.read(|work| sqlite::sessions::live(work, key_ref, now))
    }

    fn metrics_reading(&self, now: Timestamp) -> Result<StateReading> {
        let keys_by_status = self.read(|work| sqlite::reports::keys_by_status(work.conn, now))?;
        Ok(StateReading {
            live_sessions: self.mem.count_live(now),
            keys_by_status,
        })
    }

    fn kick_session(&self, session_id: &str, now: Timestamp, actor: &Actor) -> Result<EndOutcome> {
        let (id, actor) = (session_id.to_owned(), actor.clone());
        self.write(move |work| sqlite::sessions::kick(work, &id, now, &actor))
    }

    fn events(&self, filter: &EventFilter) -> Result<Vec<Event>> {
        self.guard.ensure_intact()?;
        self.db.events(filter)
    }

    fn event_counts(
        &self,
        since: Timestamp,
        bucket_secs: u64,
    ) -> Result<Vec<crate::report::EventCount>> {
        self.guard.ensure_intact()?;
        self.db.event_counts(since, bucket_secs)
    }

    fn sharing_input(&self, since: Timestamp) -> Result<crate::report::SharingInput> {
        self.guard.ensure_intact()?;
        self.db.sharing_input(since)
    }

    fn sweep(&self, now: Timestamp, history_days: u32, mark_alive: bool) -> Result<SweepReport> {
        self.prepare()?;
        let mut report = SweepReport::default();
        loop {
            let due = self.mem.due(now, EXPIRE_BATCH);
            if due.is_empty() {
                if self.mem.has_due(now) {
                    continue; // that call only re-filed live sessions
                }
                break;
            }
            let refile = due.clone();
            match self.write(move |work| sqlite::upkeep::record_expired(work, &due, now)) {
                Ok(expired) => report.expired.extend(expired),
                Err(e) => {
                    // Not recorded: file them again so the next pass retries.
                    self.mem.refile(&refile);
                    return Err(e);
                }
            }
        }
        // One chunk per write, so the starts queued behind it wait little.
        loop {
            let step = self.write(move |work| {
                sqlite::upkeep::end_expired_keys_and_prune(work, now, history_days, mark_alive)
            })?;
            if !step.add_to(&mut report) {
                return Ok(report);
            }
        }
    }

    fn resume_after_restart(&self, ready_at: Timestamp, timing: Timing) -> Result<ResumeReport> {
        self.write(move |work| sqlite::upkeep::resume(work, ready_at, timing))
    }

    fn maintain(&self) -> Result<()> {
        if self.guard.check().is_err() {
            // Logged when it tripped; /health and every answer say so.
            self.guard.rescue(&self.writer, self.clock.now());
            return Ok(());
        }
        self.prepare()?;
        self.write_pending_floor()?;
        self.reconcile()?;
        let due = {
            let mut last = self.last_flush.lock().unwrap_or_else(|p| p.into_inner());
            let now = self.clock.now();
            // Every half interval, so a time on disk is at most one
            // interval behind the true one.
            if now.0 - last.0 >= i64::try_from(self.opts.persist_secs * 500).unwrap_or(i64::MAX) {
                *last = now;
                true
            } else {
                false
            }
        };
        if due {
            self.flush()?;
        }
        // Passive and cheap when there is nothing to do; keeps the WAL
        // small under a steady stream of durable writes.
        self.checkpoint()
    }

    fn mark_stopped(&self, now: Timestamp) -> Result<()> {
        if let Err(e) = self.guard.check() {
            self.guard.rescue(&self.writer, self.clock.now());
            return Err(e);
        }
        // A last sweep, so a clean restart resumes exactly the sessions
        // that were live at the stop.
        self.sweep(now, u32::MAX / 86_400, false)?;
        self.flush()?;
        self.write(move |work| sqlite::upkeep::mark_alive(work, now))?;
        self.db.read(|c| {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
    }

    fn signing_keys(&self) -> Result<Vec<KeyRecord>> {
        self.read(sqlite::signing::all)
    }

    fn ensure_signing_key(&self, now: Timestamp) -> Result<Vec<KeyRecord>> {
        self.write(move |work| sqlite::signing::ensure(work, now))
    }

    fn rotate_signing_key(&self, now: Timestamp, forget_before: Timestamp) -> Result<KeyRecord> {
        self.write(move |work| sqlite::signing::rotate(work, now, forget_before))
    }
}
