//! Model-based test: random sequences of session and admin operations run
//! against the real server (HTTP, `LiveStore`, SQLite, the session rules),
//! and every answer is compared with a small in-memory model of the wire
//! contract (`docs/api.md`), including the choices it makes where the
//! protocol leaves room.
//!
//! Why a model: the example tests check the cases someone thought of; the
//! model is the contract written once as plain code (a `Vec` of sessions and
//! a few `if`s), and proptest looks for the interleavings nobody thought of:
//! a retry after a takeover, a kick of a ghost, an expiry exactly at the
//! timeout, a seat limit lowered under a full key. When the server and the
//! model disagree, proptest shrinks the sequence and the failure names the
//! op (by index), what the model expected and what the server answered.
//!
//! One server (temp database, `ManualClock`) serves every case; each case
//! gets a fresh key (1 or 3 seats, takeover or reject) and its own session
//! ids, so cases cannot see each other, and the clock only moves forward.
//! After each case the key's audit log must match the model's history.
//!
//! A second run adds the key's own expiry (set in the past or future, and
//! cleared) to the operations.
//!
//! Run more cases with `PROPTEST_CASES=2000 cargo test --test model -- --nocapture`
//! (see docs/correctness.md).

#[path = "../common/mod.rs"]
mod common;
mod contract;
mod expect;
mod ops;
mod run;
mod view;

use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::time::Instant;

use common::api::Answered;
use common::TestServer;
use contract::{KeyState, Model};
use ops::{case, Case};
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use run::Run;
use serde_json::json;
use view::{CASES, CASE_SEQ, CASE_T0, OPS, SEEN};

/// The server's default timeout (tests use the default timing).
const TIMEOUT_MS: i64 = 60_000;
/// An hour: borrows are whole hours.
const HOUR_MS: i64 = 3_600_000;

/// Cases when `PROPTEST_CASES` is not set: 10 to 20 s in a debug build on
/// a busy two-core machine.
const DEFAULT_CASES: u32 = 256;

async fn run_case(server: &TestServer, case: &Case) -> Result<(), TestCaseError> {
    let n = CASE_SEQ.fetch_add(1, Ordering::Relaxed);
    CASE_T0.with(|t| t.set(server.now().millis()));
    let api = server.api();
    let body = json!({"max_sessions": case.seats, "on_conflict": case.policy.as_str(),
                      "max_borrow_hours": case.borrow_hours});
    let created = api.create_key(body).await.answer("create key");
    let other = api.create_key(json!({})).await.answer("create key");
    let mut run = Run {
        other_key: other.access_key,
        elsewhere: Vec::new(),
        server,
        api,
        key: created.access_key,
        key_id: created.key.key_id,
        tag: format!("model-{n:06}"),
        model: Model {
            seats: case.seats,
            policy: case.policy,
            max_borrow_hours: case.borrow_hours,
            borrows: Vec::new(),
            state: KeyState::Active,
            sessions: Vec::new(),
            last_fence: 0,
            rejected: 0,
            expires_at: None,
            expiry_applied: false,
            now: 0,
        },
        log: Vec::new(),
    };
    for (i, op) in case.ops.iter().enumerate() {
        OPS.with(|n| n.set(n.get() + 1));
        run.step(i, op).await?;
    }
    run.check_audit_log().await?;
    CASES.with(|n| n.set(n.get() + 1));
    Ok(())
}

/// Every answer of the real server matches the contract's model, for random
/// sequences of starts, heartbeats, ends, status calls, kicks, key changes
/// and clock moves on 1- and 3-seat keys with either conflict policy.
#[test]
fn server_answers_like_the_contract_model() {
    run_model(false);
}

/// The same with the key's own `expires_at` set (in the past or future)
/// and cleared.
///
/// What it found, all fixed in the store: a passed expiry lifted before the
/// sweep revived the key's sessions; a sweep that found both a passed key
/// expiry and a run-out lease recorded `session_expired` though the key
/// expired first; the key's `live_sessions` and a kick still counted
/// sessions of an expired key as live; an expiry set into the past
/// re-explained sessions that had already run out.
#[test]
fn server_answers_like_the_contract_model_with_key_expiry() {
    run_model(true);
}

fn run_model(key_expiry: bool) {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = rt.block_on(TestServer::start());
    let config = Config {
        cases,
        // Shrunk counterexamples are printed in full; no regression file
        // is written into the source tree.
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..Config::default()
    };
    let began = Instant::now();
    let mut runner = TestRunner::new(config);
    let result = runner.run(&case(key_expiry), |c| rt.block_on(run_case(&server, &c)));
    let elapsed = began.elapsed();
    match result {
        Ok(()) => {
            eprintln!(
                "model: {} case(s) passed, {} ops checked against the model, {:.1} s",
                CASES.with(Cell::get),
                OPS.with(Cell::get),
                elapsed.as_secs_f64()
            );
            let lines: Vec<String> = SEEN.with(|seen| {
                seen.borrow()
                    .iter()
                    .map(|(k, n)| format!("{n:>6} {k}"))
                    .collect()
            });
            eprintln!("answers seen:\n{}", lines.join("\n"));
        }
        Err(TestError::Fail(why, case)) => panic!(
            "the server disagrees with the contract model (after {} case(s), shrunk):\n\
             key created with {} seat(s), {}\nops:\n{}\n{why}",
            CASES.with(Cell::get),
            case.seats,
            case.policy.as_str(),
            case.ops
                .iter()
                .enumerate()
                .map(|(i, op)| format!("  #{i} {op:?}"))
                .collect::<Vec<_>>()
                .join("\n")
        ),
        Err(TestError::Abort(why)) => panic!("model test aborted: {why}"),
    }
}

/// The minimal case the key-expiry model test shrinks to, as a plain test:
/// a session live when its key reaches `expires_at` ended then (contract:
/// `revoked` when "its key was ... expired"), so clearing the expiry
/// afterwards must not bring it back.
///
/// (Found by the model test; fixed in `store::sqlite::keys::update`, by `rules::ended_before_change`.)
#[tokio::test]
async fn a_session_ended_by_its_keys_expiry_stays_ended() {
    let s = TestServer::start().await;
    let api = s.api();
    let created = api.create_key(json!({})).await.answer("create key");
    let (key, key_id) = (created.access_key, created.key.key_id);
    let expiry = s.now().plus_secs(1).to_rfc3339();
    let patched = api
        .patch_key(&key_id, json!({ "expires_at": expiry }))
        .await;
    patched.answer("set the expiry");
    let started = api.start(&key, None, Some("office-pc"), None).await;
    let sid = started.answer("start").session_id;
    s.clock.advance_secs(1);
    api.heartbeat(&key, &sid).await.refused(403, "key_expired");

    let patched = api.patch_key(&key_id, json!({ "expires_at": null })).await;
    let live = patched.answer("clear the expiry").live_sessions;
    let e = api
        .heartbeat(&key, &sid)
        .await
        .refused(410, "session_revoked");
    assert_eq!(e.error()["reason"], "revoked");
    assert_eq!(live, 0, "the key's live_sessions after clearing the expiry");
}
