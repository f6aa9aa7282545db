//! `keyseat report sharing` with the real binary, over a history made by a
//! real (in-process) server.

mod common;

use std::process::{Output, Stdio};

use common::TestServer;
use serde_json::{json, Value};

fn report(db: &std::path::Path, args: &[&str]) -> Output {
    let mut cmd = common::keyseat_command();
    cmd.stdin(Stdio::null())
        .arg("--database")
        .arg(db)
        .arg("report")
        .arg("sharing")
        .args(args)
        .output()
        .expect("run keyseat")
}

async fn start(s: &TestServer, key: &str, name: &str) {
    let (status, body) = s
        .post(
            "/api/session/start",
            json!({"access_key": key, "device": {"name": name, "fingerprint": format!("fp-{name}")}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn sharing_report_on_the_command_line() {
    let mut s = TestServer::start_with(|c| {
        c.heartbeat_interval_seconds = 600;
        c.session_timeout_seconds = 3600;
    })
    .await;
    let (shared, _) = s.create_key(json!({"label": "Shared key"})).await;
    let (calm, _) = s.create_key(json!({"label": "Calm"})).await;
    start(&s, &calm, "office").await;
    start(&s, &shared, "laptop").await;
    // laptop → phone → laptop → phone, a few minutes apart: two ping-pongs.
    for device in ["phone", "laptop", "phone"] {
        s.clock.advance_secs(120);
        start(&s, &shared, device).await;
    }
    s.stop().await;
    let db = s.db_path();

    let out = report(&db, &["--since", "7d", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let keys = r["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "the calm key is not listed: {r}");
    let k = &keys[0];
    assert_eq!(k["prefix"], &shared[..11]);
    assert_eq!(k["label"], "Shared key");
    assert_eq!(k["takeovers"], 3);
    assert_eq!(k["ping_pongs"], 2);
    assert_eq!(k["distinct_devices"], 2);
    assert_eq!(k["distinct_fingerprints"], 2);
    assert_eq!(k["takeovers_per_day"], 0.43, "3 in 7 days, rounded");
    assert_eq!(r["days"], 7.0);
    assert_eq!(
        k["pairs"][0],
        json!({"a": "laptop", "b": "phone", "count": 2})
    );

    // The human table by default, one line per key under a header.
    let out = report(&db, &[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("TAKEOVERS"), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with(&shared[..11]))
        .expect("key line");
    assert!(
        line.contains("Shared key") && line.contains("laptop <-> phone (2)"),
        "{line}"
    );
    assert!(!text.contains(&calm[..11]));
    assert!(!text.contains(&shared), "never the full key");

    // A bad duration: one line on stderr, exit 2.
    for bad in [
        &["--since", "7x"][..],
        &["--since", "soon"],
        &["--within", "0m"],
    ] {
        let out = report(&db, bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(
            err.contains("must be a duration such as 30m, 24h or 7d"),
            "{err}"
        );
    }
    // A window with nothing in it says so.
    let out = report(&db, &["--since", "1m"]);
    assert!(out.status.success());
}

/// A borrowed seat is never a takeover: a start on a key whose one seat is
/// borrowed is refused (`seats_full`), not counted, so the key is not
/// listed. A borrow that is itself a start takes an ordinary seat as any
/// start does, and that is a takeover between two devices, counted.
#[tokio::test]
async fn a_borrowed_seat_is_not_reported_as_a_takeover() {
    let mut s = TestServer::start().await;
    let borrow = |key: String, name: &'static str| json!({"access_key": key, "device": {"name": name, "fingerprint": format!("fp-{name}")}, "hours": 2});
    let (travel, _) = s
        .create_key(json!({"label": "Travel", "max_borrow_hours": 24}))
        .await;
    let (status, body) = s
        .post("/api/session/borrow", borrow(travel.clone(), "laptop"))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s
        .post(
            "/api/session/start",
            json!({"access_key": travel, "device": {"name": "desk", "fingerprint": "fp-desk"}}),
        )
        .await;
    assert_eq!(status, 409, "the borrowed seat is never superseded: {body}");

    let (office, _) = s
        .create_key(json!({"label": "Office", "max_borrow_hours": 24}))
        .await;
    start(&s, &office, "desk").await;
    let (status, body) = s
        .post("/api/session/borrow", borrow(office.clone(), "laptop"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["previous_session_terminated"], true, "{body}");
    s.stop().await;

    let out = report(&s.db_path(), &["--since", "1d", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let keys = r["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "only the office key: {r}");
    assert_eq!(keys[0]["label"], "Office");
    assert_eq!(keys[0]["takeovers"], 1, "{r}");
    assert_eq!(keys[0]["distinct_devices"], 2, "{r}");
}
