//! Several servers on one PostgreSQL database answer as one (docs/api.md,
//! "Several servers on one database"): what one server, or the CLI,
//! changes is what every other server answers at once. No server keeps
//! seats, keys or live-session views in memory for another to miss.
//!
//! Two servers run in-process on one database and one manual clock (the
//! clock the tests move decides leases, as the database's would). Runs on
//! PostgreSQL only: it skips, saying why, without `KEYSEAT_TEST_POSTGRES_URL`
//! (and fails instead under `.ci/run`).

mod common;

use std::sync::Arc;

use common::{assert_error, TestServer};
use keyseat::config::Database;
use keyseat::store::Storage;
use serde_json::{json, Value};

/// Two servers on one fresh PostgreSQL database, or None (skipped).
async fn two_servers() -> Option<(TestServer, TestServer)> {
    let url = common::postgres::fresh_database().await?;
    let a = TestServer::start_with(|s| s.database = Database::parse(&url)).await;
    let b = a.beside().await;
    Some((a, b))
}

/// `keyseat --database URL <args…>` (the CLI on the shared database).
fn cli(server: &TestServer, args: &[&str]) -> String {
    let out = common::keyseat_command()
        .arg("--database")
        .arg(url_of(server))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "keyseat {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The URL with its password, which `Display` hides.
fn url_of(server: &TestServer) -> String {
    match &server.settings.database {
        Database::Postgres(url) => url.expose().to_owned(),
        Database::Sqlite(_) => unreachable!("PostgreSQL only"),
    }
}

/// A session started on one server is heartbeated, listed and taken over
/// on the other; the device that lost it hears who took it, on either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_one_session_on_every_server() {
    let Some((a, b)) = two_servers().await else {
        return;
    };
    let (key, key_json) = a.create_key(json!({"label": "shared"})).await;
    let first = a.started(&key, "laptop").await;
    let (status, body) = b.heartbeat(&key, &first).await;
    assert_eq!(status, 200, "{body}");
    let (_, status_b) = b.status(&key).await;
    assert_eq!(status_b["sessions"][0]["session_id"], first.as_str());
    let (_, listed) = b
        .admin(
            "GET",
            &format!(
                "/api/admin/sessions?key_id={}",
                key_json["key_id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(
        listed["sessions"][0]["session_id"],
        first.as_str(),
        "{listed}"
    );

    let (status, taken) = b.start_session(&key, "desktop").await;
    assert_eq!(status, 200, "{taken}");
    assert_eq!(
        taken["terminated_sessions"][0]["session_id"],
        first.as_str()
    );
    for server in [&a, &b] {
        let (status, body) = server.heartbeat(&key, &first).await;
        assert_error(status, &body, 409, "session_superseded");
        assert_eq!(body["error"]["superseded_by"]["device_name"], "desktop");
    }
}

/// Fences strictly increase per key whichever server each start reaches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fences_increase_across_servers() {
    let Some((a, b)) = two_servers().await else {
        return;
    };
    let (key, _) = a.create_key(json!({})).await;
    let mut last = 0;
    for i in 0..6 {
        let server = if i % 2 == 0 { &a } else { &b };
        let (status, body) = server.start_session(&key, &format!("device {i}")).await;
        assert_eq!(status, 200, "{body}");
        let fence = body["fence"].as_i64().unwrap();
        assert!(fence > last, "fence {fence} after {last}");
        last = fence;
    }
}

/// A key change through one server's admin API, and a kick or a resume by
/// the CLI, are what the other server answers at the very next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_every_server_at_once() {
    let Some((a, b)) = two_servers().await else {
        return;
    };
    let (key, key_json) = a.create_key(json!({})).await;
    let key_id = key_json["key_id"].as_str().unwrap();
    let id = b.started(&key, "laptop").await;

    let (status, _) = a
        .admin(
            "PATCH",
            &format!("/api/admin/keys/{key_id}"),
            Some(json!({"status": "suspended"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = b.heartbeat(&key, &id).await;
    assert_error(status, &body, 403, "key_suspended");

    cli(&a, &["keys", "resume", key_id]);
    let id = b.started(&key, "laptop").await;
    let (status, body) = a.heartbeat(&key, &id).await;
    assert_eq!(status, 200, "{body}");

    cli(&b, &["sessions", "kick", &id]);
    for server in [&a, &b] {
        let (status, body) = server.heartbeat(&key, &id).await;
        assert_error(status, &body, 410, "session_revoked");
    }
    let (_, status_a) = a.status(&key).await;
    assert_eq!(status_a["sessions"], json!([]));
}

/// The sweep runs on every server; a dead session is recorded once even
/// when both sweep at the same moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_servers_sweep_and_each_death_is_recorded_once() {
    let Some((a, b)) = two_servers().await else {
        return;
    };
    let (key, _) = a.create_key(json!({"max_sessions": 5})).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let server = if i % 2 == 0 { &a } else { &b };
        ids.push(server.started(&key, &format!("device {i}")).await);
    }
    a.clock.advance_secs(61);
    let now = a.now();
    let stores: Vec<Arc<dyn Storage>> = vec![a.store(), b.store(), a.store(), b.store()];
    let sweeps: Vec<_> = stores
        .into_iter()
        .map(|store| tokio::task::spawn_blocking(move || store.sweep(now, 30, true)))
        .collect();
    let mut expired = 0;
    for sweep in sweeps {
        expired += sweep.await.unwrap().unwrap().expired.len();
    }
    assert_eq!(expired, 5, "each session reported by exactly one sweep");
    let events: Vec<Value> = a.events_of("session_expired").await;
    let mut recorded: Vec<&str> = events
        .iter()
        .map(|e| e["session_id"].as_str().unwrap())
        .collect();
    recorded.sort();
    ids.sort();
    assert_eq!(recorded, ids.iter().map(String::as_str).collect::<Vec<_>>());
}

/// A server started before its database answers 503 `starting` meanwhile
/// and serves by itself once the database is up; a wrong password is no
/// such wait but one clear line and an exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_started_before_its_database_waits_for_it() {
    let Some(cluster) = common::postgres::Cluster::start() else {
        return;
    };
    let url = cluster.url().to_owned();
    cluster.stop_immediate();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let port = common::free_port();
    let mut child = common::serve_command(&url, port)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let health = loop {
        if let Ok(resp) = client.get(format!("{base}/health")).send().await {
            break resp;
        }
        assert!(std::time::Instant::now() < deadline, "never listened");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(health.status(), 503);
    let body: Value = health.json().await.unwrap();
    assert_eq!(body["status"], "starting", "{body}");
    assert!(child.try_wait().unwrap().is_none(), "it waits, not exits");

    cluster.start_again();
    common::wait_healthy(&mut child, &base, &log).await;
    let _ = child.kill();
    let _ = child.wait();

    let wrong = url.replacen(
        &url[url.find("://").unwrap() + 3..url.rfind('@').unwrap()],
        "keyseat:not-the-password",
        1,
    );
    let out = common::serve_command(&wrong, common::free_port())
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );
    assert!(!stderr.contains("not-the-password"), "{stderr}");
}
