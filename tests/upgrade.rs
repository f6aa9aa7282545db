//! A database made by an earlier release opens in this one with nothing
//! lost: its keys (their access keys still work), its sessions (those live
//! at the stop get the restart rule's full timeout from readiness, the
//! ended ones keep their reasons), its fences and its audit log. The
//! fixtures are in `tests/fixtures/`, one directory per release, each made
//! by that release's binary (see its README).

mod common;

use common::{assert_error, TestServer};
use serde_json::{json, Value};

/// A server on a copy of the fixture of `release`, the fixture's keys, and
/// the directory of the copy (kept for as long as the server runs).
async fn server_on(release: &str) -> (TestServer, Value, tempfile::TempDir) {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(release);
    let keys: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("keys.json")).unwrap()).unwrap();
    let copy_dir = tempfile::tempdir().unwrap();
    let db = copy_dir.path().join("keyseat.db");
    std::fs::copy(fixture.join("keyseat.db"), &db).unwrap();
    let db_for_settings = db.clone();
    let server = TestServer::start_with(move |s| s.database = db_for_settings.into()).await;
    (server, keys, copy_dir)
}

fn key<'a>(keys: &'a Value, name: &str) -> &'a str {
    keys[name]["access_key"].as_str().unwrap()
}

/// Release 0.1.0 (schema V1, migrations in `migrations/` before they moved
/// to `migrations/sqlite/`): everything carries over.
#[tokio::test]
async fn a_database_from_release_0_1_0_opens_with_nothing_lost() {
    if common::on_postgres() {
        return; // earlier releases wrote SQLite only
    }
    let (s, keys, _copy) = server_on("release-0.1.0").await;

    let (status, listed) = s.admin("GET", "/api/admin/keys?limit=10", None).await;
    assert_eq!(status, 200, "{listed}");
    let labels: Vec<&str> = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        ["fixture one seat", "fixture reject", "fixture revoked"]
    );
    // Borrowing came later: every old key has it off, no session borrowed.
    for k in listed["keys"].as_array().unwrap() {
        assert_eq!(k["max_borrow_hours"], 0, "{k}");
    }
    let (_, live) = s.admin("GET", "/api/admin/sessions", None).await;
    for session in live["sessions"].as_array().unwrap() {
        assert_eq!(session["borrowed_until"], Value::Null, "{session}");
    }
    let (status, body) = s
        .post(
            "/api/session/borrow",
            json!({"access_key": key(&keys, "one_seat"), "hours": 1}),
        )
        .await;
    assert_error(status, &body, 403, "borrow_not_allowed");

    // Sessions live at the stop are live now (a full timeout from readiness).
    let (status, body) = s.heartbeat(key(&keys, "one_seat"), "fixture-live-1").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s.heartbeat(key(&keys, "reject"), "fixture-live-2").await;
    assert_eq!(status, 200, "{body}");
    // Ended ones keep how they ended.
    let (status, body) = s
        .heartbeat(key(&keys, "one_seat"), "fixture-superseded")
        .await;
    assert_error(status, &body, 409, "session_superseded");
    assert_eq!(body["error"]["superseded_by"]["device_name"], "new laptop");
    let (status, body) = s.heartbeat(key(&keys, "reject"), "fixture-ended").await;
    assert_error(status, &body, 410, "session_ended");
    let (status, body) = s.status(key(&keys, "revoked")).await;
    assert_error(status, &body, 403, "key_revoked");

    // The key's rules and fences carry on: the 2-seat reject key has one
    // seat left, and a takeover on the 1-seat key gets the next fence.
    let (status, body) = s.start_session(key(&keys, "reject"), "second desk").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s.start_session(key(&keys, "reject"), "third desk").await;
    assert_error(status, &body, 409, "seats_full");
    let (status, body) = s.start_session(key(&keys, "one_seat"), "phone").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["fence"], 3);
    assert_eq!(
        body["terminated_sessions"][0]["session_id"],
        json!("fixture-live-1")
    );

    // The audit log is all there, under the new entries.
    let (status, events) = s.admin("GET", "/api/admin/events?limit=100", None).await;
    assert_eq!(status, 200);
    let types: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    let old = &types[types.len() - 10..];
    assert_eq!(
        old,
        [
            "key_revoked",
            "session_ended",
            "session_started",
            "session_started",
            "session_started",
            "session_superseded",
            "session_started",
            "key_created",
            "key_created",
            "key_created",
        ]
    );
}
