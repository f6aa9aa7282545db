//! The server's in-memory view of live sessions: the source of truth for
//! liveness while the server runs.
//!
//! Why memory: heartbeats are almost all of a license server's traffic, and
//! the contract's restart rule (every session live at a stop gets a full
//! timeout after the restart) means a heartbeat's timestamp need not be
//! durable. So a heartbeat is a hash lookup and two integer writes under a
//! mutex, with no disk write and no thread hand-off; heartbeat times reach
//! the database lazily, in batches (see `ServerStore::flush`).
//!
//! Consistency rules (why the heartbeat reads the clock *inside* the lock):
//! every decision that ends a session for lack of heartbeats (sweep, start)
//! checks the session's lease here, under this lock, against a `now` read
//! before it; a heartbeat reads `now` under the lock. With a monotonic clock
//! a heartbeat that comes after such a decision sees a time at least as
//! late, so it finds the lease run out too, and a heartbeat that comes
//! before it extends the lease the decision then sees. State changes that
//! end sessions are applied here after their commit and before they are
//! acknowledged.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crate::clock::{Clock, Timestamp};
use crate::keys::KeyHash;
use crate::model::KeyStatus;

/// A live session as memory keeps it (~100 bytes with its map entry).
#[derive(Debug, Clone)]
pub struct LiveSession {
    /// Its key.
    pub key_id: Arc<str>,
    /// Its fence.
    pub fence: i64,
    /// Last heartbeat, exact.
    pub last_heartbeat: i64,
    /// Lease end, exact: live while `now < expires_at`.
    pub expires_at: i64,
    /// The heartbeat time last written to the database.
    pub persisted_heartbeat: i64,
    /// Queued for the next heartbeat flush.
    pub dirty: bool,
}

/// What a committed write changes in memory.
#[derive(Debug, Clone)]
pub enum Change {
    /// A session started.
    Started {
        /// Session id.
        id: String,
        /// Its key.
        key_id: String,
        /// Its fence.
        fence: i64,
        /// Start time.
        at: i64,
        /// Exact lease end.
        expires_at: i64,
    },
    /// A session's lease was extended by a durable write (a start retry).
    Extended {
        /// Session id.
        id: String,
        /// New heartbeat time.
        at: i64,
        /// New exact lease end.
        expires_at: i64,
    },
    /// A session ended (any reason).
    Ended {
        /// Session id.
        id: String,
    },
    /// A key's status, expiry or limits changed: drop cached keys.
    KeysChanged,
    /// A write read this key as it is now: cache it (so a start that
    /// succeeds is never followed by a heartbeat refused on a stale cache).
    KeySeen {
        /// The key's hash.
        hash: KeyHash,
        /// What heartbeats need of it.
        key: CachedKey,
    },
}

/// What the heartbeat fast path needs of a key.
#[derive(Debug, Clone)]
pub struct CachedKey {
    /// Its id.
    pub key_id: Arc<str>,
    /// Its status.
    pub status: KeyStatus,
    /// Its expiry.
    pub expires_at: Option<i64>,
}

/// The result of a heartbeat in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Beat {
    /// The session's fence.
    pub fence: i64,
    /// The heartbeat time.
    pub at: Timestamp,
    /// The new lease end.
    pub expires_at: Timestamp,
}

#[derive(Default)]
struct Table {
    sessions: HashMap<Arc<str>, LiveSession>,
    /// Sessions by the second their lease ends in when last filed. A
    /// heartbeat does not re-file; the sweep re-files what it finds still
    /// live, so each session is looked at about once per timeout.
    buckets: BTreeMap<i64, Vec<Arc<str>>>,
    /// Sessions with heartbeats not yet written to the database.
    dirty: Vec<Arc<str>>,
}

/// Live sessions and a cache of keys.
#[derive(Default)]
pub struct Memory {
    table: Mutex<Table>,
    keys: RwLock<HashMap<KeyHash, CachedKey>>,
    /// Bumped whenever cached keys may be stale; a loader that read the
    /// database under an older generation does not insert its result.
    key_generation: AtomicU64,
}

/// The whole second at or after a lease end: bucket `b` holds sessions
/// whose lease (when filed) ended in `((b-1) s, b s]`.
fn bucket_of(expires_at: i64) -> i64 {
    -((-expires_at).div_euclid(1000))
}

impl Memory {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of sessions held.
    pub fn len(&self) -> usize {
        self.table().sessions.len()
    }

    /// Adds (or replaces) a live session.
    pub fn insert(&self, id: &str, session: LiveSession) {
        let mut t = self.table();
        let id: Arc<str> = Arc::from(id);
        t.buckets
            .entry(bucket_of(session.expires_at))
            .or_default()
            .push(id.clone());
        t.sessions.insert(id, session);
    }

    /// Applies the changes of a committed write.
    pub fn apply(&self, changes: Vec<Change>) {
        let mut keys_changed = false;
        let mut seen = Vec::new();
        {
            let mut t = self.table();
            for change in changes {
                match change {
                    Change::Started {
                        id,
                        key_id,
                        fence,
                        at,
                        expires_at,
                    } => {
                        let id: Arc<str> = Arc::from(id);
                        t.buckets
                            .entry(bucket_of(expires_at))
                            .or_default()
                            .push(id.clone());
                        t.sessions.insert(
                            id,
                            LiveSession {
                                key_id: Arc::from(key_id),
                                fence,
                                last_heartbeat: at,
                                expires_at,
                                persisted_heartbeat: at,
                                dirty: false,
                            },
                        );
                    }
                    Change::Extended { id, at, expires_at } => {
                        if let Some(s) = t.sessions.get_mut(id.as_str()) {
                            s.last_heartbeat = s.last_heartbeat.max(at);
                            s.expires_at = s.expires_at.max(expires_at);
                        }
                    }
                    Change::Ended { id } => {
                        t.sessions.remove(id.as_str());
                    }
                    Change::KeysChanged => keys_changed = true,
                    Change::KeySeen { hash, key } => seen.push((hash, key)),
                }
            }
        }
        if keys_changed {
            self.forget_keys();
        }
        if !seen.is_empty() {
            let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
            for (hash, key) in seen {
                keys.insert(hash, key);
            }
        }
    }

    /// The exact heartbeat and lease of a session, if held.
    pub fn lease_of(&self, id: &str) -> Option<(i64, i64)> {
        self.table()
            .sessions
            .get(id)
            .map(|s| (s.last_heartbeat, s.expires_at))
    }

    /// A heartbeat, entirely in memory. `None` when memory cannot answer
    /// (session unknown here, of another key, or no longer live): the
    /// caller then asks the database why.
    pub fn heartbeat(
        &self,
        id: &str,
        key_id: &str,
        clock: &dyn Clock,
        timeout_secs: u64,
    ) -> Option<Beat> {
        let mut t = self.table();
        // Read the clock under the lock: see the module doc.
        let now = clock.now();
        let t = &mut *t;
        let (arc_id, s) = t.sessions.get_key_value(id)?;
        if &*s.key_id != key_id || now.0 >= s.expires_at {
            return None;
        }
        let arc_id = arc_id.clone();
        let s = t.sessions.get_mut(id)?;
        s.last_heartbeat = now.0;
        s.expires_at = now.plus_secs(timeout_secs).0;
        let beat = Beat {
            fence: s.fence,
            at: now,
            expires_at: Timestamp(s.expires_at),
        };
        if !s.dirty {
            s.dirty = true;
            t.dirty.push(arc_id);
        }
        Some(beat)
    }

    /// Sessions whose lease has run out at `now`, with their exact lease
    /// end; live ones found on the way are re-filed by their current lease.
    /// Costs in proportion to the sessions filed in due buckets.
    pub fn due(&self, now: Timestamp) -> Vec<(String, i64)> {
        let mut t = self.table();
        let t = &mut *t;
        let mut expired = Vec::new();
        let current = bucket_of(now.0);
        let due: Vec<i64> = t.buckets.range(..=current).map(|(b, _)| *b).collect();
        let mut refile: Vec<(i64, Arc<str>)> = Vec::new();
        for b in due {
            for id in t.buckets.remove(&b).unwrap_or_default() {
                if let Some(s) = t.sessions.get(&id) {
                    if s.expires_at <= now.0 {
                        expired.push((id.to_string(), s.expires_at));
                    } else {
                        refile.push((bucket_of(s.expires_at), id));
                    }
                }
            }
        }
        for (b, id) in refile {
            t.buckets.entry(b).or_default().push(id);
        }
        expired.sort_unstable();
        expired.dedup();
        expired
    }

    /// Files sessions again for the sweep (after a failed pass).
    pub fn refile(&self, ids: &[(String, i64)]) {
        let mut t = self.table();
        let t = &mut *t;
        for (id, _) in ids {
            if let Some((arc_id, s)) = t.sessions.get_key_value(id.as_str()) {
                let b = bucket_of(s.expires_at);
                let arc_id = arc_id.clone();
                t.buckets.entry(b).or_default().push(arc_id);
            }
        }
    }

    /// Takes the sessions with heartbeats not yet persisted: (id, last
    /// heartbeat). They are marked clean; a later heartbeat marks them
    /// dirty again.
    pub fn take_dirty(&self, max: usize) -> Vec<(String, i64)> {
        let mut t = self.table();
        let t = &mut *t;
        let n = t.dirty.len().min(max);
        let batch: Vec<Arc<str>> = t.dirty.drain(..n).collect();
        batch
            .into_iter()
            .filter_map(|id| {
                let s = t.sessions.get_mut(&id)?;
                s.dirty = false;
                (s.last_heartbeat > s.persisted_heartbeat)
                    .then(|| (id.to_string(), s.last_heartbeat))
            })
            .collect()
    }

    /// Notes heartbeat times written to the database.
    pub fn persisted(&self, written: &[(String, i64)]) {
        let mut t = self.table();
        for (id, at) in written {
            if let Some(s) = t.sessions.get_mut(id.as_str()) {
                s.persisted_heartbeat = s.persisted_heartbeat.max(*at);
            }
        }
    }

    /// Forgets sessions not in `open` (ended by another process).
    pub fn retain_open(&self, open: &std::collections::HashSet<String>) -> usize {
        let mut t = self.table();
        let before = t.sessions.len();
        t.sessions.retain(|id, _| open.contains(&**id));
        before - t.sessions.len()
    }

    /// A cached key, if any.
    pub fn cached_key(&self, hash: &KeyHash) -> Option<CachedKey> {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(hash)
            .cloned()
    }

    /// The generation to pass to [`Memory::cache_key`] for a key about to
    /// be read from the database.
    pub fn key_generation(&self) -> u64 {
        self.key_generation.load(Ordering::SeqCst)
    }

    /// Caches a key read under `generation`, unless keys changed since.
    pub fn cache_key(&self, hash: KeyHash, key: CachedKey, generation: u64) {
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        if self.key_generation.load(Ordering::SeqCst) == generation {
            keys.insert(hash, key);
        }
    }

    /// Drops every cached key.
    pub fn forget_keys(&self) {
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        self.key_generation.fetch_add(1, Ordering::SeqCst);
        keys.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn live(key: &str, at: i64, exp: i64) -> LiveSession {
        LiveSession {
            key_id: Arc::from(key),
            fence: 1,
            last_heartbeat: at,
            expires_at: exp,
            persisted_heartbeat: at,
            dirty: false,
        }
    }

    #[test]
    fn heartbeat_extends_only_live_sessions_of_the_right_key() {
        let m = Memory::default();
        let clock = ManualClock::new(Timestamp(10_000));
        m.insert("s1", live("k1", 10_000, 70_000));
        let beat = m.heartbeat("s1", "k1", &clock, 60).unwrap();
        assert_eq!(beat.expires_at, Timestamp(70_000));
        assert!(m.heartbeat("s1", "k2", &clock, 60).is_none());
        assert!(m.heartbeat("nope", "k1", &clock, 60).is_none());
        clock.set(Timestamp(70_000));
        assert!(
            m.heartbeat("s1", "k1", &clock, 60).is_none(),
            "dead at the lease end"
        );
    }

    #[test]
    fn due_finds_expired_and_refiles_the_rest() {
        let m = Memory::default();
        let clock = ManualClock::new(Timestamp(0));
        m.insert("a", live("k", 0, 5_000));
        m.insert("b", live("k", 0, 5_000));
        clock.set(Timestamp(4_000));
        m.heartbeat("b", "k", &clock, 60).unwrap(); // b now ends at 64 s
        assert_eq!(m.due(Timestamp(5_000)), vec![("a".to_string(), 5_000)]);
        m.apply(vec![Change::Ended { id: "a".into() }]);
        assert!(m.due(Timestamp(10_000)).is_empty());
        assert_eq!(m.due(Timestamp(64_000)), vec![("b".to_string(), 64_000)]);
    }

    #[test]
    fn dirty_sessions_are_taken_once_per_heartbeat_run() {
        let m = Memory::default();
        let clock = ManualClock::new(Timestamp(1_000));
        m.insert("a", live("k", 0, 60_000));
        m.heartbeat("a", "k", &clock, 60).unwrap();
        m.heartbeat("a", "k", &clock, 60).unwrap();
        assert_eq!(m.take_dirty(10), vec![("a".to_string(), 1_000)]);
        assert!(m.take_dirty(10).is_empty());
        m.persisted(&[("a".to_string(), 1_000)]);
        clock.set(Timestamp(2_000));
        m.heartbeat("a", "k", &clock, 60).unwrap();
        assert_eq!(m.take_dirty(10), vec![("a".to_string(), 2_000)]);
    }

    #[test]
    fn stale_key_loads_are_not_cached() {
        let m = Memory::default();
        let g = m.key_generation();
        m.forget_keys();
        let key = CachedKey {
            key_id: Arc::from("k"),
            status: KeyStatus::Active,
            expires_at: None,
        };
        m.cache_key([0; 32], key.clone(), g);
        assert!(m.cached_key(&[0; 32]).is_none());
        m.cache_key([0; 32], key, m.key_generation());
        assert!(m.cached_key(&[0; 32]).is_some());
    }
}
