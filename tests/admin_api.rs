//! The admin API: keys, live sessions and the audit log.

mod common;

use common::{assert_error, TestServer};
use keyseat::clock::Timestamp;
use serde_json::json;

/// Creating a key returns 201, every field, and the secret exactly once.
#[tokio::test]
async fn create_key_returns_the_secret_once() {
    let s = TestServer::start().await;
    let expires = s.now().plus_secs(86_400).to_rfc3339();
    let (status, key) = s
        .admin(
            "POST",
            "/api/admin/keys",
            Some(json!({"label": "Acme Ltd", "max_sessions": 3, "on_conflict": "reject", "expires_at": expires})),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let secret = key["access_key"].as_str().unwrap();
    assert!(keyseat::keys::AccessKey::parse(secret).is_ok());
    assert_eq!(key["prefix"], &secret[..11]);
    assert!(key["key_id"].as_str().unwrap().starts_with("key_"));
    assert_eq!(key["label"], "Acme Ltd");
    assert_eq!(key["max_sessions"], 3);
    assert_eq!(key["on_conflict"], "reject");
    assert_eq!(key["status"], "active");
    assert_eq!(key["expires_at"], expires.as_str());
    assert_eq!(key["live_sessions"], 0);

    // Defaults, and an empty body is fine.
    let (status, plain) = s.admin("POST", "/api/admin/keys", None).await;
    assert_eq!(status, 201);
    assert_eq!(plain["max_sessions"], 1);
    assert_eq!(plain["on_conflict"], "takeover");
    assert_eq!(plain["expires_at"], json!(null));

    // The secret is never shown again.
    let key_id = key["key_id"].as_str().unwrap();
    let (_, got) = s
        .admin("GET", &format!("/api/admin/keys/{key_id}"), None)
        .await;
    let (_, list) = s.admin("GET", "/api/admin/keys", None).await;
    for body in [got.to_string(), list.to_string()] {
        assert!(!body.contains(secret));
        assert!(!body.contains("access_key"));
    }
    let events = s.events_of("key_created").await;
    assert_eq!(events.len(), 2);
    assert!(!json!(events).to_string().contains(secret));
}

/// Keys are listed in creation order, a page at a time.
#[tokio::test]
async fn list_keys_pages_with_after() {
    let s = TestServer::start().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let (_, k) = s.create_key(json!({"label": format!("k{i}")})).await;
        ids.push(k["key_id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let (status, page) = s
            .admin(
                "GET",
                &format!("/api/admin/keys?limit=2&after={after}"),
                None,
            )
            .await;
        assert_eq!(status, 200);
        for k in page["keys"].as_array().unwrap() {
            seen.push(k["key_id"].as_str().unwrap().to_owned());
        }
        match page["next_after"].as_str() {
            Some(next) => after = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, ids);
}

/// A key can be fetched by its id or its display prefix.
#[tokio::test]
async fn get_key_by_id_or_prefix() {
    let s = TestServer::start().await;
    let (secret, key) = s.create_key(json!({})).await;
    for r in [
        key["key_id"].as_str().unwrap(),
        &secret[..11],
        &secret[3..11],
    ] {
        let (status, got) = s.admin("GET", &format!("/api/admin/keys/{r}"), None).await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(got["key_id"], key["key_id"]);
    }
    // The secret itself is never a key id.
    let (status, body) = s
        .admin("GET", &format!("/api/admin/keys/{secret}"), None)
        .await;
    let error = assert_error(status, &body, 404, "key_not_found");
    assert!(!error["message"].as_str().unwrap().contains(&secret[11..]));
}

/// PATCH changes only what it names; null clears label and expiry;
/// lowering the seat limit ends the excess live sessions (oldest heartbeat
/// first) with reason revoked.
#[tokio::test]
async fn patch_key_semantics() {
    let s = TestServer::start().await;
    let (secret, key) = s
        .create_key(json!({"label": "x", "max_sessions": 3, "expires_at": "2099-01-01T00:00:00Z"}))
        .await;
    let path = format!("/api/admin/keys/{}", key["key_id"].as_str().unwrap());
    let a = s.started(&secret, "A").await;
    s.clock.advance_secs(1);
    let b = s.started(&secret, "B").await;
    s.clock.advance_secs(1);
    let c = s.started(&secret, "C").await;
    s.clock.advance_secs(1);
    s.heartbeat(&secret, &a).await; // B is now the oldest heartbeat, then C

    let (status, k) = s
        .admin("PATCH", &path, Some(json!({"max_sessions": 1})))
        .await;
    assert_eq!(status, 200, "{k}");
    assert_eq!(k["max_sessions"], 1);
    assert_eq!(k["label"], "x", "untouched");
    assert_eq!(k["live_sessions"], 1);
    assert_eq!(s.heartbeat(&secret, &a).await.0, 200);
    for gone in [&b, &c] {
        let (status, body) = s.heartbeat(&secret, gone).await;
        assert_error(status, &body, 410, "session_revoked");
    }
    assert_eq!(s.events_of("session_revoked").await.len(), 2);

    let (_, k) = s
        .admin(
            "PATCH",
            &path,
            Some(json!({"label": null, "expires_at": null, "on_conflict": "reject"})),
        )
        .await;
    assert_eq!(k["label"], json!(null));
    assert_eq!(k["expires_at"], json!(null));
    assert_eq!(k["on_conflict"], "reject");
    assert_eq!(k["max_sessions"], 1);
    let (status, same) = s.admin("PATCH", &path, Some(json!({}))).await;
    assert_eq!(
        (status.as_u16(), same["key_id"].clone()),
        (200, k["key_id"].clone())
    );
    let updated = s.events_of("key_updated").await;
    assert_eq!(updated.len(), 2, "an empty PATCH records nothing");
    assert_eq!(updated[0]["detail"]["label"], json!(null));
}

/// Revoking ends the key's live sessions, is final, and is idempotent.
#[tokio::test]
async fn revoke_key_ends_sessions_for_good() {
    let s = TestServer::start().await;
    let (secret, key) = s.create_key(json!({"max_sessions": 2})).await;
    let path = format!("/api/admin/keys/{}/revoke", key["key_id"].as_str().unwrap());
    s.started(&secret, "A").await;
    s.started(&secret, "B").await;
    let (status, k) = s.admin("POST", &path, None).await;
    assert_eq!(status, 200);
    assert_eq!(k["status"], "revoked");
    assert!(k["revoked_at"].is_string());
    assert_eq!(k["live_sessions"], 0);
    assert_eq!(s.events_of("session_revoked").await.len(), 2);
    assert_eq!(s.events_of("key_revoked").await.len(), 1);
    let (status, again) = s.admin("POST", &path, None).await;
    assert_eq!(
        (status.as_u16(), again["status"].clone()),
        (200, json!("revoked"))
    );
    assert_eq!(s.events_of("key_revoked").await.len(), 1, "idempotent");
    let (_, sessions) = s.admin("GET", "/api/admin/sessions", None).await;
    assert_eq!(sessions["sessions"], json!([]));
}

/// The live session list shows each session's key, device and heartbeat
/// age, newest heartbeat first, and can be filtered by key.
#[tokio::test]
async fn live_sessions_list() {
    let s = TestServer::start().await;
    let (k1, key1) = s.create_key(json!({})).await;
    let (k2, _) = s.create_key(json!({})).await;
    let a = s.started(&k1, "A").await;
    s.clock.advance_secs(7);
    let b = s.started(&k2, "B").await;
    let (status, body) = s.admin("GET", "/api/admin/sessions", None).await;
    assert_eq!(status, 200);
    let list = body["sessions"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["session_id"], b.as_str());
    assert_eq!(list[1]["session_id"], a.as_str());
    assert_eq!(list[1]["seconds_since_heartbeat"], 7);
    assert_eq!(list[1]["key_prefix"], &k1[..11]);
    for field in [
        "key_id",
        "device_name",
        "started_at",
        "last_heartbeat",
        "expires_at",
        "fence",
    ] {
        assert!(!list[0][field].is_null(), "{field}");
    }
    let (_, only) = s
        .admin(
            "GET",
            &format!(
                "/api/admin/sessions?key_id={}",
                key1["key_id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(only["sessions"].as_array().unwrap().len(), 1);
    // Expired sessions drop off the list without any sweep.
    s.clock.advance_secs(55);
    let (_, body) = s.admin("GET", "/api/admin/sessions", None).await;
    assert_eq!(body["sessions"].as_array().unwrap().len(), 1);
}

/// Kicking a session twice: ended, then already ended with its reason.
#[tokio::test]
async fn kick_is_idempotent() {
    let s = TestServer::start().await;
    let (k, _) = s.create_key(json!({})).await;
    let id = s.started(&k, "A").await;
    let path = format!("/api/admin/sessions/{id}");
    let (_, first) = s.admin("DELETE", &path, None).await;
    assert_eq!(first["ended"], true);
    let (status, second) = s.admin("DELETE", &path, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        second,
        json!({"session_id": id, "ended": false, "reason": "revoked"})
    );
}

/// The audit log: newest first, filtered by key, type and time, paged with
/// `before`, each event with time, key, session, device and client address.
#[tokio::test]
async fn events_filter_and_page() {
    let s = TestServer::start().await;
    let (k1, key1) = s.create_key(json!({})).await;
    let (k2, _) = s.create_key(json!({})).await;
    let key1_id = key1["key_id"].as_str().unwrap();
    let a = s.started(&k1, "A").await;
    s.clock.advance_secs(10);
    let since = s.now();
    s.started(&k1, "B").await;
    s.started(&k2, "C").await;
    s.end(&k1, &a).await; // already superseded: no new event

    let (status, body) = s.admin("GET", "/api/admin/events", None).await;
    assert_eq!(status, 200);
    let all = body["events"].as_array().unwrap();
    let types: Vec<&str> = all.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "session_started",
            "session_started",
            "session_superseded",
            "session_started",
            "key_created",
            "key_created"
        ]
    );
    let started = &all[3];
    assert_eq!(started["session_id"], a.as_str());
    assert_eq!(started["device_name"], "A");
    assert_eq!(started["key_id"], key1_id);
    assert_eq!(started["client_addr"], "127.0.0.1");
    assert!(Timestamp::parse_rfc3339(started["at"].as_str().unwrap()).is_some());

    let (_, by_key) = s
        .admin("GET", &format!("/api/admin/events?key_id={key1_id}"), None)
        .await;
    assert_eq!(by_key["events"].as_array().unwrap().len(), 4);
    let (_, by_type) = s
        .admin(
            "GET",
            &format!("/api/admin/events?key_id={key1_id}&type=session_started"),
            None,
        )
        .await;
    assert_eq!(by_type["events"].as_array().unwrap().len(), 2);
    let (_, recent) = s
        .admin(
            "GET",
            &format!("/api/admin/events?since={}", since.to_rfc3339()),
            None,
        )
        .await;
    assert_eq!(recent["events"].as_array().unwrap().len(), 3);

    let (_, page1) = s.admin("GET", "/api/admin/events?limit=4", None).await;
    let before = page1["next_before"].as_i64().unwrap();
    let (_, page2) = s
        .admin(
            "GET",
            &format!("/api/admin/events?limit=4&before={before}"),
            None,
        )
        .await;
    assert_eq!(page2["events"].as_array().unwrap().len(), 2);
    assert_eq!(page2["next_before"], json!(null));
}

/// History older than history_days is pruned by the sweep; a device asking
/// about a pruned session hears session_not_found.
#[tokio::test]
async fn sweep_prunes_history_past_retention() {
    let s = TestServer::start_with(|c| c.history_days = 1).await;
    let (k, _) = s.create_key(json!({})).await;
    let id = s.started(&k, "A").await;
    s.end(&k, &id).await;
    s.clock.advance_secs(86_400 + 1);
    let store = s.store();
    let now = s.now();
    let report = keyseat::store::blocking(move || store.sweep(now, 1, true))
        .await
        .unwrap();
    assert_eq!(report.pruned_sessions, 1);
    assert_eq!(report.pruned_events, 3);
    let (status, body) = s.heartbeat(&k, &id).await;
    assert_error(status, &body, 404, "session_not_found");
    // The key itself is never pruned.
    assert_eq!(s.start_session(&k, "A").await.0, 200);
}

/// A key whose expiry passes has its live sessions ended by the sweep
/// (reason revoked) and refuses heartbeats with key_expired at once.
#[tokio::test]
async fn key_expiry_ends_its_sessions() {
    let s = TestServer::start().await;
    let expires = s.now().plus_secs(20);
    let (k, _) = s
        .create_key(json!({"expires_at": expires.to_rfc3339()}))
        .await;
    let id = s.started(&k, "A").await;
    s.clock.advance_secs(20);
    let (status, body) = s.heartbeat(&k, &id).await;
    assert_error(status, &body, 403, "key_expired");
    let store = s.store();
    let now = s.now();
    let report = keyseat::store::blocking(move || store.sweep(now, 30, true))
        .await
        .unwrap();
    assert_eq!(report.revoked.len(), 1);
    assert_eq!(report.revoked[0].session_id, id);
}
