//! Crash loop against the real binary: nothing acknowledged is ever lost.
//!
//! Each iteration starts `keyseat serve` on the same database (the SQLite
//! file, or with `KEYSEAT_TEST_ENGINE=postgres` a fresh PostgreSQL database), runs
//! load from several concurrent clients (starts on `takeover` and `reject`
//! keys, heartbeats, ends, admin key creation, revocation and kicks), and
//! SIGKILLs the server at a random moment: usually under load, sometimes
//! while it is still starting (recovery itself interrupted). With the server
//! down it opens the file and checks:
//!
//! - `PRAGMA integrity_check` is `ok`;
//! - every acknowledged (2xx received) start has its session row with the
//!   fence the client was given and a `session_started` event; every
//!   acknowledged end, supersede and kick has the reason the client was
//!   told; every acknowledged key creation has its key, and every
//!   acknowledged revocation left the key revoked with no open session;
//! - the seat invariant: replaying the audit log in commit order (event
//!   ids), no key ever has more live sessions than seats (as
//!   `tests/concurrency.rs` decides it).
//!
//! Then it restarts the server and, while it starts, probes it with
//! requests whose right answer is known (health, status of a good and of a
//! revoked key, a heartbeat of an ended session): every answer must be that
//! right answer or 503 `unavailable`. Once ready, every operation
//! acknowledged in the iteration just killed is checked again over HTTP
//! (ended sessions answer their reason, revoked keys `key_revoked`, created
//! keys work, sessions acknowledged live are never `session_not_found`),
//! and the live sessions per key are within the seat limit.
//!
//! Any 5xx other than 503 `unavailable`, any panic in the server log, or a
//! dropped connection before the kill fails the test.
//!
//! Length: `KEYSEAT_CRASH_ITERATIONS` (default 20, about 30-60 s in a debug
//! build on a loaded 2-core machine); `KEYSEAT_CRASH_SEED` replays a run
//! (the seed is printed). A longer run:
//! `KEYSEAT_CRASH_ITERATIONS=200 cargo test --test crash_loop -- --nocapture`.

#[path = "../common/mod.rs"]
mod common;
mod file;
mod load;
mod model;
mod probe;

use std::fs::File;
use std::path::{Path, PathBuf};

use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::api::Api;
use file::{check_facts, read_facts};
use load::Load;
use model::{lock, Shared};
use probe::{check_over_http, create_initial_keys, probe_start_up};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ADMIN_TOKEN: &str = "crash-loop-admin-token-0123456789";
const WORKERS: usize = 4;

// ---------------------------------------------------------------------------
// The real server

struct Proc {
    child: Child,
    url: String,
    log: PathBuf,
}

/// A test that fails leaves no server behind.
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Its API, with the admin token.
    fn api(&self) -> Api {
        Api::new(&self.url).with_admin(ADMIN_TOKEN)
    }
}

/// Spawns `keyseat serve` on `db` at a fresh port; does not wait for it.
fn spawn(db: &str, log: &Path) -> Proc {
    let port = common::free_port();
    let mut cmd = common::serve_command(db, port);
    cmd.env("KEYSEAT_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("KEYSEAT_RATE_LIMITS", "off")
        // Long enough that nothing expires during the run: every answer
        // can be predicted from acknowledged operations alone.
        .env("KEYSEAT_SESSION_TIMEOUT_SECONDS", "3600")
        .env("KEYSEAT_HEARTBEAT_INTERVAL_SECONDS", "30")
        // Frequent background writes (sweep marks, heartbeat flushes), so
        // kills also land in the middle of those.
        .env("KEYSEAT_SWEEP_INTERVAL_SECONDS", "1")
        .env("KEYSEAT_HEARTBEAT_PERSIST_SECONDS", "1")
        .env("KEYSEAT_LOG", "warn")
        .stderr(File::create(log).unwrap());
    Proc {
        child: cmd.spawn().expect("spawn keyseat serve"),
        url: format!("http://127.0.0.1:{port}"),
        log: log.to_owned(),
    }
}

fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

fn kill(p: &mut Proc) {
    p.child.kill().expect("SIGKILL");
    p.child.wait().unwrap();
    let log = log_text(&p.log);
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
}

/// SIGKILLs under load and during start-up, again and again, lose nothing
/// acknowledged: the file, the answers while starting and the answers once
/// ready all agree with every operation a client was told succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    let iterations: usize = std::env::var("KEYSEAT_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("KEYSEAT_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("crash loop: {iterations} iterations, KEYSEAT_CRASH_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    // The SQLite file, or on PostgreSQL a fresh database.
    let db = common::test_database(dir.path()).await;
    let model: Shared = Arc::default();
    let began = Instant::now();
    let mut facts_checked = 0;
    let mut http_checked = 0;
    let mut unavailable_seen = 0;
    let mut kills_in_start_up = 0;
    let mut requests = 0;

    for iteration in 0..iterations {
        let log = dir.path().join(format!("server-{iteration}.log"));
        let mut p = spawn(&db, &log);

        if iteration > 0 && rng.gen_bool(0.2) {
            // Kill it while it opens the file and recovers, then start
            // again: an interrupted recovery must lose nothing either.
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..60))).await;
            kill(&mut p);
            kills_in_start_up += 1;
            let facts = read_facts(&db).await;
            facts_checked += check_facts(&facts, &lock(&model));
            p = spawn(&db, &log);
        }

        let snapshot = lock(&model).snapshot();
        if iteration == 0 {
            // Nothing to probe yet: wait for readiness, then make keys.
            let api = p.api();
            let deadline = Instant::now() + Duration::from_secs(60);
            while api.health().await.is_err() {
                assert!(Instant::now() < deadline, "{}", log_text(&p.log));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            create_initial_keys(&p, &model).await;
        } else {
            unavailable_seen += probe_start_up(&mut p, &snapshot).await;
            http_checked += check_over_http(&p, &snapshot).await;
        }
        lock(&model).recent.clear();

        // Load, then SIGKILL at a random moment.
        let killed = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let api = p.api().with_timeout(Duration::from_secs(30));
        let workers: Vec<_> = (0..WORKERS)
            .map(|worker| {
                let load = Load {
                    api: api.clone(),
                    model: model.clone(),
                    killed: killed.clone(),
                    iteration,
                    worker,
                    sent: sent.clone(),
                };
                tokio::spawn(load.run(rng.gen()))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..1500))).await;
        killed.store(true, Ordering::SeqCst);
        kill(&mut p);
        for w in workers {
            w.await.unwrap();
        }
        requests += sent.load(Ordering::Relaxed);
        let facts = read_facts(&db).await;
        let m = lock(&model);
        assert!(
            m.errors.is_empty(),
            "wrong answers:\n{}",
            m.errors.join("\n")
        );
        facts_checked += check_facts(&facts, &m);
    }

    // A last start and check of everything that was ever acknowledged.
    let log = dir.path().join("server-final.log");
    let mut p = spawn(&db, &log);
    let snapshot = lock(&model).snapshot();
    unavailable_seen += probe_start_up(&mut p, &snapshot).await;
    http_checked += check_over_http(&p, &snapshot).await;
    kill(&mut p);

    let m = lock(&model);
    let acked: usize = m.acked.values().sum();
    let mut kinds: Vec<_> = m.acked.iter().collect();
    kinds.sort();
    println!(
        "crash loop: {iterations} iterations ({kills_in_start_up} extra kills during start-up) in {:.1} s, \
         {requests} requests; acknowledged operations: {acked} ({kinds:?}); \
         facts checked on disk: {facts_checked}; re-checked over HTTP after restart: {http_checked}; \
         503 answers while starting: {unavailable_seen}; lost = 0",
        began.elapsed().as_secs_f64()
    );
    assert!(
        m.acked.get("start").copied().unwrap_or(0) > iterations,
        "too little load to mean anything"
    );
}
