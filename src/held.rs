//! Held heartbeats (docs/api.md, "Waiting heartbeat"): a heartbeat with
//! `wait_seconds` is answered when the wait is over, or at once when its
//! session ends, so a device learns of a takeover within milliseconds with
//! one request per interval.
//!
//! Why this shape: a held heartbeat is a parked future, not a thread. Each
//! session with held heartbeats has one [`Notify`] here, found by id; the
//! store calls [`Held::ended`] for every session that ends, whatever ended
//! it (a takeover, an end, a kick, a key change, the sweep, another process
//! on the file, another server on PostgreSQL), and the woken handler asks
//! the store again, which gives the end's precise answer. A wake is only a
//! hint to look again: a spurious one costs one lookup, never a wrong
//! answer. The entry goes when its last waiter does (answered, or its
//! client gone), so memory follows the heartbeats held now.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::pin::Pin;

use tokio::sync::futures::Notified;
use tokio::sync::{watch, Notify};

/// Held heartbeats, by session id.
pub struct Held {
    slots: Mutex<HashMap<Arc<str>, Slot>>,
    /// Set when the server stops: every held heartbeat is answered at once.
    stopping: watch::Sender<bool>,
    /// Heartbeats held right now.
    now_held: AtomicUsize,
}

struct Slot {
    notify: Arc<Notify>,
    waiters: usize,
}

impl Default for Held {
    fn default() -> Self {
        Held {
            slots: Mutex::new(HashMap::new()),
            stopping: watch::channel(false).0,
            now_held: AtomicUsize::new(0),
        }
    }
}

/// How a held heartbeat's wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// The wait ran its full time.
    Elapsed,
    /// The session may have ended: look again.
    Woken,
    /// The server is stopping: answer now.
    Stopping,
}

impl Held {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a wait on `session_id`. Register *before* the heartbeat
    /// that renews the lease: an end committed after that heartbeat's read
    /// then wakes this wait.
    pub fn watch(self: &Arc<Self>, session_id: &str) -> Watch {
        let mut slots = self.slots();
        let slot = slots.entry(Arc::from(session_id)).or_insert_with(|| Slot {
            notify: Arc::new(Notify::new()),
            waiters: 0,
        });
        slot.waiters += 1;
        let notify = slot.notify.clone();
        drop(slots);
        self.now_held.fetch_add(1, Ordering::Relaxed);
        Watch {
            held: self.clone(),
            id: session_id.to_owned(),
            notify,
        }
    }

    /// The session ended: wakes its held heartbeats (called by the store
    /// after the end is visible to a lookup).
    pub fn ended(&self, session_id: &str) {
        let notify = self.slots().get(session_id).map(|s| s.notify.clone());
        if let Some(n) = notify {
            n.notify_waiters();
        }
    }

    /// Wakes every held heartbeat to look again (a lost notification
    /// channel may have missed ends).
    pub fn recheck_all(&self) {
        let all: Vec<Arc<Notify>> = self.slots().values().map(|s| s.notify.clone()).collect();
        for n in all {
            n.notify_waiters();
        }
    }

    /// The server is stopping: held heartbeats are answered at once, with
    /// 200, so their clients heartbeat again elsewhere.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Heartbeats held right now.
    pub fn held_now(&self) -> usize {
        self.now_held.load(Ordering::Relaxed)
    }

    /// Sessions with held heartbeats (for tests: an entry must go with
    /// its last waiter).
    pub fn sessions_watched(&self) -> usize {
        self.slots().len()
    }
}

/// One held heartbeat's registration; dropping it (answered, or the
/// client went away and the handler was dropped) frees it.
pub struct Watch {
    held: Arc<Held>,
    id: String,
    notify: Arc<Notify>,
}

impl Watch {
    /// Waits up to `limit`, or until the session may have ended, or the
    /// server stops. `notified` comes from [`Watch::armed`], taken before
    /// the heartbeat it follows, so an end between the two is not lost.
    pub async fn wait(&self, notified: Pin<&mut Notified<'_>>, limit: Duration) -> Waited {
        let mut stopping = self.held.stopping.subscribe();
        if *stopping.borrow_and_update() {
            return Waited::Stopping;
        }
        tokio::select! {
            // An end that comes with the timer wins: never a 200 for it.
            biased;
            _ = notified => Waited::Woken,
            _ = tokio::time::sleep(limit) => Waited::Elapsed,
            _ = stopping.wait_for(|s| *s) => Waited::Stopping,
        }
    }

    /// A `Notified` for this session, already enabled: take it before the
    /// heartbeat (or the look again) it follows, then pass it to
    /// [`Watch::wait`].
    pub fn armed(&self) -> Pin<Box<Notified<'_>>> {
        let mut notified = Box::pin(self.notify.notified());
        notified.as_mut().enable();
        notified
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.held.now_held.fetch_sub(1, Ordering::Relaxed);
        let mut slots = self.held.slots();
        if let Some(slot) = slots.get_mut(self.id.as_str()) {
            slot.waiters -= 1;
            if slot.waiters == 0 {
                slots.remove(self.id.as_str());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_end_wakes_the_wait_and_the_entry_goes_with_its_waiter() {
        let held = Arc::new(Held::default());
        let w = held.watch("s1");
        {
            let mut notified = w.armed();
            // An end between the registration and the wait is not lost.
            held.ended("s1");
            held.ended("other");
            assert_eq!(
                w.wait(notified.as_mut(), Duration::from_secs(5)).await,
                Waited::Woken
            );
        }
        assert_eq!((held.held_now(), held.sessions_watched()), (1, 1));
        drop(w);
        assert_eq!((held.held_now(), held.sessions_watched()), (0, 0));
    }

    #[tokio::test]
    async fn a_wait_runs_out_and_a_stop_answers_at_once() {
        let held = Arc::new(Held::default());
        let w = held.watch("s1");
        let mut notified = w.armed();
        assert_eq!(
            w.wait(notified.as_mut(), Duration::from_millis(20)).await,
            Waited::Elapsed
        );
        held.stop();
        let mut notified = w.armed();
        assert_eq!(
            w.wait(notified.as_mut(), Duration::from_secs(5)).await,
            Waited::Stopping
        );
    }
}
