//! Several `keyseat serve` processes on one PostgreSQL database, each
//! answering as if it were the only one (docs/api.md; the design is in
//! `src/store/postgres/mod.rs`): the seat invariant, fences and endings
//! hold across servers, through a server's SIGKILL, through the database's
//! own outage, and whatever the servers' wall clocks say.
//!
//! Runs only on PostgreSQL, whatever `KEYSEAT_TEST_ENGINE` says: each test
//! makes a fresh database on `KEYSEAT_TEST_POSTGRES_URL` (or, for the
//! outage, a private cluster), and skips saying why when there is none
//! (a failure under `CI=true`).
//!
//! Timing: heartbeat 1 s, timeout 2 s, sweep 1 s (the config's minimums),
//! on real clocks. `HISTORY_SECONDS` (default 5) lengthens the history runs;
//! `HISTORY_SEED` replays their clients.
//!
//! # Two clocks, and why the history checker still applies
//!
//! The history checker (`tests/common/history`) was written for one
//! in-process server on a manual clock. Here the servers are real and the
//! database's clock (`clock_timestamp()`) decides every lease, so the
//! times in answers and events (`expires_at`, `started_at`, an event's
//! `at`) are database times, while a record's `send`/`recv` are instants on
//! this test's monotonic clock. The checker never compares the two kinds:
//!
//! - its client-side rules (certainly-live intervals, no success after an
//!   acknowledged end, real-time order of fences) use only `send`/`recv`,
//!   one clock for all clients, whichever server answered;
//! - its log-side rules use only the audit log's order and database times
//!   against database times (a start's `at` against an expiry's `at`, the
//!   lease a heartbeat announced against the `at` of that session's
//!   expiry, a supersede's `started_at` against the superseding start's
//!   event).
//!
//! The log is replayed in event-id order. PostgreSQL hands out identity
//! ids at insert, not at commit, so two keys' events may interleave
//! differently from their commits; but every event of a key is written
//! while that key's row is locked (starts, ends, kicks and each key's part
//! of a sweep), so per key, which is all the seat replay looks at, id
//! order is commit order.

mod common;
#[path = "common/history/mod.rs"]
mod history;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::api::{Answered, Api, ApiErr};
use history::check::check;
use history::{all_events, client, Kind, Pace, Rec, Run, KEYS};
use serde_json::json;

const ADMIN_TOKEN: &str = "several-servers-admin-token-0123456789";
const TIMEOUT_SECS: u64 = 2;
const CLIENTS: usize = 32;
/// Where Debian's `faketime` package puts its library (as tests/accidents.rs).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

// ---------------------------------------------------------------------------
// The servers

/// One `keyseat serve` on a fixed port (so it can be restarted on it).
struct Srv {
    name: String,
    db: String,
    port: u16,
    dir: PathBuf,
    /// Extra environment (libfaketime).
    env: Vec<(String, String)>,
    timeout_secs: u64,
    child: Option<Child>,
    log: PathBuf,
    runs: usize,
    api: Api,
}

impl Srv {
    /// Starts it and waits until `/health` answers 200.
    async fn start(db: &str, dir: &Path, name: &str, env: &[(&str, &str)]) -> Srv {
        Self::start_with_timeout(db, dir, name, env, TIMEOUT_SECS).await
    }

    async fn start_with_timeout(
        db: &str,
        dir: &Path,
        name: &str,
        env: &[(&str, &str)],
        timeout_secs: u64,
    ) -> Srv {
        let port = common::free_port();
        let url = format!("http://127.0.0.1:{port}");
        let mut s = Srv {
            name: name.to_owned(),
            db: db.to_owned(),
            port,
            dir: dir.to_owned(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            timeout_secs,
            child: None,
            log: PathBuf::new(),
            runs: 0,
            api: Api::new(&url)
                .with_admin(ADMIN_TOKEN)
                .with_timeout(Duration::from_secs(10)),
        };
        s.spawn();
        s.ready().await;
        s
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Spawns the process on its port, logging to a new file.
    fn spawn(&mut self) {
        self.runs += 1;
        self.log = self.dir.join(format!("{}-{}.log", self.name, self.runs));
        let mut cmd = common::serve_command(&self.db, self.port);
        cmd.env("KEYSEAT_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("KEYSEAT_RATE_LIMITS", "off")
            .env("KEYSEAT_HEARTBEAT_INTERVAL_SECONDS", "1")
            .env(
                "KEYSEAT_SESSION_TIMEOUT_SECONDS",
                self.timeout_secs.to_string(),
            )
            .env("KEYSEAT_SWEEP_INTERVAL_SECONDS", "1")
            .env("KEYSEAT_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stderr(File::create(&self.log).unwrap());
        self.child = Some(cmd.spawn().expect("spawn keyseat serve"));
    }

    async fn ready(&mut self) {
        let url = self.url();
        let log = self.log.clone();
        common::wait_healthy(self.child.as_mut().unwrap(), &url, &log).await;
    }

    /// SIGKILL, as a crash; fails if it had panicked.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        self.assert_no_panic();
    }

    fn assert_no_panic(&self) {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(!log.contains("panicked"), "{} panicked:\n{log}", self.name);
    }
}

/// The server's logged errors and warnings (every run of it), to explain
/// a failure.
fn print_log_errors(srv: &Srv) {
    for run in 1..=srv.runs {
        let log = srv.dir.join(format!("{}-{run}.log", srv.name));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("WARN"))
            .take(15)
            .collect();
        if !lines.is_empty() {
            println!("{} (run {run}) logged:\n  {}", srv.name, lines.join("\n  "));
        }
    }
}

impl Drop for Srv {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn env_secs(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------
// a and d: the history across servers, one of them SIGKILLed

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kill {
    /// Killed, then started again on the same port.
    AndRestart,
    /// Killed for good: the others carry on alone.
    ForGood,
}

/// What [`history_across_servers`] counted.
struct Counts {
    ops: usize,
    events: usize,
    violations: usize,
    acked_checked: usize,
    lost: usize,
}

/// Three servers, clients sending each request to a random one, one
/// server SIGKILLed a third of the way in; then the history checker on
/// the recorded history and the audit log, the rows of every acknowledged
/// start, end and kick, and (when `survivors_answer`) every request sent to
/// a server that was not killed answered, never with a 5xx but 503.
async fn history_across_servers(kill: Kill, what: &str) -> Option<Counts> {
    let db = common::postgres::fresh_database().await?;
    let dir = tempfile::tempdir().unwrap();
    let secs = env_secs("HISTORY_SECONDS", 5.0);
    let seed: u64 = std::env::var("HISTORY_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    let mut servers = Vec::new();
    let mut floor_past = Instant::now();
    for i in 0..3 {
        servers.push(Srv::start(&db, dir.path(), &format!("server-{i}"), &[]).await);
        if i == 0 {
            // The first server on a database with no server alive applies
            // the restart rule: a lease floor of one timeout from its
            // readiness, which answers do not announce. Past it, every
            // lease is the one announced, as the checker expects.
            floor_past = Instant::now() + Duration::from_millis(TIMEOUT_SECS * 1000 + 300);
        }
    }
    tokio::time::sleep_until(floor_past.into()).await;
    let admin = servers[0].api.clone();
    let mut keys = Vec::new();
    let mut key_ids = Vec::new();
    for (seats, policy) in KEYS {
        let body = json!({"max_sessions": seats, "on_conflict": policy});
        let created = admin.create_key(body).await.answer("create key");
        keys.push(created.access_key);
        key_ids.push(created.key.key_id);
    }

    let began = Instant::now();
    let run = Run {
        servers: Arc::new(servers.iter().map(|s| s.api.clone()).collect()),
        keys: Arc::new(keys),
        known: Arc::new(Mutex::new(Vec::new())),
        t0: began,
        until: began + Duration::from_secs_f64(secs),
        // Real time: the 2 s timeout itself.
        pace: Pace {
            near_timeout_chance: 0.03,
            near_timeout: 1_700..2_300,
            quiet: 1_500..2_600,
        },
    };
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|id| tokio::spawn(client(id, seed, run.clone())))
        .collect();

    // The victim: SIGKILLed under load, a third of the way in.
    const VICTIM: usize = 1;
    tokio::time::sleep(Duration::from_secs_f64(secs / 3.0)).await;
    let killed_at = began.elapsed().as_nanos() as u64;
    servers[VICTIM].kill();
    if kill == Kill::AndRestart {
        tokio::time::sleep(Duration::from_millis(300)).await;
        servers[VICTIM].spawn();
        servers[VICTIM].ready().await;
    }
    let mut recs: Vec<Rec> = Vec::new();
    for t in tasks {
        recs.extend(t.await.expect("client task"));
    }
    let real_secs = began.elapsed().as_secs_f64();
    let mut latency: Vec<u64> = recs.iter().map(|r| (r.recv - r.send) / 1_000_000).collect();
    latency.sort();
    let median_ms = |f: &dyn Fn(&Rec) -> bool| {
        let mut l: Vec<u64> = recs
            .iter()
            .filter(|r| f(r))
            .map(|r| (r.recv - r.send) / 1_000_000)
            .collect();
        l.sort();
        l.get(l.len() / 2).copied().unwrap_or(0)
    };
    println!(
        "median latency before the kill {} ms, after {} ms",
        median_ms(&|r| r.recv < killed_at),
        median_ms(&|r| r.send > killed_at)
    );
    let slowest = recs.iter().max_by_key(|r| r.recv - r.send);
    if let Some(r) = slowest {
        println!("slowest request: {}", r.short());
    }
    let latency_ms = (
        latency.get(latency.len() / 2).copied().unwrap_or(0),
        latency.last().copied().unwrap_or(0),
    );

    // Every lease runs out and a sweep records it: wait until no session
    // is live (a few seconds: the timeout plus a sweep).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let live = admin.sessions("").await.answer("sessions").sessions;
        if live.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sessions still live long after the run: {}",
            live.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // One more sweep interval, so an expiry found by a read but not yet
    // written by a sweep is in the log too.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let events = all_events(&admin).await;

    let mut violations = Vec::new();
    let stats = check(&recs, &events, &key_ids, &mut violations);

    // The servers that were not killed answered everything: a success, a
    // contract answer the checker judged, or 503 `unavailable` (the
    // contract's answer to database trouble, here a pool or lock wait
    // running out on a loaded machine), never no answer or another 5xx.
    let (mut to_survivors, mut survivors_503) = (0, 0);
    for r in &recs {
        if r.server == VICTIM {
            continue;
        }
        to_survivors += 1;
        if r.status == 503 && r.code() == "unavailable" {
            survivors_503 += 1;
        } else if r.status == 0 || r.status >= 500 {
            violations.push(format!(
                "a surviving server did not answer properly: {}",
                r.short()
            ));
        }
    }
    // The victim's own failures are confined to its outage.
    for r in recs.iter().filter(|r| r.server == VICTIM && r.status == 0) {
        if r.recv < killed_at {
            violations.push(format!("no answer before the kill: {}", r.short()));
        }
    }

    // Every acknowledged start, end and kick is in the rows.
    let (acked_checked, lost) = check_rows(&db, &recs, &mut violations).await;

    println!(
        "several servers ({what}): {} ops by {CLIENTS} clients on 3 servers in {real_secs:.1} s \
         ({to_survivors} to the survivors, {survivors_503} of them 503; latency median, max {latency_ms:?} ms), {} events (seed {seed}); {} starts ok, {} rejected, \
         {} superseded, {} expired, {} shed; max live per key: certain {:?}, in log {:?}, \
         seats {:?}; acked checked {acked_checked}, lost {lost}; violations {}",
        stats.ops,
        stats.events,
        stats.starts_ok,
        stats.rejected,
        stats.superseded,
        stats.expired,
        stats.shed,
        stats.max_certainly_live,
        stats.max_live_in_log,
        KEYS.map(|(n, _)| n),
        violations.len()
    );
    if !violations.is_empty() {
        for srv in &servers {
            print_log_errors(srv);
        }
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
    assert!(
        stats.starts_ok > 20 && stats.superseded > 0 && stats.rejected > 0,
        "too little happened to prove anything: {stats:?}"
    );
    for s in &mut servers {
        s.kill();
    }
    Some(Counts {
        ops: stats.ops,
        events: stats.events,
        violations: violations.len(),
        acked_checked,
        lost,
    })
}

/// Reads the session rows: every start answered 200 (not a resume) has
/// its row with the fence it was told; every end or kick answered
/// `ended: true` left the reason it implies. Returns (checked, lost).
async fn check_rows(db: &str, recs: &[Rec], v: &mut Vec<String>) -> (usize, usize) {
    let client = common::postgres::connect(db).await;
    let rows: HashMap<String, (i64, Option<String>)> = client
        .query("SELECT session_id, fence, end_reason FROM sessions", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let (mut checked, mut lost) = (0, 0);
    for r in recs.iter().filter(|r| r.status == 200) {
        let sid = r.sid.as_deref().unwrap_or_default();
        let want = match r.kind {
            Kind::Start if r.body["resumed"] == false => None,
            Kind::End if r.body["ended"] == true => Some("ended"),
            Kind::Kick if r.body["ended"] == true => Some("revoked"),
            _ => continue,
        };
        checked += 1;
        let ok = match (rows.get(sid), want) {
            (Some((fence, _)), None) => Some(*fence) == r.body["fence"].as_i64(),
            (Some((_, reason)), Some(want)) => reason.as_deref() == Some(want),
            (None, _) => false,
        };
        if !ok {
            lost += 1;
            v.push(format!(
                "acknowledged, not in the rows ({:?}): {}",
                rows.get(sid),
                r.short()
            ));
        }
    }
    (checked, lost)
}

/// The seat invariant, endings and fences across three servers: the
/// recorded history of clients spread over them, one server SIGKILLed and
/// started again on its port mid-run, is one the contract allows (the
/// history checker: never more live sessions than seats, exact by the
/// audit log; no heartbeat success after an acknowledged end; fences
/// unique and strictly increasing per key; every acknowledged start in the
/// log and the rows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_across_three_servers_with_a_restart_keeps_the_contract() {
    if let Some(c) = history_across_servers(Kill::AndRestart, "one restarted").await {
        assert_eq!((c.violations, c.lost), (0, 0));
        println!(
            "a: ops {}, events {}, violations {}, acked checked {}, lost {}",
            c.ops, c.events, c.violations, c.acked_checked, c.lost
        );
    }
}

/// A server killed with SIGKILL mid-run loses nothing acknowledged (every
/// acknowledged start, end and kick is in the rows and the log), and the
/// other servers keep answering during and after: every request sent to a
/// survivor is answered, with a correct contract answer by the history
/// checker or 503 `unavailable`, never another 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_for_good_loses_nothing_and_the_others_answer() {
    if let Some(c) = history_across_servers(Kill::ForGood, "one killed for good").await {
        assert_eq!((c.violations, c.lost), (0, 0));
        println!(
            "d: ops {}, events {}, violations {}, acked checked {}, lost {}",
            c.ops, c.events, c.violations, c.acked_checked, c.lost
        );
    }
}

// ---------------------------------------------------------------------------
// b: the database's outage

/// What a heartbeat was answered, in which phase of the outage.
#[derive(Debug)]
struct Beat {
    phase: u8,
    session: usize,
    server: usize,
    answer: Result<(), ApiErr>,
    at: Instant,
}

const UP: u8 = 0;
const STOPPING: u8 = 1;
const DOWN: u8 = 2;
const STARTING: u8 = 3;
const BACK: u8 = 4;

/// The database away for longer than the session timeout: while it is
/// down every answer is 503 `unavailable` with `Retry-After` (never a 500,
/// never `session_expired` or `session_not_found`); once it is back the
/// servers answer again by themselves within a few seconds, and the
/// sessions that kept heartbeating through the outage are still live (the
/// restart rule: the first server back gives every open session a full
/// timeout), so their next heartbeats succeed.
///
/// 6 s down (`OUTAGE_SECONDS`), timeout 3 s: longer than the engine's
/// outage threshold (no alive mark for 5 s), so this is the case the
/// engine handles; see the next test for a shorter outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_longer_than_the_timeout_ends_no_heartbeating_session() {
    database_outage(env_secs("OUTAGE_SECONDS", 6.0)).await;
}

/// The same rule for an outage longer than the timeout but shorter than
/// the engine's threshold for "no server alive" (`OUTAGE_MS`, 5 s,
/// src/store/postgres/rows.rs): 2.5 s down plus the stop and the start,
/// against a 3 s timeout. The database's own restart is an outage however
/// short (it started after the last alive mark), and so is a server's lost
/// contact with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_database_outage_longer_than_the_timeout_ends_no_heartbeating_session() {
    database_outage(2.5).await;
}

/// [`a_database_outage_longer_than_the_timeout_ends_no_heartbeating_session`]
/// with the database stopped for `down_secs`.
async fn database_outage(down_secs: f64) {
    const SESSIONS: usize = 4;
    const TIMEOUT: u64 = 3;
    let Some(cluster) = common::postgres::Cluster::start() else {
        return;
    };
    let db = common::postgres::create_database(cluster.url()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut servers = Vec::new();
    for i in 0..2 {
        let name = format!("server-{i}");
        servers.push(Srv::start_with_timeout(&db, dir.path(), &name, &[], TIMEOUT).await);
    }
    let apis: Arc<Vec<Api>> = Arc::new(servers.iter().map(|s| s.api.clone()).collect());
    let key = apis[0]
        .create_key(json!({"max_sessions": SESSIONS, "on_conflict": "reject"}))
        .await
        .answer("create key")
        .access_key;
    let mut ids = Vec::new();
    for i in 0..SESSIONS {
        let id = format!("through-the-outage-{i}");
        let started = apis[i % 2].start(&key, Some(&id), Some(&id), None).await;
        started.answer("start");
        ids.push(id);
    }

    // Each device heartbeats every 250 ms, alternating servers, and keeps
    // trying through the outage.
    let phase = Arc::new(AtomicU8::new(UP));
    let beats: Arc<Mutex<Vec<Beat>>> = Arc::default();
    let acked_before = Arc::new(AtomicUsize::new(0));
    let devices: Vec<_> = (0..SESSIONS)
        .map(|i| {
            let (apis, key, id) = (apis.clone(), key.clone(), ids[i].clone());
            let (phase, beats, acked) = (phase.clone(), beats.clone(), acked_before.clone());
            tokio::spawn(async move {
                let mut n = i;
                loop {
                    let sent_in = phase.load(Ordering::SeqCst);
                    let server = n % 2;
                    n += 1;
                    let answer = apis[server].heartbeat(&key, &id).await.map(|_| ());
                    // A request that spans a change counts as the change.
                    let p = match (sent_in, phase.load(Ordering::SeqCst)) {
                        (a, b) if a == b => a,
                        (a, _) if a < DOWN => STOPPING,
                        _ => STARTING,
                    };
                    if p == UP && answer.is_ok() {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    let done = p == BACK && answer.is_ok();
                    beats.lock().unwrap().push(Beat {
                        phase: p,
                        session: i,
                        server,
                        answer,
                        at: Instant::now(),
                    });
                    if done {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    phase.store(STOPPING, Ordering::SeqCst);
    let c = Arc::new(cluster);
    let stop = c.clone();
    tokio::task::spawn_blocking(move || stop.stop_immediate())
        .await
        .unwrap();
    phase.store(DOWN, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs_f64(down_secs)).await;
    phase.store(STARTING, Ordering::SeqCst);
    let again = c.clone();
    tokio::task::spawn_blocking(move || again.start_again())
        .await
        .unwrap();
    let back_at = Instant::now();
    phase.store(BACK, Ordering::SeqCst);

    // Back by themselves within a few seconds: every device's heartbeat
    // succeeds again.
    let all_back = tokio::time::timeout(Duration::from_secs(15), async {
        for d in devices {
            d.await.unwrap();
        }
    })
    .await;
    let beats = std::mem::take(&mut *beats.lock().unwrap());
    let mut wrong = Vec::new();
    let mut down_503 = 0;
    for b in &beats {
        match (&b.answer, b.phase) {
            (Ok(()), DOWN) => wrong.push(format!("a success while the database was down: {b:?}")),
            (Ok(()), _) => {}
            (Err(e), _) if e.is_unavailable() && e.retry_after.is_some() => {
                if b.phase == DOWN {
                    down_503 += 1;
                }
            }
            (Err(e), _) => wrong.push(format!(
                "session {} via server {} ({}): {e} (retry-after {:?})",
                b.session,
                b.server,
                ["up", "stopping", "down", "starting", "back"][b.phase as usize],
                e.retry_after
            )),
        }
    }
    let mut lost = 0;
    let mut back_after = Duration::ZERO;
    for i in 0..SESSIONS {
        let last = beats.iter().rfind(|b| b.session == i);
        match last {
            Some(b) if b.phase == BACK && b.answer.is_ok() => {
                back_after = back_after.max(b.at - back_at);
            }
            _ => lost += 1,
        }
    }
    // Still live, by the status too.
    let listed = apis[1].status(&key).await.answer("status").sessions.len();
    let acked = acked_before.load(Ordering::Relaxed);
    println!(
        "outage: {down_secs} s down (timeout {TIMEOUT} s), {} heartbeats, {down_503} answered 503 while down; \
         acked heartbeats before {acked}; sessions checked {SESSIONS}, live after {listed}, lost {lost}; \
         all back {:.1} s after the database; wrong answers {}",
        beats.len(),
        back_after.as_secs_f64(),
        wrong.len()
    );
    assert!(wrong.is_empty(), "wrong answers:\n{}", wrong.join("\n"));
    assert!(
        all_back.is_ok(),
        "the servers did not come back by themselves"
    );
    assert_eq!(
        lost, 0,
        "sessions heartbeating through the outage were lost"
    );
    assert_eq!(listed, SESSIONS);
    assert!(
        down_503 > 0,
        "no request was answered while the database was down"
    );
    for s in &mut servers {
        s.kill();
    }
}

// ---------------------------------------------------------------------------
// c: skewed clocks

fn faketime_available() -> bool {
    if Path::new(LIBFAKETIME).exists() {
        true
    } else if std::env::var_os("KEYSEAT_REQUIRE_FAKETIME").is_some() {
        panic!("{LIBFAKETIME} not found and KEYSEAT_REQUIRE_FAKETIME is set: install faketime");
    } else {
        eprintln!(
            "skipping: {LIBFAKETIME} not found (Debian's faketime package; .ci/run installs it)"
        );
        false
    }
}

/// How far the server's wall clock is from this test's, in seconds, by
/// the `Date` header of its `/health` answer (the time of day is enough
/// for offsets of minutes).
async fn wall_offset_secs(url: &str) -> i64 {
    let resp = reqwest::get(format!("{url}/health")).await.expect("health");
    let date = resp.headers()[reqwest::header::DATE]
        .to_str()
        .unwrap()
        .to_owned();
    // "Mon, 07 Dec 2026 02:31:53 GMT"
    let hms: Vec<i64> = date
        .split(' ')
        .nth(4)
        .unwrap_or_else(|| panic!("Date: {date}"))
        .split(':')
        .map(|n| n.parse().unwrap())
        .collect();
    let theirs = hms[0] * 3600 + hms[1] * 60 + hms[2];
    let ours = (unix_ms() / 1000) % 86_400;
    (theirs - ours + 86_400 + 43_200) % 86_400 - 43_200
}

/// A lease in an answer is the database's: about now + timeout on this
/// machine's clock (the database runs here), whichever server answered.
fn lease_from_db(what: &str, expires_at: i64, sent: i64, answered: i64) -> Result<(), String> {
    let timeout = (TIMEOUT_SECS * 1000) as i64;
    if expires_at < sent + timeout - 1_000 || expires_at > answered + timeout + 1_000 {
        Err(format!(
            "{what}: expires_at is {:+} ms from now + timeout (the database's clock, within a second)",
            expires_at - (answered + timeout)
        ))
    } else {
        Ok(())
    }
}

/// Servers whose wall clocks are minutes off (one 5 minutes ahead, one 7
/// behind, one right) give the same answers: the database's clock decides
/// leases. Sessions started through one and heartbeated through another
/// every interval never expire; `expires_at` in every answer is the
/// database's time plus the timeout, within a second; a session left
/// silent expires one timeout later whichever server is asked (not early
/// on the fast one, not late on the slow one); a takeover through a skewed
/// server supersedes the session it displaces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_with_skewed_clocks_agree_on_every_lease() {
    if !faketime_available() {
        return;
    }
    let Some(db) = common::postgres::fresh_database().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let skew = |offset: &'static str| {
        [
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME", offset),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ]
    };
    let right = Srv::start(&db, dir.path(), "right", &[]).await;
    let ahead = Srv::start(&db, dir.path(), "ahead", &skew("+5m")).await;
    let behind = Srv::start(&db, dir.path(), "behind", &skew("-7m")).await;
    let apis = [right.api.clone(), ahead.api.clone(), behind.api.clone()];
    let names = ["right", "ahead (+5 min)", "behind (-7 min)"];
    // The skew is real: each server's own clock, in its `Date` header.
    for (srv, want) in [(&right, 0), (&ahead, 300), (&behind, -420)] {
        let offset = wall_offset_secs(&srv.url()).await;
        assert!(
            (offset - want).abs() <= 30,
            "{}: its clock is {offset:+} s off, not {want:+} s",
            srv.name
        );
    }
    let mut wrong: Vec<String> = Vec::new();
    let mut answers = 0;

    // Each server's own idea of the time differs; its answers' must not.
    let many = apis[0]
        .create_key(json!({"max_sessions": 3, "on_conflict": "takeover"}))
        .await
        .answer("create key")
        .access_key;
    // Started through each server, heartbeated through the next two in
    // turn, every half interval, for twice the timeout.
    let mut ids = Vec::new();
    for (i, api) in apis.iter().enumerate() {
        let id = format!("started-on-{i}");
        let sent = unix_ms();
        let a = api
            .start(&many, Some(&id), Some(&id), None)
            .await
            .answer("start");
        answers += 1;
        let what = format!("start through {}", names[i]);
        if let Err(e) = lease_from_db(&what, a.expires_at.0, sent, unix_ms()) {
            wrong.push(e);
        }
        ids.push(id);
    }
    let until = Instant::now() + Duration::from_secs(2 * TIMEOUT_SECS);
    let mut round = 0;
    while Instant::now() < until {
        round += 1;
        for (i, id) in ids.iter().enumerate() {
            let s = (i + 1 + round % 2) % 3;
            let sent = unix_ms();
            let beat = apis[s].heartbeat(&many, id).await;
            answers += 1;
            match beat {
                Ok(b) => {
                    let what = format!("heartbeat of {id} through {}", names[s]);
                    if let Err(e) = lease_from_db(&what, b.expires_at.0, sent, unix_ms()) {
                        wrong.push(e);
                    }
                }
                Err(e) => wrong.push(format!("heartbeat of {id} through {}: {e}", names[s])),
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Left silent: live until its lease ends, by every server; then over.
    let silent = "silent-on-ahead";
    let sent = unix_ms();
    let a = apis[1]
        .start(&many, Some(silent), Some(silent), None)
        .await
        .answer("start");
    if let Err(e) = lease_from_db("start through ahead", a.expires_at.0, sent, unix_ms()) {
        wrong.push(e);
    }
    let lease = a.expires_at.0;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    for (s, api) in apis.iter().enumerate() {
        let status = api.status(&many).await.answer("status");
        answers += 1;
        let answered = unix_ms();
        let listed = status.sessions.iter().any(|x| x.session_id == silent);
        if answered < lease - 200 && !listed {
            wrong.push(format!(
                "{} no longer lists {silent} {} ms before its lease ends",
                names[s],
                lease - answered
            ));
        }
    }
    let wait = lease + 300 - unix_ms();
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
    for (s, api) in apis.iter().enumerate() {
        let status = api.status(&many).await.answer("status");
        answers += 1;
        if status.sessions.iter().any(|x| x.session_id == silent) {
            wrong.push(format!("{} still lists {silent} after its lease", names[s]));
        }
    }
    let e = apis[2].heartbeat(&many, silent).await.unwrap_err();
    answers += 1;
    if (e.status, e.code.as_str()) != (410, "session_expired") {
        wrong.push(format!("heartbeat of {silent} after its lease: {e}"));
    }

    // A takeover through each skewed server supersedes the session it
    // displaces, started through another.
    let one = apis[0]
        .create_key(json!({"max_sessions": 1, "on_conflict": "takeover"}))
        .await
        .answer("create key")
        .access_key;
    let mut previous: Option<(String, i64)> = None;
    for (n, s) in [0usize, 1, 2, 0].into_iter().enumerate() {
        let id = format!("takeover-{n}");
        let a = apis[s]
            .start(&one, Some(&id), Some(&id), None)
            .await
            .answer("start");
        answers += 1;
        if let Some((prev, fence)) = &previous {
            if !a.terminated_sessions.iter().any(|t| &t.session_id == prev) {
                wrong.push(format!(
                    "start of {id} through {} did not supersede {prev}: {:?}",
                    names[s], a.terminated_sessions
                ));
            }
            if a.fence <= *fence {
                wrong.push(format!("fence of {id} {} not above {fence}", a.fence));
            }
            // The displaced one, asked through yet another server.
            let e = apis[(s + 1) % 3].heartbeat(&one, prev).await.unwrap_err();
            answers += 1;
            if (e.status, e.code.as_str()) != (409, "session_superseded") {
                wrong.push(format!("heartbeat of superseded {prev}: {e}"));
            }
        }
        let beat = apis[(s + 2) % 3].heartbeat(&one, &id).await;
        answers += 1;
        if let Err(e) = beat {
            wrong.push(format!("heartbeat of {id}, just started: {e}"));
        }
        previous = Some((id, a.fence));
    }

    println!(
        "skewed clocks: {answers} answers from 3 servers (+5 min, -7 min, right); wrong {}",
        wrong.len()
    );
    assert!(wrong.is_empty(), "wrong answers:\n{}", wrong.join("\n"));
    for s in [right, ahead, behind].iter_mut() {
        s.kill();
    }
}
