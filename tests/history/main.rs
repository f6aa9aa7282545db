//! Concurrent history check: many clients hammer three keys over real HTTP
//! for a few seconds; every request is recorded with the instant it was
//! sent and the instant its answer arrived (one shared monotonic clock);
//! then a checker decides whether the recorded history is one the contract
//! allows. See docs/correctness.md for the same explanation with figures.
//!
//! The keys: 1 seat `takeover`, 2 seats `reject`, 3 seats `takeover`. The
//! server runs with heartbeat 1 s and timeout 2 s (the smallest the config
//! accepts) on a manual clock that a ticker moves five times faster than
//! real time, so sessions whose client pauses expire during the run.
//!
//! How the checker decides. Each operation took effect at one instant
//! between its send and its answer (that is all a client can know), and a
//! session's life is one interval: it starts once, and once it is not live
//! it never is again.
//!
//! (a) Never more live sessions than seats, checked twice:
//!   1. From the clients' side. A session is *certainly live* from the
//!      answer to its start until the send of the last request that saw it
//!      live (a heartbeat or start retry answered 200, an end or kick
//!      answered `ended: true`, a status listing it): the start took effect
//!      before its answer, that request took effect after its send, and a
//!      life has no gaps. If more sessions of a key than it has seats are
//!      certainly live at one instant, the server broke the invariant,
//!      whatever the real order was. (Sound but not complete: it can only
//!      miss violations, never invent one.)
//!   2. Exactly, from the server's audit log, replayed in commit order
//!      (event ids). A `session_started` adds a session, an end event
//!      removes it; an expiry is written by the sweep some time after the
//!      lease ran out, so at each start the sessions whose lease had run
//!      out by that start's time (the `session_expired` event's `at`) do not
//!      count. At every start the count, the new session included, must be
//!      at most the seats. After the run the clock is moved past every lease
//!      and the sweep run, so every session must have exactly one end.
//!
//! (b) No heartbeat success after the session's end was acknowledged: once
//!   any client received an answer saying a session is over (its end or
//!   kick answered, a start answer listing it as terminated, a heartbeat
//!   answered 409/410, a start retry answered `session_id_taken`, a status
//!   sent after its start not listing it), no request *sent after that
//!   answer arrived* may see it live.
//!
//! (c) Fences: strictly increasing per key in commit order of the starts,
//!   hence unique; what each client was told equals the logged fence; and a
//!   start sent after another start of the key was answered has the higher
//!   fence (real-time order).
//!
//! Also checked: every start answered 200 is in the log; every supersede a
//! start reported is logged as superseded by that start; every
//! `seats_full` answer is a `start_rejected` event; an expired session's
//! expiry is exactly the lease the last successful heartbeat announced
//! (never early, never late); no 5xx other than 503, no 404 for a session
//! that was started.
//!
//! `HISTORY_SECONDS` (default 4) sets the length of the run.

mod checker_tests;
#[path = "../common/mod.rs"]
mod common;
#[path = "../common/history/mod.rs"]
mod history;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::api::Answered;
use common::TestServer;
use history::check::check;
use history::{all_events, client, Pace, Run, KEYS};

const CLIENTS: usize = 24;
/// The manual clock moves this many milliseconds...
const TICK_SERVER_MS: i64 = 25;
/// ...every this many real milliseconds (5x real time).
const TICK_REAL_MS: u64 = 5;
const TIMEOUT_MS: i64 = 2_000;

/// Many clients on three keys for a few seconds; the recorded history must
/// never show more live sessions than seats, a heartbeat success after an
/// acknowledged end, or a fence out of order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_history_keeps_the_seat_invariant() {
    let secs: f64 = std::env::var("HISTORY_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4.0);
    let seed: u64 = std::env::var("HISTORY_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    let s = TestServer::start_with(|c| {
        c.heartbeat_interval_seconds = 1;
        c.session_timeout_seconds = (TIMEOUT_MS / 1000) as u64;
        c.sweep_interval_seconds = 1;
    })
    .await;
    let api = s.api();
    let mut keys = Vec::new();
    let mut key_ids = Vec::new();
    for (seats, policy) in KEYS {
        let body = history::key_body(seats, policy);
        let created = api.create_key(body).await.answer("create key");
        keys.push(created.access_key);
        key_ids.push(created.key.key_id);
    }

    // The server's clock runs 5x faster than real time.
    let ticking = Arc::new(AtomicBool::new(true));
    let ticker = {
        let (clock, ticking) = (s.clock.clone(), ticking.clone());
        std::thread::spawn(move || {
            while ticking.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(TICK_REAL_MS));
                clock.advance_millis(TICK_SERVER_MS);
            }
        })
    };

    let began = Instant::now();
    let server_began = s.now();
    let until = began + Duration::from_secs_f64(secs);
    let run = Run {
        servers: Arc::new(vec![s.api()]),
        keys: Arc::new(keys),
        known: Arc::new(Mutex::new(Vec::new())),
        t0: began,
        until,
        // The timeout is 400 ms of real time.
        pace: Pace {
            near_timeout_chance: 0.1,
            near_timeout: 300..500,
            quiet: 300..900,
        },
    };
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|id| tokio::spawn(client(id, seed, run.clone())))
        .collect();
    let mut recs = Vec::new();
    for t in tasks {
        recs.extend(t.await.expect("client task"));
    }
    ticking.store(false, Ordering::Relaxed);
    ticker.join().unwrap();
    let server_secs = (s.now().millis() - server_began.millis()) as f64 / 1e3;
    let real_secs = began.elapsed().as_secs_f64();

    // Every lease runs out; the sweep records each expiry.
    s.clock.advance_millis(TIMEOUT_MS + 1_000);
    let store = s.store();
    let now = s.now();
    keyseat::store::blocking(move || store.sweep(now, 30, false))
        .await
        .expect("sweep");
    let events = all_events(&api).await;

    let mut violations = Vec::new();
    let stats = check(&recs, &events, &key_ids, &mut violations);
    eprintln!(
        "history: {} ops by {CLIENTS} clients in {real_secs:.1} s (server clock: \
         {server_secs:.1} s) checked against {} events (seed {seed}); {} starts ok, {} borrowed, {} rejected, {} superseded, {} expired, {} shed; \
         max live per key: certain {:?}, in log {:?}, seats {:?}",
        stats.ops,
        stats.events,
        stats.starts_ok,
        stats.borrowed,
        stats.rejected,
        stats.superseded,
        stats.expired,
        stats.shed,
        stats.max_certainly_live,
        stats.max_live_in_log,
        KEYS.map(|(n, _)| n),
    );
    for (k, types) in stats.by_type.iter().enumerate() {
        eprintln!("  key {k} {:?}: {types:?}", KEYS[k]);
    }
    assert!(
        violations.is_empty(),
        "{} violation(s) (HISTORY_SEED={seed} to rerun the same clients):\n{}",
        violations.len(),
        violations
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The run must have exercised what it checks.
    assert!(
        stats.starts_ok > 50
            && stats.borrowed > 0
            && stats.superseded > 5
            && stats.rejected > 5
            && stats.expired > 0,
        "too little happened to prove anything: {stats:?}"
    );
}
