//! The session API as a device sees it: the seven checks of a deployment
//! (health, start, heartbeat, status, one device at a time, end, expiry)
//! and the contract's rules around them.

mod common;

use common::{assert_error, TestServer};
use keyseat::clock::Timestamp;
use serde_json::json;

/// 1. Health: 200 with version and a readable database.
#[tokio::test]
async fn health_reports_ok_with_version_and_database() {
    let s = TestServer::start().await;
    let (status, body) = s.get("/health").await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["database"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    let engine = if common::on_postgres() {
        "postgres"
    } else {
        "sqlite"
    };
    assert_eq!(body["backend"], engine);
}

/// 2. Start: a session with every field of the contract.
#[tokio::test]
async fn start_returns_a_session_with_the_contract_fields() {
    let s = TestServer::start().await;
    let (key, _) = s.create_key(json!({})).await;
    let (status, body) = s.start_session(&key, "laptop").await;
    assert_eq!(status, 200, "{body}");
    assert!(body["session_id"].as_str().unwrap().len() >= 8);
    assert_eq!(body["fence"], 1);
    assert_eq!(body["heartbeat_interval_seconds"], 30);
    assert_eq!(body["session_timeout_seconds"], 60);
    assert_eq!(body["previous_session_terminated"], false);
    assert_eq!(body["terminated_sessions"], json!([]));
    let started = Timestamp::parse_rfc3339(body["started_at"].as_str().unwrap()).unwrap();
    let expires = Timestamp::parse_rfc3339(body["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(started, s.now());
    assert_eq!(expires, s.now().plus_secs(60));
}

/// 3. Heartbeat: extends the lease to a full timeout from now.
#[tokio::test]
async fn heartbeat_extends_the_lease() {
    let s = TestServer::start().await;
    let (key, _) = s.create_key(json!({})).await;
    let id = s.started(&key, "laptop").await;
    s.clock.advance_secs(45);
    let (status, body) = s.heartbeat(&key, &id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["session_id"], id.as_str());
    assert_eq!(body["fence"], 1);
    assert_eq!(body["heartbeat_interval_seconds"], 30);
    let expires = Timestamp::parse_rfc3339(body["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(expires, s.now().plus_secs(60));
    // 45 s after the heartbeat it is still live (90 s after the start).
    s.clock.advance_secs(45);
    assert_eq!(s.heartbeat(&key, &id).await.0, 200);
}

/// 4. Status: lists only live sessions, with the seat limit.
#[tokio::test]
async fn status_lists_live_sessions() {
    let s = TestServer::start().await;
    let (key, _) = s.create_key(json!({"max_sessions": 2})).await;
    let (_, body) = s.status(&key).await;
    assert_eq!(body["active"], false);
    assert_eq!(body["max_sessions"], 2);
    assert_eq!(body["sessions"], json!([]));
    let a = s.started(&key, "A").await;
    let b = s.started(&key, "B").await;
    s.end(&key, &a).await;
    let (status, body) = s.status(&key).await;
    assert_eq!(status, 200);
    assert_eq!(body["active"], true);
    let sessions = body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["session_id"], b.as_str());
    assert_eq!(sessions[0]["device_name"], "B");
    for field in ["started_at", "last_heartbeat", "expires_at"] {
        assert!(sessions[0][field].is_string(), "{field}");
    }
}

/// 5. One device at a time: B's start ends A's session, B is told, and A's
/// next heartbeat answers 409 session_superseded naming B.
#[tokio::test]
async fn one_device_at_a_time() {
    let s = TestServer::start().await;
    let (key, _) = s.create_key(json!({})).await;
    let a = s.started(&key, "Device A").await;
    s.clock.advance_secs(5);
    let (status, b) = s.start_session(&key, "Device B").await;
    assert_eq!(status, 200);
    assert_eq!(b["previous_session_terminated"], true);
    assert_eq!(b["fence"], 2);
    let terminated = b["terminated_sessions"].as_array().unwrap();
    assert_eq!(terminated.len(), 1);
    assert_eq!(terminated[0]["session_id"], a.as_str());
    assert_eq!(terminated[0]["device_name"], "Device A");

    let (status, body) = s.heartbeat(&key, &a).await;
    let error = assert_error(status, &body, 409, "session_superseded");
    assert_eq!(error["superseded_by"]["device_name"], "Device B");
    assert_eq!(error["superseded_by"]["started_at"], b["started_at"]);
    assert!(error["message"].as_str().unwrap().contains("Device B"));
    // B carries on; A stays superseded (a heartbeat never revives it).
    assert_eq!(
        s.heartbeat(&key, b["session_id"].as_str().unwrap()).await.0,
        200
    );
    assert_eq!(s.heartbeat(&key, &a).await.0, 409);
    assert_eq!(s.events_of("session_superseded").await.len(), 1);
}

/// 6. End: 200 ended true; ending again says how it ended; a heartbeat
/// afterwards is 410 session_ended.
#[tokio::test]
async fn end_releases_the_seat() {
    let s = TestServer::start().await;
    let (key, _) = s.create_key(json!({"on_conflict": "reject"})).await;
    let id = s.started(&key, "A").await;
    let (status, body) = s.end(&key, &id).await;
    assert_eq!((status.as_u16(), body), (200, json!({"ended": true})));
    let (status, body) = s.end(&key, &id).await;
    assert_eq!(
        (status.as_u16(), body),
        (200, json!({"ended": false, "reason": "ended"}))
    );
    let (status, body) = s.heartbeat(&key, &id).await;
    assert_error(status, &body, 410, "session_ended");
    // The seat is free: a reject-policy key admits the next device.
    assert_eq!(s.start_session(&key, "B").await.0, 200);
}

/// 7. Expiry: a session with no heartbeat for the timeout is dead exactly
/// then, whether or not the sweep has run, and the seat is free.
#[tokio::test]
async fn silent_session_expires_exactly_at_the_timeout() {
    let s = TestServer::start().await;
    let (key, _) = s.create_key(json!({"on_conflict": "reject"})).await;
    let id = s.started(&key, "crashed app").await;
    s.clock.advance_millis(59_999);
    let (status, body) = s.start_session(&key, "other").await;
    assert_error(status, &body, 409, "seats_full");
    s.clock.advance_millis(1);
    let (status, body) = s.heartbeat(&key, &id).await;
    assert_error(status, &body, 410, "session_expired");
    let (_, body) = s.status(&key).await;
    assert_eq!(body["sessions"], json!([]));
    let (status, body) = s.start_session(&key, "other").await;
    assert_eq!(status, 200);
    assert_eq!(body["previous_session_terminated"], false);
    // The start recorded the expiry in the audit log on the way.
    let expired = s.events_of("session_expired").await;
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0]["session_id"], id.as_str());
}

/// 7b. Expiry in real time with a 2 s timeout: the background sweep records
/// it without any request touching the key.
#[tokio::test]
async fn sweep_records_expiry_in_real_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::test_settings(&dir);
    settings.heartbeat_interval_seconds = 1;
    settings.session_timeout_seconds = 2;
    settings.sweep_interval_seconds = 1;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = keyseat::server::Server::start(
        settings,
        listener,
        std::sync::Arc::new(keyseat::clock::SystemClock),
    )
    .await
    .unwrap();
    let url = format!("http://{}", server.addr());
    let client = reqwest::Client::new();
    let admin = |path: &str| {
        client
            .get(format!("{url}{path}"))
            .bearer_auth(common::ADMIN_TOKEN)
            .send()
    };
    let key: serde_json::Value = client
        .post(format!("{url}/api/admin/keys"))
        .bearer_auth(common::ADMIN_TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let started: serde_json::Value = client
        .post(format!("{url}/api/session/start"))
        .json(&json!({"access_key": key["access_key"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(started["session_timeout_seconds"], 2);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let events: serde_json::Value = admin("/api/admin/events?type=session_expired")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(e) = events["events"].as_array().unwrap().first() {
            assert_eq!(e["session_id"], started["session_id"]);
            assert_eq!(e["client_addr"], "server");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "sweep never ran");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    server.stop().await.unwrap();
}

/// Fences increase strictly per key, across supersedes and ends.
#[tokio::test]
async fn fences_increase_strictly_per_key() {
    let s = TestServer::start().await;
    let (k1, _) = s.create_key(json!({})).await;
    let (k2, _) = s.create_key(json!({})).await;
    let mut last = 0;
    for i in 0..5 {
        let (_, body) = s.start_session(&k1, &format!("d{i}")).await;
        let fence = body["fence"].as_i64().unwrap();
        assert!(fence > last);
        last = fence;
    }
    let (_, body) = s.start_session(&k2, "other").await;
    assert_eq!(body["fence"], 1, "fences are per key");
}

/// A retried start with the same session_id while it is live is the same
/// session and terminates nothing.
#[tokio::test]
async fn start_retry_with_same_session_id_is_idempotent() {
    let s = TestServer::start().await;
    let (key, _) = s.create_key(json!({})).await;
    let req = json!({"access_key": key, "session_id": "client-chosen-1", "device": {"name": "A"}});
    let (status, first) = s.post("/api/session/start", req.clone()).await;
    assert_eq!(status, 200);
    s.clock.advance_secs(10);
    let (status, again) = s.post("/api/session/start", req).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["session_id"], "client-chosen-1");
    assert_eq!(again["fence"], first["fence"]);
    assert_eq!(again["previous_session_terminated"], false);
    assert_eq!(s.events_of("session_started").await.len(), 1);
    // The retry counted as a sign of life.
    let expires = Timestamp::parse_rfc3339(again["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(expires, s.now().plus_secs(60));
}

/// A session_id used before (by any key) and not live for this key is
/// refused with session_id_taken.
#[tokio::test]
async fn reused_session_id_is_taken() {
    let s = TestServer::start().await;
    let (k1, _) = s.create_key(json!({})).await;
    let (k2, _) = s.create_key(json!({})).await;
    let start = |key: &str| json!({"access_key": key, "session_id": "reused-id-123"});
    assert_eq!(s.post("/api/session/start", start(&k1)).await.0, 200);
    let (status, body) = s.post("/api/session/start", start(&k2)).await;
    assert_error(status, &body, 409, "session_id_taken");
    s.end(&k1, "reused-id-123").await;
    let (status, body) = s.post("/api/session/start", start(&k1)).await;
    assert_error(status, &body, 409, "session_id_taken");
}

/// Unknown session ids, and ids that belong to another key, are 404.
#[tokio::test]
async fn unknown_session_is_not_found() {
    let s = TestServer::start().await;
    let (k1, _) = s.create_key(json!({})).await;
    let (k2, _) = s.create_key(json!({})).await;
    let (status, body) = s.heartbeat(&k1, "never-existed").await;
    assert_error(status, &body, 404, "session_not_found");
    let other = s.started(&k2, "x").await;
    let (status, body) = s.heartbeat(&k1, &other).await;
    assert_error(status, &body, 404, "session_not_found");
    let (status, body) = s.end(&k1, &other).await;
    assert_error(status, &body, 404, "session_not_found");
}

/// Policy reject: a full key refuses a new device with 409 seats_full and
/// records start_rejected, but the same device (same fingerprint)
/// restarting takes its seat back at once.
#[tokio::test]
async fn reject_policy_refuses_others_but_admits_the_same_device() {
    let s = TestServer::start().await;
    let (key, _) = s
        .create_key(json!({"on_conflict": "reject", "max_sessions": 1}))
        .await;
    let dev = |name: &str, fp: &str| json!({"access_key": key, "device": {"name": name, "fingerprint": fp}});
    let (_, a) = s.post("/api/session/start", dev("A", "fp-a")).await;
    let (status, body) = s.post("/api/session/start", dev("B", "fp-b")).await;
    let error = assert_error(status, &body, 409, "seats_full");
    assert_eq!(error["max_sessions"], 1);
    assert_eq!(s.events_of("start_rejected").await.len(), 1);

    let (status, again) = s
        .post("/api/session/start", dev("A restarted", "fp-a"))
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["previous_session_terminated"], true);
    let (status, body) = s.heartbeat(&key, a["session_id"].as_str().unwrap()).await;
    assert_error(status, &body, 409, "session_superseded");
}

/// A 3-seat takeover key holds three devices; a fourth supersedes the one
/// with the oldest heartbeat.
#[tokio::test]
async fn takeover_supersedes_the_oldest_heartbeat() {
    let s = TestServer::start().await;
    let (key, _) = s.create_key(json!({"max_sessions": 3})).await;
    let a = s.started(&key, "A").await;
    s.clock.advance_secs(1);
    let b = s.started(&key, "B").await;
    s.clock.advance_secs(1);
    let c = s.started(&key, "C").await;
    s.clock.advance_secs(1);
    s.heartbeat(&key, &a).await; // now B has the oldest heartbeat
    let (_, d) = s.start_session(&key, "D").await;
    assert_eq!(d["terminated_sessions"][0]["session_id"], b.as_str());
    for (id, code) in [(&a, 200), (&b, 409), (&c, 200)] {
        assert_eq!(s.heartbeat(&key, id).await.0.as_u16(), code);
    }
}

/// Key problems are reported on every session endpoint: invalid (bad
/// checksum or unknown), revoked, suspended, expired.
#[tokio::test]
async fn key_problems_on_every_session_endpoint() {
    let s = TestServer::start().await;
    let (key, created) = s.create_key(json!({})).await;
    let id = s.started(&key, "A").await;
    let key_id = created["key_id"].as_str().unwrap().to_owned();

    // A typo (checksum fails) and a well-formed but unknown key.
    let mut typo = key.clone().into_bytes();
    typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    let unknown = {
        let k = keyseat::keys::AccessKey::generate();
        k.expose_secret().to_owned()
    };
    for bad in [typo.as_str(), unknown.as_str(), "ks_short", key_id.as_str()] {
        for (path, body) in [
            ("/api/session/start", json!({"access_key": bad})),
            (
                "/api/session/heartbeat",
                json!({"access_key": bad, "session_id": id}),
            ),
            (
                "/api/session/end",
                json!({"access_key": bad, "session_id": id}),
            ),
            ("/api/session/status", json!({"access_key": bad})),
        ] {
            let (status, body) = s.post(path, body).await;
            assert_error(status, &body, 401, "invalid_key");
            assert!(
                !body.to_string().contains(bad) || bad.len() < 12,
                "key echoed"
            );
        }
    }

    let key_path = format!("/api/admin/keys/{key_id}");
    let patch = |body| s.admin("PATCH", &key_path, Some(body));
    patch(json!({"status": "suspended"})).await;
    let (status, body) = s.heartbeat(&key, &id).await;
    assert_error(status, &body, 403, "key_suspended");
    let (status, body) = s.status(&key).await;
    assert_error(status, &body, 403, "key_suspended");
    patch(json!({"status": "active"})).await;
    // Suspension ended the session for good, reason revoked.
    let (status, body) = s.heartbeat(&key, &id).await;
    assert_error(status, &body, 410, "session_revoked");

    let past = s.now().minus_secs(1).to_rfc3339();
    patch(json!({"expires_at": past})).await;
    let (status, body) = s.start_session(&key, "A").await;
    assert_error(status, &body, 403, "key_expired");
    patch(json!({"expires_at": null})).await;
    assert_eq!(s.start_session(&key, "A").await.0, 200);

    s.admin("POST", &format!("/api/admin/keys/{key_id}/revoke"), None)
        .await;
    let (status, body) = s.start_session(&key, "A").await;
    assert_error(status, &body, 403, "key_revoked");
    let (status, body) = s.end(&key, &id).await;
    assert_error(status, &body, 403, "key_revoked");
}

/// An admin kick ends the session; the device hears 410 session_revoked.
#[tokio::test]
async fn kicked_session_hears_session_revoked() {
    let s = TestServer::start().await;
    let (key, _) = s.create_key(json!({})).await;
    let id = s.started(&key, "A").await;
    let (status, body) = s
        .admin("DELETE", &format!("/api/admin/sessions/{id}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["ended"], true);
    let (status, body) = s.heartbeat(&key, &id).await;
    let error = assert_error(status, &body, 410, "session_revoked");
    assert_eq!(error["reason"], "revoked");
    let (status, body) = s.end(&key, &id).await;
    assert_eq!(
        (status.as_u16(), body["reason"].clone()),
        (200, json!("revoked"))
    );
}

/// Device names and fingerprints are optional, trimmed, and limited.
#[tokio::test]
async fn device_details_are_optional_and_recorded() {
    let s = TestServer::start().await;
    let (key, _) = s.create_key(json!({})).await;
    let (status, _) = s
        .post("/api/session/start", json!({"access_key": key}))
        .await;
    assert_eq!(status, 200);
    let (status, body) = s
        .post(
            "/api/session/start",
            json!({"access_key": key, "device": {"name": "  Ana's PC  ", "fingerprint": "f".repeat(256)}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, sessions) = s.admin("GET", "/api/admin/sessions", None).await;
    assert_eq!(sessions["sessions"][0]["device_name"], "Ana's PC");
    assert_eq!(sessions["sessions"][0]["client_addr"], "127.0.0.1");
}
