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
//!
//! This file is the scenarios; the machinery is in the modules:
//! [`servers`] (the `keyseat serve` processes), [`across_servers`] (the
//! history run and its checks), [`outage`] (the database stopped under
//! the servers) and [`clocks`] (skewed wall clocks).

mod across_servers;
mod clocks;
#[path = "../common/mod.rs"]
mod common;
#[path = "../common/history/mod.rs"]
mod history;
mod outage;
mod servers;

use std::time::{Duration, Instant};

use across_servers::{history_across_servers, Kill};
use clocks::{faketime_available, lease_from_db, wall_offset_secs, LIBFAKETIME};
use common::api::Answered;
use common::unix_ms;
use outage::database_outage;
use serde_json::json;
use servers::{env_secs, Srv};

const ADMIN_TOKEN: &str = "several-servers-admin-token-0123456789";
const TIMEOUT_SECS: u64 = 2;

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
