//! `/metrics`: Prometheus text that tells an operator what the service is
//! doing. Counters are process-wide, so each test compares readings taken
//! before and after its own actions, and tests that count run one at a
//! time.

mod common;

use std::collections::HashMap;

use common::TestServer;
use keyseat::config::MetricsMode;
use reqwest::StatusCode;
use serde_json::json;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Sample lines as `name{labels}` -> value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(server: &TestServer) -> HashMap<String, f64> {
    let resp = server
        .client
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    if status != StatusCode::OK {
        panic!("GET /metrics: {status} {}", resp.text().await.unwrap());
    }
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    samples(&resp.text().await.unwrap())
}

fn get(m: &HashMap<String, f64>, name: &str) -> f64 {
    m.get(name).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn sessions_keys_requests_and_sweeps_are_counted() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let before = scrape(&server).await;

    let (takeover, _) = server.create_key(json!({})).await;
    let (reject, _) = server.create_key(json!({ "on_conflict": "reject" })).await;
    let (suspended, id) = server.create_key(json!({})).await;
    let id = id["key_id"].as_str().unwrap().to_owned();
    let (status, _) = server
        .admin(
            "PATCH",
            &format!("/api/admin/keys/{id}"),
            Some(json!({ "status": "suspended" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let _ = suspended;

    let a = server.started(&takeover, "A").await;
    let (status, _) = server.heartbeat(&takeover, &a).await;
    assert_eq!(status, StatusCode::OK);
    let _b = server.started(&takeover, "B").await; // supersedes A
    let (status, _) = server.heartbeat(&takeover, &a).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let c = server.started(&reject, "C").await;
    let (status, _) = server.start_session(&reject, "D").await;
    assert_eq!(status, StatusCode::CONFLICT, "seats full");
    let (status, _) = server.end(&reject, &c).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server.get("/no/such/route").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let after = scrape(&server).await;
    let delta = |name: &str| get(&after, name) - get(&before, name);
    assert_eq!(get(&after, "keyseat_sessions_live"), 1.0, "B is live");
    assert_eq!(get(&after, "keyseat_keys{status=\"active\"}"), 2.0);
    assert_eq!(get(&after, "keyseat_keys{status=\"suspended\"}"), 1.0);
    assert_eq!(delta("keyseat_sessions_started_total"), 3.0);
    assert_eq!(
        delta("keyseat_sessions_ended_total{reason=\"superseded\"}"),
        1.0
    );
    assert_eq!(delta("keyseat_sessions_ended_total{reason=\"ended\"}"), 1.0);
    assert_eq!(
        delta("keyseat_session_starts_rejected_total{code=\"seats_full\"}"),
        1.0
    );
    assert_eq!(delta("keyseat_heartbeats_total{code=\"ok\"}"), 1.0);
    assert_eq!(
        delta("keyseat_heartbeats_total{code=\"session_superseded\"}"),
        1.0
    );
    assert_eq!(
        delta("keyseat_http_requests_total{method=\"POST\",route=\"/api/session/start\",status=\"200\"}"),
        3.0
    );
    assert_eq!(
        delta("keyseat_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"}"),
        1.0,
        "unknown paths share one label"
    );
    assert!(
        delta("keyseat_http_request_duration_seconds_count{method=\"POST\",route=\"/api/session/start\"}")
            >= 4.0
    );
    assert!(
        delta("keyseat_db_write_batch_size_count") >= 1.0,
        "writer batches observed"
    );

    // Expiry by the sweep.
    server.clock.advance_secs(61);
    let report = server
        .store()
        .sweep(server.now(), 30, true)
        .expect("sweep runs");
    assert_eq!(report.expired.len(), 1);
    keyseat::sweep::log_report(&report);
    let swept = scrape(&server).await;
    assert_eq!(get(&swept, "keyseat_sessions_live"), 0.0);
    assert_eq!(
        get(&swept, "keyseat_sessions_ended_total{reason=\"expired\"}")
            - get(&after, "keyseat_sessions_ended_total{reason=\"expired\"}"),
        1.0
    );
}

#[tokio::test]
async fn metrics_can_be_turned_off() {
    let server = TestServer::start_with(|s| s.metrics = MetricsMode::Off).await;
    let (status, body) = server.get("/metrics").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn metrics_can_have_their_own_listener() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let server = TestServer::start_with(|s| s.metrics = MetricsMode::Separate(addr)).await;
    let (status, _) = server.get("/metrics").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not on the main listener");
    let resp = server
        .client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.text().await.unwrap().contains("keyseat_sessions_live"));
}
