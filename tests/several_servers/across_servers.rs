//! The history across servers: clients spreading their requests over
//! three servers on one database while one of them is SIGKILLed, then the
//! history checker (tests/common/history) on what they recorded and the
//! audit log, and the session rows read back for every acknowledged
//! change. The crate's doc says why the checker applies to real servers
//! on the database's clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::api::Answered;
use crate::history::check::check;
use crate::history::{all_events, client, Kind, Pace, Rec, Run, KEYS};
use crate::servers::{env_secs, Srv};
use crate::{common, TIMEOUT_SECS};

const CLIENTS: usize = 32;

/// What happens to the victim after its SIGKILL.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kill {
    /// Killed, then started again on the same port.
    AndRestart,
    /// Killed for good: the others carry on alone.
    ForGood,
}

/// What [`history_across_servers`] counted.
pub struct Counts {
    pub ops: usize,
    pub events: usize,
    pub violations: usize,
    pub acked_checked: usize,
    pub lost: usize,
}

/// Three servers, clients sending each request to a random one, one
/// server SIGKILLed a third of the way in; then the history checker on
/// the recorded history and the audit log, the rows of every acknowledged
/// start, end and kick, and (when `survivors_answer`) every request sent to
/// a server that was not killed answered, never with a 5xx but 503.
pub async fn history_across_servers(kill: Kill, what: &str) -> Option<Counts> {
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
        let body = crate::history::key_body(seats, policy);
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
        servers[VICTIM].run().await;
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
        // A seat still borrowed (its client's return got no answer from
        // the killed server) would be held for the hour: an admin ends it.
        for borrowed in live.iter().filter(|s| s.borrowed_until.is_some()) {
            let _ = admin.kick(&borrowed.session_id).await;
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
            srv.print_log_errors();
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
