//! Server restarts and outages (contract, "Server restarts and outages"):
//! a restart keeps every key and live session, ended sessions stay ended,
//! and a session live at the stop gets one full timeout from readiness.

mod common;

use common::{assert_error, TestServer};
use keyseat::clock::Clock;
use serde_json::json;

/// Keys and live sessions survive a restart on the same file; ended ones
/// stay ended with their reason.
#[tokio::test]
async fn restart_keeps_keys_and_live_sessions() {
    let s = TestServer::start().await;
    let (key, created) = s
        .create_key(json!({"label": "acme", "max_sessions": 2}))
        .await;
    let live = s.started(&key, "A").await;
    let ended = s.started(&key, "B").await;
    s.end(&key, &ended).await;

    let s = s.restart_after(5).await;
    let (status, body) = s
        .admin(
            "GET",
            &format!("/api/admin/keys/{}", created["key_id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["label"], "acme");
    assert_eq!(body["max_sessions"], 2);
    let (status, body) = s.heartbeat(&key, &live).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["fence"], 1);
    let (status, body) = s.heartbeat(&key, &ended).await;
    assert_error(status, &body, 410, "session_ended");
    // Fences keep increasing after the restart.
    let (_, c) = s.start_session(&key, "C").await;
    assert_eq!(c["fence"], 3);
}

/// An outage longer than the timeout ends no session: each session live at
/// the stop gets a full timeout from the moment the server is ready.
#[tokio::test]
async fn outage_longer_than_the_timeout_ends_no_session() {
    let s = TestServer::start().await;
    let (key, _) = s.create_key(json!({})).await;
    let id = s.started(&key, "A").await;
    s.clock.advance_secs(30);
    let s = s.restart_after(600).await;
    s.clock.advance_secs(59);
    let (status, body) = s.heartbeat(&key, &id).await;
    assert_eq!(
        status, 200,
        "device heartbeating through the outage carries on: {body}"
    );
}

/// A device that went away during the outage expires one timeout after the
/// server is ready, not earlier and not never.
#[tokio::test]
async fn device_gone_during_outage_expires_one_timeout_after_ready() {
    let s = TestServer::start().await;
    let (key, _) = s.create_key(json!({"on_conflict": "reject"})).await;
    let id = s.started(&key, "A").await;
    let s = s.restart_after(300).await;
    s.clock.advance_millis(59_999);
    let (status, body) = s.start_session(&key, "B").await;
    assert_error(status, &body, 409, "seats_full");
    s.clock.advance_millis(1);
    let (status, body) = s.heartbeat(&key, &id).await;
    assert_error(status, &body, 410, "session_expired");
    assert_eq!(s.start_session(&key, "B").await.0, 200);
}

/// A session that had already expired while the server was up is not
/// revived by a restart.
#[tokio::test]
async fn restart_does_not_revive_sessions_dead_before_the_stop() {
    let s = TestServer::start().await;
    let (key, _) = s.create_key(json!({})).await;
    let id = s.started(&key, "A").await;
    s.clock.advance_secs(90); // dead at 60 s, server still up
                              // The server's sweep notes it was alive at this moment.
    let store = s.store();
    let now = s.now();
    keyseat::store::blocking(move || store.sweep(now, 30, true))
        .await
        .unwrap();
    let s = s.restart_after(10).await;
    let (status, body) = s.heartbeat(&key, &id).await;
    assert_error(status, &body, 410, "session_expired");
}

/// A crash (no clean stop) behaves the same: sessions live at the last
/// sign of life are resumed with a full timeout.
#[tokio::test]
async fn crash_without_clean_stop_keeps_live_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let settings = common::test_settings(&dir);
    let clock = std::sync::Arc::new(keyseat::clock::ManualClock::starting_now());
    let key;
    let id;
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = keyseat::server::Server::start(settings.clone(), listener, clock.clone())
            .await
            .unwrap();
        let store = server.store();
        let now = clock.now();
        let created = store
            .create_key(&Default::default(), now, &keyseat::model::Actor::cli())
            .unwrap();
        key = created.access_key;
        let started = store
            .start_session(
                &keyseat::store::StartRequest {
                    key: key.clone(),
                    session_id: Some("crash-test-session".into()),
                    device_name: None,
                    fingerprint: None,
                    actor: keyseat::model::Actor::cli(),
                    borrow_hours: None,
                },
                now,
                settings.timing(),
            )
            .unwrap();
        id = started.session.session_id;
        // Simulate a crash: drop everything without `stop()`.
        drop(server);
    }
    clock.advance_secs(3600);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = keyseat::server::Server::start(settings.clone(), listener, clock.clone())
        .await
        .unwrap();
    let store = server.store();
    let s = store
        .heartbeat(&key, &id, clock.now().plus_secs(59), settings.timing())
        .unwrap();
    assert_eq!(s.session_id, id);
    server.stop().await.unwrap();
}

/// A session whose lease ran out shortly before a clean stop, before any
/// sweep recorded it, stays dead after the restart: the stop sweeps.
#[tokio::test]
async fn a_clean_stop_records_expiries_the_sweep_had_not_reached() {
    let s = TestServer::start_with(|c| c.sweep_interval_seconds = 3600).await;
    let (key, _) = s.create_key(json!({})).await;
    let id = s.started(&key, "A").await;
    s.clock.advance_secs(61);
    let s = s.restart_after(1).await;
    let (status, body) = s.heartbeat(&key, &id).await;
    assert_error(status, &body, 410, "session_expired");
    let (_, status) = s.status(&key).await;
    assert_eq!(status["sessions"], json!([]));
}
