//! Test harness: a real keyseat server in-process on 127.0.0.1:0 over a
//! temporary database file, with a manual clock so expiry is tested by
//! moving time, not by sleeping.
#![allow(dead_code)]

pub mod api;
pub mod fuzz;
pub mod http1;
pub mod postgres;
pub mod servers;

// Re-exported: the other tests call them as `common::free_port()` and so on.
#[allow(unused_imports)]
pub use servers::{free_port, serve_command, wait_healthy};

/// A command for `program` (the real binary, or a wrapper such as
/// `unshare` around it) without the caller's `KEYSEAT_*` variables: a
/// developer's own settings must not leak into a test.
pub fn clean_command(program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    let mut cmd = std::process::Command::new(program);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KEYSEAT_") {
            cmd.env_remove(&name);
        }
    }
    cmd
}

/// Whether the tests run on PostgreSQL (`KEYSEAT_TEST_ENGINE=postgres`;
/// `.ci/run` runs the contract tests once per engine). Asking for it
/// without a server to run on is a failure, never a silent SQLite run.
pub fn on_postgres() -> bool {
    match std::env::var("KEYSEAT_TEST_ENGINE").as_deref() {
        Ok("postgres") => {
            assert!(
                std::env::var("KEYSEAT_TEST_POSTGRES_URL").is_ok_and(|u| !u.trim().is_empty()),
                "KEYSEAT_TEST_ENGINE=postgres needs KEYSEAT_TEST_POSTGRES_URL (see .ci/postgres.sh)"
            );
            true
        }
        Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("KEYSEAT_TEST_ENGINE={other}: expected sqlite or postgres"),
    }
}

/// The database a test's server uses: `dir/keyseat.db`, or on PostgreSQL
/// a new empty database on the test server.
pub async fn test_database(dir: &std::path::Path) -> String {
    if on_postgres() {
        postgres::fresh_database()
            .await
            .expect("a PostgreSQL test database")
    } else {
        dir.join("keyseat.db").display().to_string()
    }
}

/// [`test_database`] from outside a runtime.
pub fn test_database_blocking(dir: &std::path::Path) -> String {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(test_database(dir))
}

/// This machine's wall clock in Unix milliseconds, to compare with the
/// times a real server (or its database) puts in answers.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The real `keyseat` binary, via [`clean_command`].
pub fn keyseat_command() -> std::process::Command {
    clean_command(env!("CARGO_BIN_EXE_keyseat"))
}

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use keyseat::clock::{Clock, ManualClock, Timestamp};
use keyseat::config::{Database, Secret, Settings};
use keyseat::server::Server;
use reqwest::StatusCode;
use serde_json::{json, Value};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

pub struct TestServer {
    pub url: String,
    pub clock: Arc<ManualClock>,
    pub settings: Settings,
    pub client: reqwest::Client,
    server: Option<Server>,
    _dir: Arc<tempfile::TempDir>,
}

/// Settings for tests: temp database, port 0, admin API on, rate limits
/// off unless a test turns them on.
pub fn test_settings(dir: &tempfile::TempDir) -> Settings {
    Settings {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        database: Database::Sqlite(dir.path().join("keyseat.db")),
        admin_token: Some(Secret::new(ADMIN_TOKEN)),
        rate_limits: false,
        ..Settings::default()
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Settings)) -> TestServer {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let mut settings = test_settings(&dir);
        if on_postgres() {
            settings.database = Database::parse(&test_database(dir.path()).await);
        }
        tweak(&mut settings);
        let clock = Arc::new(ManualClock::starting_now());
        Self::launch(settings, clock, dir).await
    }

    async fn launch(
        settings: Settings,
        clock: Arc<ManualClock>,
        dir: Arc<tempfile::TempDir>,
    ) -> TestServer {
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .expect("bind port 0");
        let server = Server::start(settings.clone(), listener, clock.clone())
            .await
            .expect("server starts");
        TestServer {
            url: format!("http://{}", server.addr()),
            clock,
            settings,
            client: reqwest::Client::new(),
            server: Some(server),
            _dir: dir,
        }
    }

    /// The typed client of this server, with its admin token.
    pub fn api(&self) -> api::Api {
        api::Api::new(&self.url).with_admin(ADMIN_TOKEN)
    }

    /// The SQLite file (tests of the file itself run on SQLite only).
    pub fn db_path(&self) -> PathBuf {
        self.settings
            .database
            .sqlite_path()
            .expect("a test of the SQLite file")
            .to_path_buf()
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Stops the server (as on SIGTERM) and starts a new one on the same
    /// database file and clock, after `outage_secs` of (manual) time.
    pub async fn restart_after(mut self, outage_secs: u64) -> TestServer {
        self.stop().await;
        self.clock.advance_secs(outage_secs);
        let mut settings = self.settings.clone();
        settings.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::launch(settings, self.clock.clone(), self._dir.clone()).await
    }

    /// A second server on this server's database and clock (PostgreSQL:
    /// any number of servers share one database).
    pub async fn beside(&self) -> TestServer {
        let mut settings = self.settings.clone();
        settings.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::launch(settings, self.clock.clone(), self._dir.clone()).await
    }

    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.expect("clean stop");
        }
    }

    /// Heartbeats held on this server right now.
    pub fn held_now(&self) -> usize {
        self.server.as_ref().expect("running").held().held_now()
    }

    pub fn store(&self) -> Arc<dyn keyseat::store::Storage> {
        self.server.as_ref().expect("running").store()
    }

    /// POST JSON, returning status and parsed body.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .expect("request");
        split(resp).await
    }

    /// A request with the admin token.
    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        split(req.send().await.expect("request")).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        split(
            self.client
                .get(format!("{}{path}", self.url))
                .send()
                .await
                .expect("request"),
        )
        .await
    }

    /// Creates a key through the admin API; returns (access key, key JSON).
    pub async fn create_key(&self, body: Value) -> (String, Value) {
        let (status, key) = self.admin("POST", "/api/admin/keys", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{key}");
        (key["access_key"].as_str().unwrap().to_owned(), key)
    }

    pub async fn start_session(&self, key: &str, device: &str) -> (StatusCode, Value) {
        self.post(
            "/api/session/start",
            json!({"access_key": key, "device": {"name": device}}),
        )
        .await
    }

    /// Starts and asserts success; returns the session id.
    pub async fn started(&self, key: &str, device: &str) -> String {
        let (status, body) = self.start_session(key, device).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["session_id"].as_str().unwrap().to_owned()
    }

    pub async fn heartbeat(&self, key: &str, session_id: &str) -> (StatusCode, Value) {
        self.post(
            "/api/session/heartbeat",
            json!({"access_key": key, "session_id": session_id}),
        )
        .await
    }

    pub async fn end(&self, key: &str, session_id: &str) -> (StatusCode, Value) {
        self.post(
            "/api/session/end",
            json!({"access_key": key, "session_id": session_id}),
        )
        .await
    }

    pub async fn status(&self, key: &str) -> (StatusCode, Value) {
        self.post("/api/session/status", json!({"access_key": key}))
            .await
    }

    /// Events of a type, newest first.
    pub async fn events_of(&self, event_type: &str) -> Vec<Value> {
        let (status, body) = self
            .admin(
                "GET",
                &format!("/api/admin/events?type={event_type}&limit=1000"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["events"].as_array().unwrap().clone()
    }
}

pub async fn split(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"))
    };
    (status, body)
}

/// Asserts the contract's error shape and code; returns the error object.
pub fn assert_error(status: StatusCode, body: &Value, want_status: u16, want_code: &str) -> Value {
    assert_eq!(status.as_u16(), want_status, "status for {body}");
    let error = &body["error"];
    assert_eq!(error["code"], want_code, "code in {body}");
    let message = error["message"].as_str().expect("message is a string");
    assert!(!message.is_empty(), "message in {body}");
    error.clone()
}
