//! The database's outage: a private PostgreSQL cluster (stopping the
//! shared one would break every other test) stopped under two servers
//! while devices heartbeat through both, then started again; every answer
//! is recorded with the phase of the outage it was sent in.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common;
use crate::common::api::{Answered, Api, ApiErr};
use crate::servers::Srv;

/// What a heartbeat was answered, in which phase of the outage.
#[derive(Debug)]
struct Beat {
    phase: u8,
    session: usize,
    server: usize,
    answer: Result<(), ApiErr>,
    at: Instant,
}

// The phases of the outage, in order; a request sent in one phase and
// answered in another counts as the change (stopping or starting).
const UP: u8 = 0;
const STOPPING: u8 = 1;
const DOWN: u8 = 2;
const STARTING: u8 = 3;
const BACK: u8 = 4;

/// The outage scenarios of the crate (a long and a short outage) with the
/// database stopped for `down_secs`.
pub async fn database_outage(down_secs: f64) {
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
