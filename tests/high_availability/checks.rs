//! What the scenarios check while the topology is disturbed: that every
//! device still holds its seat (asked of the clients, continuously, and of
//! the servers, through nginx), and what the clients had to retry.

use std::time::{Duration, Instant};

use keyseat::client::Session;

use crate::devices::Events;
use crate::topology::Topology;

/// Asserts every session still holds its seat by its own client, naming
/// the one that lost it, with every device's events.
pub fn assert_all_usable(sessions: &[Session], events: &Events) {
    for s in sessions {
        assert!(
            s.is_usable(),
            "{} lost its seat: {:?}\nevents: {:?}",
            s.id(),
            s.state(),
            events.lock().unwrap()
        );
    }
}

/// [`assert_all_usable`] every 100 ms until `until`: a seat lost for a
/// moment fails too.
pub fn keep_all_usable(sessions: &[Session], events: &Events, until: Instant) {
    while Instant::now() < until {
        assert_all_usable(sessions, events);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asserts every session is live by the servers, asked through nginx
/// with the keys they were started on.
pub fn assert_all_live(topo: &Topology, keys: &[String], sessions: &[Session]) -> Vec<String> {
    let live: Vec<String> = keys.iter().flat_map(|k| topo.live(k)).collect();
    for s in sessions {
        assert!(live.iter().any(|id| id == s.id()), "{} is not live", s.id());
    }
    live
}

/// The heartbeats that failed at the clients (and were retried).
pub fn failed_heartbeats(events: &Events) -> Vec<String> {
    events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.contains("HeartbeatFailed"))
        .cloned()
        .collect()
}

/// Polls `done` every 50 ms until it holds; panics with `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
