//! The server's in-memory view of live sessions: the source of truth for
//! liveness while the server runs.
//!
//! Why memory: heartbeats are almost all of a license server's traffic, and
//! the contract's restart rule (every session live at a stop gets a full
//! timeout after the restart) means a heartbeat's timestamp need not be
//! durable. So a heartbeat is a hash lookup and two integer writes under a
//! mutex, with no disk write and no thread hand-off; heartbeat times reach
//! the database lazily, in batches (see `LiveStore::maintain`).
//!
//! Each session carries what a heartbeat must check of its key: a tag (the
//! first 8 bytes of the key's SHA-256, so the presented key must match) and
//! the key's expiry. Revoking or suspending a key ends its sessions, so a
//! session held here always belongs to a usable key, and no key cache is
//! needed: a heartbeat never misses, even right after a restart.
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
use std::sync::{Arc, Mutex, MutexGuard};

use crate::clock::{Clock, Timestamp};

/// `i64::MAX` stands for "the key never expires".
pub const NEVER: i64 = i64::MAX;

/// A live session as memory keeps it (about 140 bytes with its map entry,
/// id and sweep bucket entry).
#[derive(Debug, Clone)]
pub struct LiveSession {
    /// Tag of its key.
    pub key_tag: u64,
    /// Its key's expiry ([`NEVER`] if none).
    pub key_expires_at: i64,
    /// Its fence.
    pub fence: i64,
    /// Last heartbeat, exact.
    pub last_heartbeat: i64,
    /// Lease end, exact: live while `now < expires_at`.
    pub expires_at: i64,
    /// The end of its borrow (0 if never borrowed): no heartbeat or
    /// restart shortens its lease below this.
    pub borrowed_until: i64,
    /// Has a heartbeat not yet written to the database.
    pub dirty: bool,
}

/// What a committed write changes in memory.
#[derive(Debug, Clone)]
pub enum Change {
    /// A session started.
    Started {
        /// Session id.
        id: String,
        /// The session as memory keeps it.
        session: LiveSession,
    },
    /// A session's lease was extended by a durable write (a start retry).
    Extended {
        /// Session id.
        id: String,
        /// New heartbeat time.
        at: i64,
        /// New exact lease end.
        expires_at: i64,
        /// A new borrow's end, if it was borrowed.
        borrowed_until: Option<i64>,
    },
    /// A session ended (any reason).
    Ended {
        /// Session id.
        id: String,
    },
    /// A key's expiry changed: its sessions carry the new one.
    KeyExpiry {
        /// The key's tag.
        key_tag: u64,
        /// The new expiry ([`NEVER`] if none).
        expires_at: i64,
    },
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

/// What memory says to a heartbeat: the answer itself, or that only the
/// database can give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryAnswer {
    /// Live: the lease is extended.
    Beat(Beat),
    /// The session is live but its key's expiry has passed.
    KeyExpired,
    /// Memory cannot say (unknown id, another key, lease run out): ask the
    /// database why.
    NeedsDatabase,
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

/// Live sessions.
#[derive(Default)]
pub struct Memory {
    table: Mutex<Table>,
    /// Told of every session memory drops (it ended), after the lock.
    on_end: std::sync::OnceLock<crate::store::EndListener>,
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

    /// Makes room for `n` more sessions (start-up).
    pub fn reserve(&self, n: usize) {
        self.table().sessions.reserve(n);
    }

    /// Gives every held session a lease ending no earlier than `floor`
    /// (start-up, after loading took a while).
    pub fn raise_leases_to(&self, floor: i64) {
        let mut t = self.table();
        for s in t.sessions.values_mut() {
            s.expires_at = s.expires_at.max(floor);
        }
    }

    /// Sets every held session's lease to `rule(lease)` (after a gap in
    /// the server's progress, [`crate::rules::lease_after_gap`]). Returns
    /// how many leases changed.
    pub fn relet(&self, rule: impl Fn(Timestamp) -> Timestamp) -> usize {
        let mut t = self.table();
        let mut n = 0;
        for s in t.sessions.values_mut() {
            let lease = rule(Timestamp(s.expires_at)).0;
            if lease != s.expires_at {
                s.expires_at = lease;
                n += 1;
            }
        }
        n
    }

    /// Adds (or replaces) a live session.
    pub fn insert(&self, id: &str, session: LiveSession) {
        let mut t = self.table();
        insert(&mut t, id, session);
    }

    /// Who is told of every session that ends (set once).
    pub fn set_end_listener(&self, listener: crate::store::EndListener) {
        let _ = self.on_end.set(listener);
    }

    fn tell_ended(&self, ids: &[String]) {
        if let Some(tell) = self.on_end.get() {
            ids.iter().for_each(|id| tell(Some(id)));
        }
    }

    /// Applies the changes of a committed write.
    pub fn apply(&self, changes: Vec<Change>) {
        let mut ended = Vec::new();
        {
            let mut t = self.table();
            self.apply_locked(&mut t, changes, &mut ended);
        }
        self.tell_ended(&ended);
    }

    fn apply_locked(&self, t: &mut Table, changes: Vec<Change>, ended: &mut Vec<String>) {
        for change in changes {
            match change {
                Change::Started { id, session } => insert(t, &id, session),
                Change::Extended {
                    id,
                    at,
                    expires_at,
                    borrowed_until,
                } => {
                    if let Some(s) = t.sessions.get_mut(id.as_str()) {
                        s.last_heartbeat = s.last_heartbeat.max(at);
                        s.expires_at = s.expires_at.max(expires_at);
                        if let Some(until) = borrowed_until {
                            s.borrowed_until = s.borrowed_until.max(until);
                        }
                    }
                }
                Change::Ended { id } => {
                    // Told even if memory did not hold it: a wake is cheap.
                    t.sessions.remove(id.as_str());
                    ended.push(id);
                }
                Change::KeyExpiry {
                    key_tag,
                    expires_at,
                } => {
                    // Rare (an admin changed a key's expiry): a full scan.
                    for s in t.sessions.values_mut().filter(|s| s.key_tag == key_tag) {
                        s.key_expires_at = expires_at;
                    }
                }
            }
        }
    }

    /// Sessions live at `now` (lease and key expiry both ahead): the
    /// metrics gauge. A scan under the lock, so meant for scrape rates
    /// (about 5 ms per million sessions), not for request paths.
    pub fn count_live(&self, now: Timestamp) -> u64 {
        self.table()
            .sessions
            .values()
            .filter(|s| now.0 < s.expires_at && now.0 < s.key_expires_at)
            .count() as u64
    }

    /// The exact heartbeat and lease of a session, if held.
    pub fn lease_of(&self, id: &str) -> Option<(i64, i64)> {
        self.table()
            .sessions
            .get(id)
            .map(|s| (s.last_heartbeat, s.expires_at))
    }

    /// A heartbeat, entirely in memory.
    pub fn heartbeat(
        &self,
        id: &str,
        key_tag: u64,
        clock: &dyn Clock,
        timeout_secs: u64,
    ) -> MemoryAnswer {
        let mut t = self.table();
        // Read the clock under the lock: see the module doc.
        let now = clock.now();
        let t = &mut *t;
        let Some((arc_id, s)) = t.sessions.get_key_value(id) else {
            return MemoryAnswer::NeedsDatabase;
        };
        if s.key_tag != key_tag || now.0 >= s.expires_at {
            return MemoryAnswer::NeedsDatabase;
        }
        if now.0 >= s.key_expires_at {
            return MemoryAnswer::KeyExpired;
        }
        let arc_id = arc_id.clone();
        let Some(s) = t.sessions.get_mut(id) else {
            return MemoryAnswer::NeedsDatabase;
        };
        s.last_heartbeat = now.0;
        s.expires_at = now.plus_secs(timeout_secs).0.max(s.borrowed_until);
        let beat = Beat {
            fence: s.fence,
            at: now,
            expires_at: Timestamp(s.expires_at),
        };
        if !s.dirty {
            s.dirty = true;
            t.dirty.push(arc_id);
        }
        MemoryAnswer::Beat(beat)
    }

    /// Up to `max` sessions whose lease has run out at `now`, with their
    /// exact lease end; live ones found on the way are re-filed by their
    /// current lease. Costs in proportion to the entries looked at.
    pub fn due(&self, now: Timestamp, max: usize) -> Vec<(String, i64)> {
        let mut t = self.table();
        let t = &mut *t;
        let mut expired = Vec::new();
        let current = last_due_bucket(now);
        let mut refile: Vec<(i64, Arc<str>)> = Vec::new();
        // Bound the work done under the lock, live entries included: a
        // second with a million leases is handed out over several calls.
        let mut examined = 0;
        while expired.len() < max && examined < max * 8 {
            let Some((&b, _)) = t.buckets.range(..=current).next() else {
                break;
            };
            let mut ids = t.buckets.remove(&b).unwrap_or_default();
            while let Some(id) = ids.pop() {
                examined += 1;
                if let Some(s) = t.sessions.get(&id) {
                    if s.expires_at <= now.0 {
                        expired.push((id.to_string(), s.expires_at));
                    } else {
                        refile.push((bucket_of(s.expires_at), id));
                    }
                }
                if expired.len() >= max || examined >= max * 8 {
                    break;
                }
            }
            if !ids.is_empty() {
                t.buckets.insert(b, ids);
            }
        }
        for (b, id) in refile {
            t.buckets.entry(b).or_default().push(id);
        }
        expired.sort_unstable();
        expired.dedup();
        expired
    }

    /// Whether any sweep bucket is due at `now` (more for [`Memory::due`]).
    pub fn has_due(&self, now: Timestamp) -> bool {
        self.table()
            .buckets
            .range(..=last_due_bucket(now))
            .next()
            .is_some()
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

    /// Takes up to `max` sessions with heartbeats not yet persisted: (id,
    /// last heartbeat). They are marked clean; a later heartbeat marks them
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
                Some((id.to_string(), s.last_heartbeat))
            })
            .collect()
    }

    /// Marks sessions dirty again (their flush failed).
    pub fn mark_dirty(&self, ids: &[String]) {
        let mut t = self.table();
        let t = &mut *t;
        for id in ids {
            if let Some((arc_id, s)) = t.sessions.get_key_value(id.as_str()) {
                if !s.dirty {
                    let arc_id = arc_id.clone();
                    if let Some(s) = t.sessions.get_mut(id.as_str()) {
                        s.dirty = true;
                    }
                    t.dirty.push(arc_id);
                }
            }
        }
    }

    /// Forgets sessions by id (ended by another process).
    pub fn remove_all(&self, ids: &[String]) -> usize {
        let removed: Vec<String> = {
            let mut t = self.table();
            ids.iter()
                .filter(|id| t.sessions.remove(id.as_str()).is_some())
                .cloned()
                .collect()
        };
        self.tell_ended(&removed);
        removed.len()
    }
}

/// The last bucket wholly in the past at `now`. A live session re-filed by
/// [`Memory::due`] always lands in a later one, so every call makes
/// progress and the sweep's loop ends.
fn last_due_bucket(now: Timestamp) -> i64 {
    now.0.div_euclid(1000)
}

fn insert(t: &mut Table, id: &str, session: LiveSession) {
    let id: Arc<str> = Arc::from(id);
    t.buckets
        .entry(bucket_of(session.expires_at))
        .or_default()
        .push(id.clone());
    t.sessions.insert(id, session);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn live(tag: u64, at: i64, exp: i64) -> LiveSession {
        LiveSession {
            key_tag: tag,
            key_expires_at: NEVER,
            fence: 1,
            last_heartbeat: at,
            expires_at: exp,
            borrowed_until: 0,
            dirty: false,
        }
    }

    fn beat(a: MemoryAnswer) -> Beat {
        match a {
            MemoryAnswer::Beat(b) => b,
            other => panic!("expected a beat, got {other:?}"),
        }
    }

    #[test]
    fn heartbeat_extends_only_live_sessions_of_the_right_key() {
        let m = Memory::default();
        let clock = ManualClock::new(Timestamp(10_000));
        m.insert("s1", live(1, 10_000, 70_000));
        assert_eq!(
            beat(m.heartbeat("s1", 1, &clock, 60)).expires_at,
            Timestamp(70_000)
        );
        assert_eq!(
            m.heartbeat("s1", 2, &clock, 60),
            MemoryAnswer::NeedsDatabase
        );
        assert_eq!(
            m.heartbeat("nope", 1, &clock, 60),
            MemoryAnswer::NeedsDatabase
        );
        clock.set(Timestamp(70_000));
        assert_eq!(
            m.heartbeat("s1", 1, &clock, 60),
            MemoryAnswer::NeedsDatabase,
            "dead at the lease end"
        );
    }

    /// A frozen server: the sessions live when it froze get a full timeout
    /// from the end of the freeze; a session already dead stays dead.
    #[test]
    fn after_a_gap_sessions_live_at_its_start_get_a_full_timeout() {
        let m = Memory::default();
        m.insert("alive", live(1, 10_000, 13_000));
        m.insert("dead", live(1, 5_000, 8_000));
        let gap = crate::clock::Gap {
            from: Timestamp(11_000),
            to: Timestamp(17_000),
        };
        let timing = crate::rules::Timing {
            heartbeat_interval_secs: 1,
            session_timeout_secs: 3,
        };
        let rule = |lease| crate::rules::lease_after_gap(lease, gap, timing);
        assert_eq!(m.relet(rule), 1);
        let clock = ManualClock::new(Timestamp(19_999));
        assert_eq!(
            beat(m.heartbeat("alive", 1, &clock, 3)).expires_at,
            Timestamp(22_999)
        );
        assert_eq!(
            m.heartbeat("dead", 1, &clock, 3),
            MemoryAnswer::NeedsDatabase
        );
    }

    #[test]
    fn key_expiry_is_exact_and_can_change() {
        let m = Memory::default();
        let clock = ManualClock::new(Timestamp(0));
        let mut s = live(7, 0, 60_000);
        s.key_expires_at = 5_000;
        m.insert("s", s);
        clock.set(Timestamp(4_999));
        beat(m.heartbeat("s", 7, &clock, 60));
        clock.set(Timestamp(5_000));
        assert_eq!(m.heartbeat("s", 7, &clock, 60), MemoryAnswer::KeyExpired);
        m.apply(vec![Change::KeyExpiry {
            key_tag: 7,
            expires_at: NEVER,
        }]);
        beat(m.heartbeat("s", 7, &clock, 60));
    }

    /// A heartbeat on a borrowed session never shortens its borrow.
    #[test]
    fn a_heartbeat_keeps_a_borrowed_lease() {
        let m = Memory::default();
        let clock = ManualClock::new(Timestamp(1_000));
        let mut s = live(1, 1_000, 3_600_000);
        s.borrowed_until = 3_600_000;
        m.insert("b", s);
        assert_eq!(
            beat(m.heartbeat("b", 1, &clock, 60)).expires_at,
            Timestamp(3_600_000)
        );
        clock.set(Timestamp(3_590_000));
        assert_eq!(
            beat(m.heartbeat("b", 1, &clock, 60)).expires_at,
            Timestamp(3_650_000)
        );
    }

    #[test]
    fn due_finds_expired_and_refiles_the_rest() {
        let m = Memory::default();
        let clock = ManualClock::new(Timestamp(0));
        m.insert("a", live(1, 0, 5_000));
        m.insert("b", live(1, 0, 5_000));
        clock.set(Timestamp(4_000));
        beat(m.heartbeat("b", 1, &clock, 60)); // b now ends at 64 s
        assert_eq!(m.due(Timestamp(5_000), 10), vec![("a".to_string(), 5_000)]);
        m.apply(vec![Change::Ended { id: "a".into() }]);
        assert!(m.due(Timestamp(10_000), 10).is_empty());
        assert_eq!(
            m.due(Timestamp(64_000), 10),
            vec![("b".to_string(), 64_000)]
        );
    }

    /// Whatever due() leaves, has_due() agrees with: the sweep's loop
    /// (call due until has_due is false) always ends.
    #[test]
    fn due_and_has_due_agree() {
        let m = Memory::default();
        let clock = ManualClock::new(Timestamp(0));
        m.insert("late", live(1, 0, 5_800)); // bucket 6
        m.insert("soon", live(1, 0, 5_300)); // bucket 6
        m.insert("gone", live(1, 0, 4_000)); // bucket 4
        clock.set(Timestamp(3_000));
        beat(m.heartbeat("late", 1, &clock, 60));
        let now = Timestamp(5_500);
        let mut rounds = 0;
        let mut found = Vec::new();
        loop {
            let due = m.due(now, 1);
            found.extend(due.iter().map(|(id, _)| id.clone()));
            if due.is_empty() && !m.has_due(now) {
                break;
            }
            rounds += 1;
            assert!(rounds < 10, "the sweep loop must end");
        }
        assert_eq!(found, vec!["gone".to_string()]);
        // "soon" (ended at 5.3 s) is in bucket 6, due once 6 s have passed.
        assert_eq!(
            m.due(Timestamp(6_000), 10),
            vec![("soon".to_string(), 5_300)]
        );
    }

    #[test]
    fn raised_leases_are_seen_by_heartbeats_and_the_sweep() {
        let m = Memory::default();
        let clock = ManualClock::new(Timestamp(0));
        m.insert("a", live(1, 0, 5_000));
        m.raise_leases_to(9_000);
        clock.set(Timestamp(8_000));
        assert_eq!(
            beat(m.heartbeat("a", 1, &clock, 60)).expires_at,
            Timestamp(68_000)
        );
        assert!(m.due(Timestamp(8_000), 10).is_empty());
    }

    #[test]
    fn due_hands_out_at_most_max_at_a_time() {
        let m = Memory::default();
        for i in 0..25 {
            m.insert(&format!("s{i}"), live(1, 0, 5_000));
        }
        let mut seen = 0;
        loop {
            let batch = m.due(Timestamp(6_000), 10);
            assert!(batch.len() <= 10);
            if batch.is_empty() {
                break;
            }
            seen += batch.len();
            m.apply(
                batch
                    .into_iter()
                    .map(|(id, _)| Change::Ended { id })
                    .collect(),
            );
        }
        assert_eq!(seen, 25);
    }

    #[test]
    fn dirty_sessions_are_taken_once_per_heartbeat_run() {
        let m = Memory::default();
        let clock = ManualClock::new(Timestamp(1_000));
        m.insert("a", live(1, 0, 60_000));
        beat(m.heartbeat("a", 1, &clock, 60));
        beat(m.heartbeat("a", 1, &clock, 60));
        assert_eq!(m.take_dirty(10), vec![("a".to_string(), 1_000)]);
        assert!(m.take_dirty(10).is_empty());
        clock.set(Timestamp(2_000));
        beat(m.heartbeat("a", 1, &clock, 60));
        assert_eq!(m.take_dirty(10), vec![("a".to_string(), 2_000)]);
    }
}
