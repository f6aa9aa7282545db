//! Request bodies through the real router and store, in-process: the first
//! byte picks the route, the rest is the body. Never a 5xx; every error is
//! JSON with the contract's shape.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::Request;
use axum::Router;
use keyseat::clock::{Clock, ManualClock};
use keyseat::config::{Secret, Settings};
use keyseat::http::{app, AppState};
use keyseat::store::{Durability, LiveOptions, LiveStore};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const TOKEN: &str = "fuzz-admin-token-0123456789";

struct Harness {
    rt: tokio::runtime::Runtime,
    router: Router,
    key_id: String,
    _dir: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            database: dir.path().join("fuzz.db"),
            admin_token: Some(Secret::new(TOKEN)),
            rate_limits: false,
            durability: Durability::Normal,
            ..Settings::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::starting_now());
        let state = AppState::new(&settings, clock.clone());
        let opts = LiveOptions {
            timing: settings.timing(),
            persist_secs: settings.heartbeat_persist_seconds,
            durability: settings.durability,
        };
        let (store, _) =
            LiveStore::open(&settings.database, opts, clock.clone(), clock.now()).unwrap();
        state.set_ready(Arc::new(store));
        let router = app(state);
        let mut h = Harness {
            rt,
            router,
            key_id: String::new(),
            _dir: dir,
        };
        let (_, key) = send(&h, "POST", "/api/admin/keys", b"{}");
        h.key_id = key["key_id"].as_str().unwrap().to_owned();
        h
    })
}

fn send(h: &Harness, method: &str, uri: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::from(body.to_vec()))
        .unwrap();
    h.rt.block_on(async {
        let resp = h.router.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or("").to_owned())
            .unwrap_or_default();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        assert!(
            ctype.starts_with("application/json"),
            "{uri}: {status} {ctype}"
        );
        (status, serde_json::from_slice(&bytes).expect("JSON body"))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let h = harness();
    let patch = format!("/api/admin/keys/{}", h.key_id);
    let (method, uri) = match pick % 6 {
        0 => ("POST", "/api/session/start"),
        1 => ("POST", "/api/session/heartbeat"),
        2 => ("POST", "/api/session/end"),
        3 => ("POST", "/api/session/status"),
        4 => ("POST", "/api/admin/keys"),
        _ => ("PATCH", patch.as_str()),
    };
    let (status, v) = send(h, method, uri, body);
    assert!(status < 500, "{method} {uri}: {status} {v}");
    if status >= 400 {
        let code = v["error"]["code"].as_str().unwrap_or("");
        assert!(!code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        assert!(!v["error"]["message"].as_str().unwrap_or("").is_empty());
    }
});
