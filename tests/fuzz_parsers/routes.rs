//! Targets through the router: route bodies and admin query strings,
//! and the refusals found along the way.

use super::*;

/// Every route's body extractor and validators, through the real router:
/// only the contract's codes, 400s name a field, accepted bodies obey the
/// limits.
#[test]
fn route_bodies_are_parsed_to_the_contract() {
    let h = Harness::new();
    for route in Route::ALL {
        let (method, path, admin) = match route {
            Route::Start => ("POST", "/api/session/start".to_owned(), false),
            Route::Heartbeat => ("POST", "/api/session/heartbeat".to_owned(), false),
            Route::End => ("POST", "/api/session/end".to_owned(), false),
            Route::Status => ("POST", "/api/session/status".to_owned(), false),
            Route::CreateKey => ("POST", "/api/admin/keys".to_owned(), true),
            Route::PatchKey => ("PATCH", format!("/api/admin/keys/{}", h.patch_key_id), true),
        };
        let strategy = body_for(route, h.key.clone(), h.session_id.clone());
        let statuses = std::sync::Mutex::new(std::collections::BTreeMap::<u16, u64>::new());
        fuzz(&format!("body {method} {path}"), 300, strategy, |body| {
            let (status, answer) = h.send(method, &path, body.as_bytes(), admin);
            *statuses.lock().unwrap().entry(status.as_u16()).or_default() += 1;
            if status.is_success() {
                return check_accepted(route, &h, &body, &answer);
            }
            let code = answer["error"]["code"].as_str().unwrap_or_default();
            let message = answer["error"]["message"].as_str().unwrap_or_default();
            prop_assert!(is_snake_case(code) && !message.is_empty(), "{}", answer);
            prop_assert!(
                route.allowed(status.as_u16(), code),
                "{} {}: {} {} for {:?}",
                method,
                path,
                status,
                answer,
                body
            );
            if status == StatusCode::BAD_REQUEST {
                if let Ok(Value::Object(_)) = serde_json::from_str::<Value>(&body) {
                    let names = route.fields().iter().any(|f| message.contains(f));
                    prop_assert!(
                        names,
                        "400 without a field name: {} for {:?}",
                        message,
                        body
                    );
                }
            }
            Ok(())
        });
        println!("    statuses: {:?}", statuses.lock().unwrap());
    }
}

/// Text a name, fingerprint or label may hold: up to `max` characters with
/// no control and no invisible or direction-changing character.
fn visible_text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[^\\p{{Cc}}]{{0,{max}}}"))
        .expect("a valid pattern")
        .prop_map(|s| s.chars().filter(|&c| !reference_invisible(c)).collect())
}

/// Bodies that follow the contract are accepted (the other direction of
/// the property above): random valid labels, limits, policies and times
/// for key creation; random valid devices and ids for starts.
#[test]
fn valid_bodies_are_accepted() {
    let h = Harness::new();
    let label = prop_oneof![
        visible_text(200),
        Just(String::new()),
        Just("é".repeat(200))
    ];
    let create = (
        prop::option::of(label),
        prop::option::of(1..=1000u32),
        prop::option::of(prop::sample::select(vec!["takeover", "reject"])),
        prop::option::of(0i64..=253_402_300_799_000),
    );
    fuzz("valid create", 200, create, |(label, max, policy, at)| {
        let mut body = serde_json::Map::new();
        if let Some(l) = &label {
            body.insert("label".into(), json!(l));
        }
        if let Some(m) = max {
            body.insert("max_sessions".into(), json!(m));
        }
        if let Some(p) = policy {
            body.insert("on_conflict".into(), json!(p));
        }
        if let Some(t) = at {
            body.insert("expires_at".into(), json!(Timestamp(t).to_rfc3339()));
        }
        let body = Value::Object(body).to_string();
        let (status, answer) = h.send("POST", "/api/admin/keys", body.as_bytes(), true);
        prop_assert_eq!(status, StatusCode::CREATED, "{} for {}", answer, body);
        check_accepted(Route::CreateKey, &h, &body, &answer)
    });
    let start = (
        prop::option::of("[A-Za-z0-9._-]{8,128}"),
        prop::option::of(visible_text(128)),
        prop::option::of(visible_text(256)),
    );
    fuzz("valid start", 200, start, |(id, name, fp)| {
        let body = json!({
            "access_key": h.key,
            "session_id": id,
            "device": {"name": name, "fingerprint": fp},
        })
        .to_string();
        let (status, answer) = h.send("POST", "/api/session/start", body.as_bytes(), false);
        prop_assert!(
            status == StatusCode::OK || answer["error"]["code"] == "session_id_taken",
            "{} {} for {}",
            status,
            answer,
            body
        );
        if status.is_success() {
            check_accepted(Route::Start, &h, &body, &answer)?;
        }
        Ok(())
    });
}

/// Query strings of the admin list routes (`?limit=&after=`,
/// `?key_id=&type=&since=&before=&limit=`, `?key_id=`): 200 or the
/// contract's 400 naming the parameter (404 `key_not_found` for a key
/// filter that matches no key).
#[test]
fn admin_query_strings_are_parsed_to_the_contract() {
    let h = Harness::new();
    let param_value = prop_oneof![
        prop::sample::select(vec![
            "",
            "0",
            "1",
            "1000",
            "1001",
            "-1",
            "4294967296",
            "1.5",
            "abc",
            "%FF",
            "%00",
            "%2B1",
            "+1",
            "1e3",
            "session_started",
            "nope",
            "2026-01-01T00:00:00Z",
            "2026-01-01T00%3A00%3A00Z",
            "30m",
            "%E2%80%AE",
            "ks_",
            "key_x",
        ])
        .prop_map(str::to_owned),
        "[ -~]{0,20}".prop_map(|s| s.replace(['#', ' '], "%20")),
        prop::collection::vec(any::<u8>(), 0..12)
            .prop_map(|b| { b.iter().map(|x| format!("%{x:02X}")).collect::<String>() }),
    ];
    let name = prop::sample::select(vec![
        "limit", "after", "key_id", "type", "since", "before", "LIMIT", "x", "", "limit[]",
    ]);
    let query = prop::collection::vec((name, param_value), 0..5);
    let paths = [
        "/api/admin/keys",
        "/api/admin/events",
        "/api/admin/sessions",
    ];
    let strategy = (prop::sample::select(paths.to_vec()), query);
    fuzz("admin query strings", 600, strategy, |(path, params)| {
        let q: Vec<String> = params.iter().map(|(n, v)| format!("{n}={v}")).collect();
        let uri = format!("{path}?{}", q.join("&"));
        prop_assume!(uri.parse::<axum::http::Uri>().is_ok());
        let (status, answer) = h.send("GET", &uri, b"", true);
        if status.is_success() {
            return Ok(());
        }
        let code = answer["error"]["code"].as_str().unwrap_or_default();
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        prop_assert!(
            matches!(
                (status.as_u16(), code),
                (400, "invalid_request") | (404, "key_not_found")
            ),
            "{}: {} {}",
            uri,
            status,
            answer
        );
        prop_assert!(!message.is_empty());
        if status == StatusCode::BAD_REQUEST {
            let named = ["limit", "after", "key_id", "type", "since", "before"]
                .iter()
                .any(|p| message.contains(p));
            prop_assert!(named, "{}: 400 without a parameter name: {}", uri, message);
        }
        Ok(())
    });
}

/// Regression (found by `key_ref` and `rfc3339`, fixed in a92d161): a full
/// key behind a quote or a byte-order mark was echoed in `key_not_found`
/// (admin API, CLI) and in `invalid_request` for times.
#[test]
fn a_quoted_or_bom_prefixed_key_is_not_echoed() {
    let key = AccessKey::generate();
    let secret = key.expose_secret();
    for wrapped in [
        format!("\"{secret}\""),
        format!("\u{feff}{secret}"),
        format!("'{secret}'"),
        format!("<{secret}>"),
    ] {
        let m = input::time("expires_at", &wrapped).unwrap_err().to_string();
        assert!(!m.contains(secret), "time echoes the key: {m}");
        assert!(
            !keys::redact_secret(&wrapped).contains(secret),
            "redact_secret: {wrapped}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("bug.db"), OpenMode::CreateAndMigrate).unwrap();
    let m = store
        .get_key(&format!("\"{secret}\""), Timestamp(0))
        .unwrap_err()
        .to_string();
    assert!(!m.contains(secret), "key_not_found echoes the key: {m}");
}

/// Regression (found by `json_body`, fixed in a92d161): a syntax-class
/// error raised inside a field, such as serde_json's "trailing characters"
/// when a struct field gets a longer array (`"device": ["a", "b", null]`),
/// was reported as "the request body is not valid JSON" without the
/// field's name, though the body is valid JSON.
#[test]
fn an_error_inside_a_field_names_it() {
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Start {
        access_key: String,
        device: Option<Device>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Device {
        name: Option<String>,
        fingerprint: Option<String>,
    }
    let body = br#"{"access_key": "x", "device": ["a", "b", null]}"#;
    match parse_json::<Start>(body) {
        Err(Error::InvalidRequest(m)) => assert!(m.contains("device"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// Regression (found by `body POST /api/session/start`, fixed in
/// a92d161): a body given as a JSON array of the request's fields was a
/// start.
#[test]
fn array_bodies_are_refused() {
    let h = Harness::new();
    let top = json!([h.key, null, null]).to_string();
    let (status, answer) = h.send("POST", "/api/session/start", top.as_bytes(), false);
    assert_eq!(status, StatusCode::BAD_REQUEST, "top-level array: {answer}");
    assert_eq!(answer["error"]["code"], "invalid_request");
}

/// Found by this file (fixed with `extract::object_or_null`): `device`
/// given as a JSON array of its fields (`["phone", "fp"]`) was accepted.
#[test]
fn device_arrays_are_refused() {
    let h = Harness::new();
    let nested = json!({"access_key": h.key, "device": ["phone", "fp"]}).to_string();
    let (status, answer) = h.send("POST", "/api/session/start", nested.as_bytes(), false);
    assert_eq!(status, StatusCode::BAD_REQUEST, "device array: {answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("device:"), "{message}");
}

/// Found by this file (fixed in `parse_json`): a body with anything after
/// its JSON value (`{}A`, `{"access_key": "…"} trailing`) was accepted;
/// it is 400 `invalid_request` "not valid JSON".
#[test]
fn trailing_garbage_after_the_json_body_is_refused() {
    let h = Harness::new();
    let (status, answer) = h.send("POST", "/api/admin/keys", b"{}A", true);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let body = format!("{} trailing", json!({"access_key": h.key}));
    let (status, answer) = h.send("POST", "/api/session/status", body.as_bytes(), false);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
}

/// Found by `key_ref`, `access_key` and `rfc3339` (fixed in
/// `redact_secret`): a key whose `ks_` lies inside the run after an earlier
/// `ks_` (`ks_ks_<key>`, `ks_AAAAAAAAAAAAks_<key>`) was shown.
#[test]
fn a_key_inside_another_tag_run_is_redacted() {
    let key = AccessKey::generate();
    let secret = key.expose_secret();
    for text in [
        format!("ks_{secret}"),
        format!("ks_AAAAAAAAAAAA{secret}"),
        format!("\"ks_x{secret}\""),
    ] {
        let shown = keys::redact_secret(&text);
        assert!(!shown.contains(secret_tail(secret)), "{text} -> {shown}");
    }
}
