//! Bad input gets the contract's JSON error, a 4xx status and a message
//! that names the problem, and the server stays healthy afterwards.

mod common;

use common::{assert_error, TestServer, ADMIN_TOKEN};
use serde_json::json;

/// A table of malformed requests to every session endpoint: each is a 4xx
/// with the JSON error shape, and `/health` is still 200 afterwards.
#[tokio::test]
async fn malformed_requests_get_json_errors() {
    let s = TestServer::start().await;
    let (key, _) = s.create_key(json!({})).await;
    let id = s.started(&key, "A").await;

    // (path, content type, raw body, status, code, words the message must contain)
    let long_name = "n".repeat(129);
    let long_fp = "f".repeat(257);
    let long_id = "i".repeat(129);
    let huge = format!(r#"{{"access_key": "{}"}}"#, "x".repeat(17 * 1024));
    let cases: Vec<(&str, &str, String, u16, &str, &str)> = vec![
        (
            "/api/session/start",
            "application/json",
            "{not json".into(),
            400,
            "invalid_request",
            "not valid JSON",
        ),
        (
            "/api/session/start",
            "application/json",
            "[1, 2]".into(),
            400,
            "invalid_request",
            "invalid",
        ),
        (
            "/api/session/start",
            "application/json",
            "\"text\"".into(),
            400,
            "invalid_request",
            "invalid",
        ),
        (
            "/api/session/start",
            "application/json",
            "{}".into(),
            400,
            "invalid_request",
            "access_key",
        ),
        (
            "/api/session/start",
            "application/json",
            "".into(),
            400,
            "invalid_request",
            "access_key",
        ),
        (
            "/api/session/start",
            "application/json",
            r#"{"access_key": 42}"#.into(),
            400,
            "invalid_request",
            "access_key",
        ),
        (
            "/api/session/start",
            "application/json",
            r#"{"access_key": null}"#.into(),
            400,
            "invalid_request",
            "access_key",
        ),
        (
            "/api/session/start",
            "application/json",
            format!(r#"{{"access_key": "{key}", "device": "laptop"}}"#),
            400,
            "invalid_request",
            "device",
        ),
        (
            "/api/session/start",
            "application/json",
            format!(r#"{{"access_key": "{key}", "device": {{"name": 5}}}}"#),
            400,
            "invalid_request",
            "device.name",
        ),
        (
            "/api/session/start",
            "application/json",
            format!(r#"{{"access_key": "{key}", "device": {{"name": "{long_name}"}}}}"#),
            400,
            "invalid_request",
            "device.name",
        ),
        (
            "/api/session/start",
            "application/json",
            format!(r#"{{"access_key": "{key}", "device": {{"fingerprint": "{long_fp}"}}}}"#),
            400,
            "invalid_request",
            "device.fingerprint",
        ),
        (
            "/api/session/start",
            "application/json",
            format!(r#"{{"access_key": "{key}", "session_id": "short"}}"#),
            400,
            "invalid_request",
            "session_id",
        ),
        (
            "/api/session/start",
            "application/json",
            format!(r#"{{"access_key": "{key}", "session_id": "{long_id}"}}"#),
            400,
            "invalid_request",
            "session_id",
        ),
        (
            "/api/session/start",
            "application/json",
            format!(r#"{{"access_key": "{key}", "session_id": "has spaces in it"}}"#),
            400,
            "invalid_request",
            "session_id",
        ),
        (
            "/api/session/start",
            "application/json",
            format!(r#"{{"access_key": "{key}", "session_id": "../../etc/passwd"}}"#),
            400,
            "invalid_request",
            "session_id",
        ),
        (
            "/api/session/start",
            "application/json",
            format!(r#"{{"access_key": "{key}", "session_id": 12345678}}"#),
            400,
            "invalid_request",
            "session_id",
        ),
        (
            "/api/session/start",
            "application/json",
            format!(r#"{{"access_key": "{}"}}"#, "k".repeat(300)),
            400,
            "invalid_request",
            "access_key",
        ),
        (
            "/api/session/start",
            "text/plain",
            format!(r#"{{"access_key": "{key}"}}"#),
            415,
            "unsupported_media_type",
            "application/json",
        ),
        (
            "/api/session/start",
            "",
            format!(r#"{{"access_key": "{key}"}}"#),
            415,
            "unsupported_media_type",
            "application/json",
        ),
        (
            "/api/session/start",
            "application/json",
            huge,
            413,
            "payload_too_large",
            "16384",
        ),
        (
            "/api/session/heartbeat",
            "application/json",
            format!(r#"{{"access_key": "{key}"}}"#),
            400,
            "invalid_request",
            "session_id",
        ),
        (
            "/api/session/heartbeat",
            "application/json",
            format!(r#"{{"access_key": "{key}", "session_id": "bad id!"}}"#),
            400,
            "invalid_request",
            "session_id",
        ),
        (
            "/api/session/heartbeat",
            "application/json",
            format!(r#"{{"access_key": "{key}", "session_id": ["{id}"]}}"#),
            400,
            "invalid_request",
            "session_id",
        ),
        (
            "/api/session/end",
            "application/json",
            format!(r#"{{"session_id": "{id}"}}"#),
            400,
            "invalid_request",
            "access_key",
        ),
        (
            "/api/session/end",
            "application/json",
            format!(r#"{{"access_key": "{key}", "session_id": ""}}"#),
            400,
            "invalid_request",
            "session_id",
        ),
        (
            "/api/session/status",
            "application/json",
            "{\"access_key\": true}".into(),
            400,
            "invalid_request",
            "access_key",
        ),
        (
            "/api/session/status",
            "application/json",
            "{\"access_key\": \"\\ud800\"}".into(),
            400,
            "invalid_request",
            "",
        ),
    ];
    for (path, content_type, body, want_status, want_code, words) in cases {
        let mut req = s.client.post(format!("{}{path}", s.url)).body(body.clone());
        if !content_type.is_empty() {
            req = req.header("content-type", content_type);
        }
        let (status, reply) = common::split(req.send().await.unwrap()).await;
        let error = assert_error(status, &reply, want_status, want_code);
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains(words),
            "{path} {}: message {message:?} lacks {words:?}",
            &body[..body.len().min(80)]
        );
        assert!(
            !message.contains(&key),
            "the access key must never be echoed"
        );
    }
    let (status, body) = s.get("/health").await;
    assert_eq!(
        (status.as_u16(), body["status"].clone()),
        (200, json!("ok"))
    );
    // The session started before the barrage is untouched.
    assert_eq!(s.heartbeat(&key, &id).await.0, 200);
}

/// Unknown fields are ignored, as the contract says.
#[tokio::test]
async fn unknown_fields_are_ignored() {
    let s = TestServer::start().await;
    let (key, _) = s.create_key(json!({})).await;
    let (status, body) = s
        .post(
            "/api/session/start",
            json!({"access_key": key, "app_version": "2.1", "device": {"name": "A", "os": "linux"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Unknown routes and wrong methods answer with the JSON error too.
#[tokio::test]
async fn unknown_routes_and_methods_are_json() {
    let s = TestServer::start().await;
    let (status, body) = s.get("/nope").await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = s.get("/api/session/start").await;
    assert_error(status, &body, 405, "method_not_allowed");
    let (status, body) = s.admin("GET", "/api/admin/nope", None).await;
    assert_error(status, &body, 404, "not_found");
}

/// Admin routes need the bearer token: 401 without it or with a wrong one,
/// and every admin route is 404 when no token is configured.
#[tokio::test]
async fn admin_routes_need_the_token() {
    let s = TestServer::start().await;
    for (method, path) in [
        ("GET", "/api/admin/keys"),
        ("POST", "/api/admin/keys"),
        ("GET", "/api/admin/keys/key_x"),
        ("PATCH", "/api/admin/keys/key_x"),
        ("POST", "/api/admin/keys/key_x/revoke"),
        ("GET", "/api/admin/sessions"),
        ("DELETE", "/api/admin/sessions/abcdefgh"),
        ("GET", "/api/admin/events"),
    ] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let url = format!("{}{path}", s.url);
        let (status, body) =
            common::split(s.client.request(m.clone(), &url).send().await.unwrap()).await;
        assert_error(status, &body, 401, "unauthorized");
        for header in [
            "Bearer wrong-token".to_string(),
            format!("Bearer {ADMIN_TOKEN}x"),
            format!("Basic {ADMIN_TOKEN}"),
            ADMIN_TOKEN.to_string(),
        ] {
            let resp = s
                .client
                .request(m.clone(), &url)
                .header("authorization", header)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.headers()["www-authenticate"], "Bearer");
            let (status, body) = common::split(resp).await;
            assert_error(status, &body, 401, "unauthorized");
        }
    }

    // Unknown admin paths and methods need the token too.
    for (method, path) in [("GET", "/api/admin/nope"), ("PUT", "/api/admin/keys")] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let url = format!("{}{path}", s.url);
        let (status, body) = common::split(s.client.request(m, &url).send().await.unwrap()).await;
        assert_error(status, &body, 401, "unauthorized");
    }
    let (status, body) = s.admin("GET", "/api/admin/nope", None).await;
    let error = assert_error(status, &body, 404, "not_found");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("/api/admin/nope"));

    let off = TestServer::start_with(|c| c.admin_token = None).await;
    let (status, body) = common::split(
        off.client
            .get(format!("{}/api/admin/keys", off.url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &body, 404, "not_found");
}

/// Admin input errors: seat limits out of range, bad policy, bad times,
/// bad statuses, unknown keys and sessions, bad paging.
#[tokio::test]
async fn admin_input_errors() {
    let s = TestServer::start().await;
    let (_, key) = s.create_key(json!({})).await;
    let key_path = format!("/api/admin/keys/{}", key["key_id"].as_str().unwrap());
    let cases = [
        (
            "POST",
            "/api/admin/keys".to_string(),
            Some(json!({"max_sessions": 0})),
            400,
            "invalid_request",
            "max_sessions",
        ),
        (
            "POST",
            "/api/admin/keys".to_string(),
            Some(json!({"max_sessions": 1001})),
            400,
            "invalid_request",
            "max_sessions",
        ),
        (
            "POST",
            "/api/admin/keys".to_string(),
            Some(json!({"max_sessions": -1})),
            400,
            "invalid_request",
            "max_sessions",
        ),
        (
            "POST",
            "/api/admin/keys".to_string(),
            Some(json!({"max_sessions": "3"})),
            400,
            "invalid_request",
            "max_sessions",
        ),
        (
            "POST",
            "/api/admin/keys".to_string(),
            Some(json!({"on_conflict": "fight"})),
            400,
            "invalid_request",
            "on_conflict",
        ),
        (
            "POST",
            "/api/admin/keys".to_string(),
            Some(json!({"expires_at": "tomorrow"})),
            400,
            "invalid_request",
            "expires_at",
        ),
        (
            "POST",
            "/api/admin/keys".to_string(),
            Some(json!({"label": "l".repeat(201)})),
            400,
            "invalid_request",
            "label",
        ),
        (
            "PATCH",
            key_path.clone(),
            Some(json!({"status": "revoked"})),
            400,
            "invalid_request",
            "revoke",
        ),
        (
            "PATCH",
            key_path.clone(),
            Some(json!({"status": "paused"})),
            400,
            "invalid_request",
            "status",
        ),
        (
            "PATCH",
            key_path.clone(),
            Some(json!({"max_sessions": 0})),
            400,
            "invalid_request",
            "max_sessions",
        ),
        (
            "PATCH",
            "/api/admin/keys/key_doesnotexist00".to_string(),
            Some(json!({"label": "x"})),
            404,
            "key_not_found",
            "key_doesnotexist00",
        ),
        (
            "GET",
            "/api/admin/keys/key_doesnotexist00".to_string(),
            None,
            404,
            "key_not_found",
            "no key",
        ),
        (
            "POST",
            "/api/admin/keys/key_doesnotexist00/revoke".to_string(),
            None,
            404,
            "key_not_found",
            "no key",
        ),
        (
            "DELETE",
            "/api/admin/sessions/no-such-session".to_string(),
            None,
            404,
            "session_not_found",
            "no-such-session",
        ),
        (
            "GET",
            "/api/admin/keys?limit=0".to_string(),
            None,
            400,
            "invalid_request",
            "limit",
        ),
        (
            "GET",
            "/api/admin/keys?limit=abc".to_string(),
            None,
            400,
            "invalid_request",
            "limit",
        ),
        (
            "GET",
            "/api/admin/keys?after=key_nope".to_string(),
            None,
            400,
            "invalid_request",
            "after",
        ),
        (
            "GET",
            "/api/admin/events?type=nope".to_string(),
            None,
            400,
            "invalid_request",
            "session_started",
        ),
        (
            "GET",
            "/api/admin/events?since=yesterday".to_string(),
            None,
            400,
            "invalid_request",
            "since",
        ),
        (
            "GET",
            "/api/admin/events?limit=100000".to_string(),
            None,
            400,
            "invalid_request",
            "limit",
        ),
    ];
    for (method, path, body, want_status, want_code, words) in cases {
        let (status, reply) = s.admin(method, &path, body.clone()).await;
        let error = assert_error(status, &reply, want_status, want_code);
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains(words),
            "{method} {path} {body:?}: {message:?} lacks {words:?}"
        );
    }
    // A revoked key can't be changed any more.
    s.admin("POST", &format!("{key_path}/revoke"), None).await;
    let (status, reply) = s
        .admin("PATCH", &key_path, Some(json!({"status": "active"})))
        .await;
    assert_error(status, &reply, 409, "conflict");
    assert_eq!(s.get("/health").await.0, 200);
}

/// Rate limits: after the configured number of failed key lookups a client
/// address gets 429 rate_limited with Retry-After, even with a valid key it
/// has not used before, while another address is unaffected.
#[tokio::test]
async fn failed_key_lookups_are_rate_limited_per_address() {
    let s = TestServer::start_with(|c| {
        c.rate_limits = true;
        c.failed_key_lookups_per_minute = 5;
    })
    .await;
    let (key, _) = s.create_key(json!({})).await;
    let guess = keyseat::keys::AccessKey::generate();
    for _ in 0..5 {
        let (status, body) = s.status(guess.expose_secret()).await;
        assert_error(status, &body, 401, "invalid_key");
    }
    let resp = s
        .client
        .post(format!("{}/api/session/status", s.url))
        .json(&json!({"access_key": key}))
        .send()
        .await
        .unwrap();
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    let (status, body) = common::split(resp).await;
    let error = assert_error(status, &body, 429, "rate_limited");
    assert_eq!(error["retry_after_seconds"], retry_after);

    // Another client address (loopback alias) is unaffected.
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let resp = other
        .post(format!("{}/api/session/status", s.url))
        .json(&json!({"access_key": key}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // The window passes.
    s.clock.advance_secs(61);
    assert_eq!(s.status(&key).await.0, 200);
}

/// Wrong admin tokens are rate limited per address as well.
#[tokio::test]
async fn admin_auth_failures_are_rate_limited() {
    let s = TestServer::start_with(|c| {
        c.rate_limits = true;
        c.admin_auth_failures_per_minute = 3;
    })
    .await;
    let url = format!("{}/api/admin/keys", s.url);
    for _ in 0..3 {
        let r = s
            .client
            .get(&url)
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let (status, body) = common::split(
        s.client
            .get(&url)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &body, 429, "rate_limited");
}

/// Before the database is ready every route answers 503, never a wrong
/// answer, and health says the database is not ok.
#[tokio::test]
async fn requests_before_ready_get_503() {
    use tower::ServiceExt;
    let dir = tempfile::tempdir().unwrap();
    let settings = common::test_settings(&dir);
    let state =
        keyseat::http::AppState::new(&settings, std::sync::Arc::new(keyseat::clock::SystemClock));
    let app = keyseat::http::app(state);
    let key = keyseat::keys::AccessKey::generate();
    for (method, path, body) in [
        ("GET", "/health", String::new()),
        (
            "POST",
            "/api/session/start",
            json!({"access_key": key.expose_secret()}).to_string(),
        ),
        (
            "POST",
            "/api/session/heartbeat",
            json!({"access_key": key.expose_secret(), "session_id": "abcdefgh"}).to_string(),
        ),
    ] {
        let req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body))
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 503, "{path}");
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        if path == "/health" {
            assert_eq!(v["database"], "error");
        } else {
            assert_eq!(v["error"]["code"], "unavailable");
        }
    }
}

/// Device names, fingerprints and labels may not hold invisible or
/// direction-changing characters (bidi overrides, embeddings, isolates
/// and marks, line and paragraph separators, zero-width characters, the
/// byte-order mark): a row could pass for another, or two fingerprints look
/// the same. Each is a 400 naming the field and the character, and nothing
/// is stored.
#[tokio::test]
async fn invisible_and_direction_changing_characters_are_refused() {
    let s = TestServer::start().await;
    let (key, created) = s.create_key(json!({"max_sessions": 5})).await;
    let key_path = format!("/api/admin/keys/{}", created["key_id"].as_str().unwrap());
    for c in [
        '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}',
        '\u{2068}', '\u{2069}', '\u{2028}', '\u{2029}', '\u{200B}', '\u{200C}', '\u{200D}',
        '\u{200E}', '\u{200F}', '\u{2060}', '\u{FEFF}',
    ] {
        let spoof = format!("laptop{c}pf");
        let code = c.escape_unicode().to_string();
        for (device, field) in [
            (json!({"name": spoof}), "device.name"),
            (json!({"fingerprint": spoof}), "device.fingerprint"),
        ] {
            let (status, body) = s
                .post(
                    "/api/session/start",
                    json!({"access_key": key, "device": device}),
                )
                .await;
            let e = assert_error(status, &body, 400, "invalid_request");
            let msg = e["message"].as_str().unwrap();
            assert!(msg.contains(field) && msg.contains(&code), "{msg}");
        }
        let (status, body) = s
            .admin("POST", "/api/admin/keys", Some(json!({"label": spoof})))
            .await;
        let e = assert_error(status, &body, 400, "invalid_request");
        assert!(e["message"].as_str().unwrap().contains("label"), "{e}");
        let (status, body) = s
            .admin("PATCH", &key_path, Some(json!({"label": spoof})))
            .await;
        assert_error(status, &body, 400, "invalid_request");
    }
    let (_, k) = s.admin("GET", &key_path, None).await;
    assert_eq!(k["live_sessions"], 0, "no session was started: {k}");
    assert!(k["label"].is_null(), "{k}");
    // Other scripts and symbols are fine.
    let (status, body) = s
        .post(
            "/api/session/start",
            json!({"access_key": key, "device": {"name": "حاسوب · ノート 💻", "fingerprint": "Ünï-1"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// A full access key sent where a session id, a device name or a
/// fingerprint is expected is refused (it would be stored and logged), and
/// the answer does not repeat it.
#[tokio::test]
async fn an_access_key_is_refused_outside_access_key() {
    let s = TestServer::start().await;
    let (key, _) = s.create_key(json!({"max_sessions": 5})).await;
    for (body, field) in [
        (json!({"access_key": key, "session_id": key}), "session_id"),
        (
            json!({"access_key": key, "device": {"name": key}}),
            "device.name",
        ),
        (
            json!({"access_key": key, "device": {"fingerprint": format!("fp {key}")}}),
            "device.fingerprint",
        ),
    ] {
        let (status, answer) = s.post("/api/session/start", body).await;
        let e = assert_error(status, &answer, 400, "invalid_request");
        let msg = e["message"].as_str().unwrap();
        assert!(msg.contains(field), "{msg}");
        assert!(!answer.to_string().contains(&key[11..]), "{answer}");
    }
    for path in [
        "/api/session/heartbeat",
        "/api/session/end",
        "/api/session/status",
    ] {
        let (status, answer) = s
            .post(path, json!({"access_key": key, "session_id": key}))
            .await;
        if path.ends_with("status") && status == 200 {
            continue; // status may ignore session_id
        }
        let e = assert_error(status, &answer, 400, "invalid_request");
        assert!(
            e["message"].as_str().unwrap().contains("session_id"),
            "{path}: {e}"
        );
    }
}
