//! The OpenAPI document: checked in as generated, served at /openapi.json,
//! covering every route, and describing what the server really answers
//! (real answers of every route, happy and failing, are validated against
//! the document's schema for their status).

mod common;

use std::collections::BTreeSet;

use common::{TestServer, ADMIN_TOKEN};
use serde_json::{json, Value};

const REGENERATE: &str = "cargo run -- openapi > docs/openapi.json";

fn document() -> Value {
    keyseat::http::openapi::document()
}

#[test]
fn the_checked_in_document_is_the_generated_one() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    let generated = keyseat::http::openapi::pretty();
    assert!(
        checked_in == generated,
        "docs/openapi.json differs from the document the code generates; regenerate it with\n    {REGENERATE}\nand commit it"
    );
}

#[test]
fn keyseat_openapi_prints_the_document() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyseat"))
        .arg("openapi")
        .env_remove("KEYSEAT_CONFIG")
        .output()
        .expect("run keyseat openapi");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        keyseat::http::openapi::pretty()
    );
}

/// Every route of the HTTP API, as (method, path). The dashboard's HTML
/// pages under /admin are not part of the API and not documented.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/health"),
    ("get", "/openapi.json"),
    ("get", "/metrics"),
    ("get", "/api/signing-keys"),
    ("post", "/api/session/start"),
    ("post", "/api/session/borrow"),
    ("post", "/api/session/heartbeat"),
    ("post", "/api/session/end"),
    ("post", "/api/session/status"),
    ("post", "/api/admin/keys"),
    ("get", "/api/admin/keys"),
    ("get", "/api/admin/keys/{key_id}"),
    ("patch", "/api/admin/keys/{key_id}"),
    ("post", "/api/admin/keys/{key_id}/revoke"),
    ("get", "/api/admin/sessions"),
    ("delete", "/api/admin/sessions/{session_id}"),
    ("get", "/api/admin/events"),
];

fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            ops.insert((method.clone(), path.clone()));
        }
    }
    ops
}

#[test]
fn every_route_is_documented_and_nothing_else() {
    let doc = document();
    let want: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented_operations(&doc), want);
    for (method, path) in &want {
        let op = &doc["paths"][path][method];
        assert!(
            op["operationId"].is_string(),
            "{method} {path}: operationId"
        );
        let responses = op["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{method} {path}: a success answer"
        );
        if path.starts_with("/api/admin/") {
            assert_eq!(op["security"], json!([{"admin_token": []}]), "{path}");
            for status in ["401", "404", "429"] {
                assert!(responses.contains_key(status), "{method} {path}: {status}");
            }
        }
        if path.starts_with("/api/session/") {
            for status in ["400", "401", "403", "413", "415", "429", "503"] {
                assert!(responses.contains_key(status), "{method} {path}: {status}");
            }
        }
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["admin_token"],
        json!({"type": "http", "scheme": "bearer"})
    );
}

#[test]
fn every_reference_resolves() {
    fn walk(doc: &Value, v: &Value) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    let pointer = r.strip_prefix('#').expect("local reference");
                    assert!(doc.pointer(pointer).is_some(), "dangling {r}");
                }
                map.values().for_each(|x| walk(doc, x));
            }
            Value::Array(items) => items.iter().for_each(|x| walk(doc, x)),
            _ => {}
        }
    }
    let doc = document();
    walk(&doc, &doc);
}

#[tokio::test]
async fn the_document_is_served_as_json() {
    let s = TestServer::start().await;
    let resp = s
        .client
        .get(format!("{}/openapi.json", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let served: Value = resp.json().await.unwrap();
    assert!(
        served["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        served["openapi"]
    );
    assert_eq!(served, document());
}

// ---------------------------------------------------------------------
// Real answers against the document.

/// Checks `value` against a schema of the subset the document uses
/// ($ref, oneOf, allOf, type, enum, properties, required, items, bounds,
/// lengths, date-time); returns the first mismatch.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        let target = doc.pointer(&r[1..]).ok_or(format!("dangling {r}"))?;
        check(doc, target, value, at)?;
    }
    if let Some(alts) = schema["oneOf"].as_array() {
        let matching = alts
            .iter()
            .filter(|s| check(doc, s, value, at).is_ok())
            .count();
        if matching != 1 {
            return Err(format!("{at}: {matching} of oneOf match {value}"));
        }
    }
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            check(doc, s, value, at)?;
        }
    }
    if !schema["type"].is_null() {
        let types: Vec<&str> = match &schema["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            other => return Err(format!("odd type {other}")),
        };
        let ok = types.iter().any(|t| match *t {
            "null" => value.is_null(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "object" => value.is_object(),
            "array" => value.is_array(),
            _ => false,
        });
        if !ok {
            return Err(format!("{at}: {value} is not {types:?}"));
        }
    }
    if let Some(values) = schema["enum"].as_array() {
        if !values.contains(value) {
            return Err(format!("{at}: {value} not in {values:?}"));
        }
    }
    if let (Some(min), Some(n)) = (schema["minimum"].as_i64(), value.as_i64()) {
        if n < min {
            return Err(format!("{at}: {n} < {min}"));
        }
    }
    if let (Some(max), Some(n)) = (schema["maximum"].as_i64(), value.as_i64()) {
        if n > max {
            return Err(format!("{at}: {n} > {max}"));
        }
    }
    if let Some(text) = value.as_str() {
        if let Some(max) = schema["maxLength"].as_u64() {
            if text.chars().count() as u64 > max {
                return Err(format!("{at}: longer than {max}"));
            }
        }
        if schema["format"] == "date-time"
            && keyseat::clock::Timestamp::parse_rfc3339(text).is_none()
        {
            return Err(format!("{at}: {text} is not RFC 3339"));
        }
    }
    if let Some(object) = value.as_object() {
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap();
            if !object.contains_key(name) {
                return Err(format!("{at}: missing required `{name}` in {value}"));
            }
        }
        if let Some(props) = schema["properties"].as_object() {
            for (name, v) in object {
                if let Some(p) = props.get(name) {
                    check(doc, p, v, &format!("{at}.{name}"))?;
                }
            }
        }
    }
    if let (Some(items), Some(values)) = (schema.get("items"), value.as_array()) {
        for (i, v) in values.iter().enumerate() {
            check(doc, items, v, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// Every property the server sends is documented (the mirror types of
/// `http::openapi` have not fallen behind the handlers' `json!`).
fn undocumented_fields(
    doc: &Value,
    schema: &Value,
    value: &Value,
    at: &str,
    out: &mut Vec<String>,
) {
    let schema = match schema["$ref"].as_str() {
        Some(r) => doc.pointer(&r[1..]).unwrap(),
        None => schema,
    };
    let mut props = serde_json::Map::new();
    let mut alternatives = vec![schema];
    alternatives.extend(schema["allOf"].as_array().into_iter().flatten());
    for s in alternatives {
        let s = match s["$ref"].as_str() {
            Some(r) => doc.pointer(&r[1..]).unwrap(),
            None => s,
        };
        if let Some(p) = s["properties"].as_object() {
            props.extend(p.clone());
        }
    }
    if let Some(alts) = schema["oneOf"].as_array() {
        for alt in alts {
            if check(doc, alt, value, at).is_ok() {
                undocumented_fields(doc, alt, value, at, out);
            }
        }
    }
    match value {
        Value::Object(object) if !props.is_empty() => {
            for (name, v) in object {
                match props.get(name) {
                    Some(p) => undocumented_fields(doc, p, v, &format!("{at}.{name}"), out),
                    None => out.push(format!("{at}.{name}")),
                }
            }
        }
        Value::Array(values) => {
            if let Some(items) = schema.get("items") {
                for v in values {
                    undocumented_fields(doc, items, v, &format!("{at}[]"), out);
                }
            }
        }
        _ => {}
    }
}

struct Api {
    s: TestServer,
    doc: Value,
    seen: BTreeSet<(String, String, u16)>,
}

impl Api {
    async fn new() -> Api {
        Api::with(|_| {}).await
    }

    async fn with(tweak: impl FnOnce(&mut keyseat::config::Settings)) -> Api {
        Api {
            s: TestServer::start_with(tweak).await,
            doc: document(),
            seen: BTreeSet::new(),
        }
    }

    /// Sends a request and checks the answer against the document entry
    /// for `route` (the documented path template); returns the body.
    async fn call(
        &mut self,
        method: &str,
        route: &str,
        path: &str,
        body: Option<Value>,
        admin: bool,
    ) -> (u16, Value) {
        let mut req = self.s.client.request(
            reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
            format!("{}{path}", self.s.url),
        );
        if admin {
            req = req.bearer_auth(ADMIN_TOKEN);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        self.conforms(method, route, resp).await
    }

    async fn conforms(
        &mut self,
        method: &str,
        route: &str,
        resp: reqwest::Response,
    ) -> (u16, Value) {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let content_type = headers["content-type"].to_str().unwrap().to_owned();
        let mime = content_type.split(';').next().unwrap().to_owned();
        let text = resp.text().await.unwrap();
        let what = format!("{method} {route} answered {status} {text}");
        let response = &self.doc["paths"][route][method]["responses"][status.to_string()];
        assert!(response.is_object(), "undocumented status: {what}");
        let media = &response["content"][&mime];
        assert!(
            media.is_object(),
            "undocumented content type {content_type}: {what}"
        );
        self.seen.insert((method.into(), route.into(), status));
        if mime == "text/plain" {
            assert_eq!(media["schema"]["type"], "string", "{what}");
            return (status, Value::String(text));
        }
        let body: Value = serde_json::from_str(&text).expect("a JSON answer");
        if let Err(e) = check(&self.doc, &media["schema"], &body, "body") {
            panic!("{e}\n{what}");
        }
        let mut extra = vec![];
        undocumented_fields(&self.doc, &media["schema"], &body, "body", &mut extra);
        assert!(extra.is_empty(), "undocumented fields {extra:?}: {what}");
        for (name, h) in response["headers"].as_object().into_iter().flatten() {
            if h["required"] == true {
                assert!(
                    headers.contains_key(name.as_str()),
                    "missing header {name}: {what}"
                );
            }
        }
        (status, body)
    }
}

#[tokio::test]
async fn real_answers_match_the_document() {
    let mut api = Api::new().await;
    let (st, health) = api.call("get", "/health", "/health", None, false).await;
    assert_eq!((st, health["status"].as_str()), (200, Some("ok")));
    api.call("get", "/openapi.json", "/openapi.json", None, false)
        .await;
    let (st, metrics) = api.call("get", "/metrics", "/metrics", None, false).await;
    assert_eq!(st, 200);
    assert!(metrics.as_str().unwrap().contains("# TYPE"), "{metrics}");
    let (st, keys) = api
        .call("get", "/api/signing-keys", "/api/signing-keys", None, false)
        .await;
    assert_eq!(
        (st, keys["keys"][0]["crv"].as_str()),
        (200, Some("Ed25519"))
    );

    // Admin: keys.
    let (st, key) = api
        .call(
            "post",
            "/api/admin/keys",
            "/api/admin/keys",
            Some(json!({
            "label": "Acme", "max_sessions": 1, "on_conflict": "reject",
            "expires_at": "2099-01-01T00:00:00Z"})),
            true,
        )
        .await;
    assert_eq!(st, 201);
    let secret = key["access_key"].as_str().unwrap().to_owned();
    let key_id = key["key_id"].as_str().unwrap().to_owned();
    let (st, _) = api
        .call("post", "/api/admin/keys", "/api/admin/keys", None, true)
        .await;
    assert_eq!(st, 201);
    let (st, _) = api
        .call(
            "post",
            "/api/admin/keys",
            "/api/admin/keys",
            Some(json!({"max_sessions": 0})),
            true,
        )
        .await;
    assert_eq!(st, 400);
    let (st, page) = api
        .call(
            "get",
            "/api/admin/keys",
            "/api/admin/keys?limit=1",
            None,
            true,
        )
        .await;
    assert_eq!((st, page["next_after"].is_string()), (200, true));
    let one = "/api/admin/keys/{key_id}";
    let (st, _) = api
        .call("get", one, &format!("/api/admin/keys/{key_id}"), None, true)
        .await;
    assert_eq!(st, 200);
    let (st, _) = api
        .call("get", one, "/api/admin/keys/key_nope", None, true)
        .await;
    assert_eq!(st, 404);
    let (st, _) = api
        .call(
            "patch",
            one,
            &format!("/api/admin/keys/{key_id}"),
            Some(json!({"label": null})),
            true,
        )
        .await;
    assert_eq!(st, 200);

    // Session API.
    let start = |id: &str, device: &str| json!({"access_key": secret, "session_id": id, "device": {"name": device, "fingerprint": device}});
    let (st, started) = api
        .call(
            "post",
            "/api/session/start",
            "/api/session/start",
            Some(start("openapi-one", "pc")),
            false,
        )
        .await;
    assert_eq!(st, 200, "{started}");
    let (st, _) = api
        .call(
            "post",
            "/api/session/start",
            "/api/session/start",
            Some(start("openapi-two", "laptop")),
            false,
        )
        .await;
    assert_eq!(st, 409, "seats_full");
    let (st, _) = api
        .call(
            "post",
            "/api/session/start",
            "/api/session/start",
            Some(start("openapi-one", "laptop")),
            false,
        )
        .await;
    assert_eq!(st, 200, "a retry");
    let (st, status) = api
        .call(
            "post",
            "/api/session/status",
            "/api/session/status",
            Some(json!({"access_key": secret})),
            false,
        )
        .await;
    assert_eq!((st, status["sessions"].as_array().unwrap().len()), (200, 1));
    let beat = |id: &str| json!({"access_key": secret, "session_id": id});
    let hb = "/api/session/heartbeat";
    assert_eq!(
        api.call("post", hb, hb, Some(beat("openapi-one")), false)
            .await
            .0,
        200
    );
    assert_eq!(
        api.call("post", hb, hb, Some(beat("openapi-nope")), false)
            .await
            .0,
        404
    );
    // Same device (fingerprint) restarting supersedes its ghost.
    let (st, again) = api
        .call(
            "post",
            "/api/session/start",
            "/api/session/start",
            Some(start("openapi-three", "pc")),
            false,
        )
        .await;
    assert_eq!(
        (st, again["previous_session_terminated"].as_bool()),
        (200, Some(true))
    );
    let (st, superseded) = api
        .call("post", hb, hb, Some(beat("openapi-one")), false)
        .await;
    assert_eq!(
        (st, &superseded["error"]["code"]),
        (409, &json!("session_superseded"))
    );
    let (st, _) = api
        .call(
            "post",
            "/api/session/start",
            "/api/session/start",
            Some(start("openapi-one", "pc")),
            false,
        )
        .await;
    assert_eq!(st, 409, "session_id_taken");
    let end = "/api/session/end";
    let (st, ended) = api
        .call("post", end, end, Some(beat("openapi-three")), false)
        .await;
    assert_eq!((st, &ended["ended"]), (200, &json!(true)));
    let (st, ended) = api
        .call("post", end, end, Some(beat("openapi-one")), false)
        .await;
    assert_eq!((st, &ended["reason"]), (200, &json!("superseded")));
    assert_eq!(
        api.call("post", end, end, Some(beat("openapi-nope")), false)
            .await
            .0,
        404
    );
    let (st, gone) = api
        .call("post", hb, hb, Some(beat("openapi-three")), false)
        .await;
    assert_eq!((st, &gone["error"]["reason"]), (410, &json!("ended")));
    // Borrowing: off for the key, then allowed; a borrowed seat is full.
    let bw = "/api/session/borrow";
    let borrow = |hours: u32| json!({"access_key": secret, "session_id": "openapi-away", "device": {"name": "laptop", "fingerprint": "laptop"}, "hours": hours});
    let (st, off) = api.call("post", bw, bw, Some(borrow(1)), false).await;
    assert_eq!(
        (st, &off["error"]["code"]),
        (403, &json!("borrow_not_allowed"))
    );
    let (st, _) = api
        .call(
            "patch",
            one,
            &format!("/api/admin/keys/{key_id}"),
            Some(json!({"max_borrow_hours": 2})),
            true,
        )
        .await;
    assert_eq!(st, 200);
    let (st, too_long) = api.call("post", bw, bw, Some(borrow(3)), false).await;
    assert_eq!(
        (st, &too_long["error"]["code"]),
        (400, &json!("invalid_request"))
    );
    let (st, lent) = api.call("post", bw, bw, Some(borrow(2)), false).await;
    assert_eq!((st, lent["lease_token"].is_string()), (200, true), "{lent}");
    let (st, full) = api
        .call(
            "post",
            "/api/session/start",
            "/api/session/start",
            Some(start("openapi-four", "pc")),
            false,
        )
        .await;
    assert_eq!((st, &full["error"]["code"]), (409, &json!("seats_full")));
    let (st, _) = api
        .call("post", end, end, Some(beat("openapi-away")), false)
        .await;
    assert_eq!(st, 200);
    let bad_key = json!({"access_key": "ks_nope"});
    let (st, _) = api
        .call(
            "post",
            "/api/session/status",
            "/api/session/status",
            Some(bad_key),
            false,
        )
        .await;
    assert_eq!(st, 401);
    let (st, _) = api
        .call(
            "post",
            "/api/session/start",
            "/api/session/start",
            Some(json!({"access_key": 7})),
            false,
        )
        .await;
    assert_eq!(st, 400);
    let resp = api
        .s
        .client
        .post(format!("{}{end}", api.s.url))
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(api.conforms("post", end, resp).await.0, 415);
    let resp = api
        .s
        .client
        .post(format!("{}{end}", api.s.url))
        .header("content-type", "application/json")
        .body(vec![b' '; 17 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(api.conforms("post", end, resp).await.0, 413);

    // Admin: sessions, events, kicking, revoking; then the key's 403.
    let (st, _) = api
        .call(
            "post",
            "/api/session/start",
            "/api/session/start",
            Some(start("openapi-four", "pc")),
            false,
        )
        .await;
    assert_eq!(st, 200);
    let (st, live) = api
        .call(
            "get",
            "/api/admin/sessions",
            "/api/admin/sessions",
            None,
            true,
        )
        .await;
    assert_eq!((st, live["sessions"].as_array().unwrap().len()), (200, 1));
    let kick = "/api/admin/sessions/{session_id}";
    let (st, kicked) = api
        .call(
            "delete",
            kick,
            "/api/admin/sessions/openapi-four",
            None,
            true,
        )
        .await;
    assert_eq!((st, &kicked["ended"]), (200, &json!(true)));
    let (st, kicked) = api
        .call(
            "delete",
            kick,
            "/api/admin/sessions/openapi-four",
            None,
            true,
        )
        .await;
    assert_eq!((st, &kicked["reason"]), (200, &json!("revoked")));
    assert_eq!(
        api.call(
            "delete",
            kick,
            "/api/admin/sessions/openapi-nope",
            None,
            true
        )
        .await
        .0,
        404
    );
    let (st, gone) = api
        .call("post", hb, hb, Some(beat("openapi-four")), false)
        .await;
    assert_eq!(
        (st, &gone["error"]["code"]),
        (410, &json!("session_revoked"))
    );
    let (st, events) = api
        .call(
            "get",
            "/api/admin/events",
            "/api/admin/events?limit=3",
            None,
            true,
        )
        .await;
    assert_eq!((st, events["next_before"].is_i64()), (200, true));
    let (st, _) = api
        .call(
            "get",
            "/api/admin/events",
            "/api/admin/events?type=nope",
            None,
            true,
        )
        .await;
    assert_eq!(st, 400);
    let revoke = "/api/admin/keys/{key_id}/revoke";
    let (st, revoked) = api
        .call(
            "post",
            revoke,
            &format!("/api/admin/keys/{key_id}/revoke"),
            None,
            true,
        )
        .await;
    assert_eq!((st, &revoked["status"]), (200, &json!("revoked")));
    let (st, _) = api
        .call(
            "patch",
            one,
            &format!("/api/admin/keys/{key_id}"),
            Some(json!({"label": "x"})),
            true,
        )
        .await;
    assert_eq!(st, 409, "a revoked key cannot change");
    let (st, _) = api
        .call("post", hb, hb, Some(beat("openapi-four")), false)
        .await;
    assert_eq!(st, 403);
    let (st, _) = api
        .call("get", "/api/admin/keys", "/api/admin/keys", None, false)
        .await;
    assert_eq!(st, 401, "no token");

    // Every documented operation was exercised at least once.
    let exercised: BTreeSet<(String, String)> = api
        .seen
        .iter()
        .map(|(m, p, _)| (m.clone(), p.clone()))
        .collect();
    assert_eq!(exercised, documented_operations(&api.doc));
}

#[tokio::test]
async fn without_an_admin_token_the_admin_api_answers_the_documented_404() {
    let mut api = Api::with(|s| s.admin_token = None).await;
    let (st, body) = api
        .call("get", "/api/admin/keys", "/api/admin/keys", None, true)
        .await;
    assert_eq!((st, &body["error"]["code"]), (404, &json!("not_found")));
}

#[tokio::test]
async fn rate_limited_answers_carry_retry_after() {
    let mut api = Api::with(|s| {
        s.rate_limits = true;
        s.failed_key_lookups_per_minute = 1;
    })
    .await;
    let status = "/api/session/status";
    let bad = || Some(json!({"access_key": "ks_nope"}));
    let mut last = 0;
    for _ in 0..3 {
        last = api.call("post", status, status, bad(), false).await.0;
    }
    assert_eq!(last, 429);
    assert!(api.seen.contains(&("post".into(), status.into(), 429)));
}
