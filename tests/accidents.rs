//! The lease holds through ordinary operational accidents, against the real
//! binary: the process frozen with SIGSTOP, the wall clock stepped under it
//! (libfaketime, with the monotonic clock left real), and the database file
//! deleted or replaced while it serves.
//!
//! Timing: heartbeat 1 s, timeout 3 s, as a device would see it. The faketime
//! tests need Debian's `faketime` package (`.ci/run` installs it); without
//! its library they print why and pass, unless `KEYSEAT_REQUIRE_FAKETIME` is
//! set (as in CI), when they fail.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const ADMIN_TOKEN: &str = "accidents-admin-token-0123456789";
const TIMEOUT_SECS: u64 = 3;

/// Where Debian's `faketime` package puts its library.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

struct Proc {
    child: Child,
    url: String,
    log: PathBuf,
    client: reqwest::Client,
}

/// How to run the server: plain, or under libfaketime with its offset read
/// from a file the test rewrites.
#[derive(Clone, Copy)]
enum Wall<'a> {
    Real,
    Faked(&'a Path),
}

async fn serve(db: &Path, log: &Path, wall: Wall<'_>) -> Proc {
    let port = common::free_port();
    let mut cmd = common::serve_command(db, port);
    cmd.env("KEYSEAT_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("KEYSEAT_RATE_LIMITS", "off")
        .env("KEYSEAT_HEARTBEAT_INTERVAL_SECONDS", "1")
        .env("KEYSEAT_SESSION_TIMEOUT_SECONDS", TIMEOUT_SECS.to_string())
        .env("KEYSEAT_SWEEP_INTERVAL_SECONDS", "1")
        .env("KEYSEAT_LOG", "info")
        .stderr(File::create(log).unwrap());
    if let Wall::Faked(offset_file) = wall {
        cmd.env("LD_PRELOAD", LIBFAKETIME)
            .env("FAKETIME_TIMESTAMP_FILE", offset_file)
            .env("FAKETIME_NO_CACHE", "1")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    }
    let mut child = cmd.spawn().expect("spawn keyseat serve");
    let url = format!("http://127.0.0.1:{port}");
    common::wait_healthy(&mut child, &url, log).await;
    Proc {
        child,
        url,
        log: log.to_owned(),
        client: reqwest::Client::new(),
    }
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

impl Proc {
    fn signal(&self, name: &str) {
        let ok = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// SIGTERM and wait for the clean stop.
    fn stop(&mut self) {
        self.signal("TERM");
        self.child.wait().unwrap();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        send(self.client.post(format!("{}{path}", self.url)).json(&body)).await
    }

    async fn create_key(&self, body: Value) -> String {
        let (status, key) = send(
            self.client
                .post(format!("{}/api/admin/keys", self.url))
                .bearer_auth(ADMIN_TOKEN)
                .json(&body),
        )
        .await;
        assert_eq!(status, 201, "{key}");
        key["access_key"].as_str().unwrap().to_owned()
    }

    async fn start(&self, key: &str, device: &str) -> (u16, Value) {
        self.post(
            "/api/session/start",
            json!({"access_key": key, "device": {"name": device}}),
        )
        .await
    }

    async fn started(&self, key: &str, device: &str) -> String {
        let (status, body) = self.start(key, device).await;
        assert_eq!(status, 200, "{body}");
        body["session_id"].as_str().unwrap().to_owned()
    }

    async fn heartbeat(&self, key: &str, id: &str) -> (u16, Value) {
        self.post(
            "/api/session/heartbeat",
            json!({"access_key": key, "session_id": id}),
        )
        .await
    }

    async fn live_ids(&self, key: &str) -> Vec<String> {
        let (status, body) = self
            .post("/api/session/status", json!({"access_key": key}))
            .await;
        assert_eq!(status, 200, "{body}");
        body["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["session_id"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn events(&self, kind: &str) -> Vec<Value> {
        let (status, body) = send(
            self.client
                .get(format!(
                    "{}/api/admin/events?type={kind}&limit=1000",
                    self.url
                ))
                .bearer_auth(ADMIN_TOKEN),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        body["events"].as_array().unwrap().clone()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A device heartbeating every `every` until stopped; records every answer
/// that was not 200.
struct Device {
    stop: Arc<AtomicBool>,
    failures: Arc<Mutex<Vec<(u16, Value)>>>,
    beats: Arc<Mutex<u32>>,
    task: tokio::task::JoinHandle<()>,
}

impl Device {
    fn heartbeat_every(proc: &Proc, key: &str, id: &str, every: Duration) -> Device {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let beats = Arc::new(Mutex::new(0));
        let (url, key, id) = (proc.url.clone(), key.to_owned(), id.to_owned());
        let (s, f, b) = (stop.clone(), failures.clone(), beats.clone());
        let task = tokio::spawn(async move {
            // Its own client, with a long timeout: a request queued while
            // the server is frozen is answered when it continues.
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            while !s.load(Ordering::SeqCst) {
                let answer = send(
                    client
                        .post(format!("{url}/api/session/heartbeat"))
                        .json(&json!({"access_key": key, "session_id": id})),
                )
                .await;
                if answer.0 == 200 {
                    *b.lock().unwrap() += 1;
                } else {
                    f.lock().unwrap().push(answer);
                }
                tokio::time::sleep(every).await;
            }
        });
        Device {
            stop,
            failures,
            beats,
            task,
        }
    }

    /// Stops it; returns (heartbeats answered 200, answers that were not).
    async fn finish(self) -> (u32, Vec<(u16, Value)>) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        let beats = *self.beats.lock().unwrap();
        let failures = self.failures.lock().unwrap().clone();
        (beats, failures)
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn rfc3339_ms(text: &str) -> i64 {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| panic!("not RFC 3339: {text}"));
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn expired_ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e["session_id"].as_str().map(str::to_owned))
        .collect()
}

// ---------------------------------------------------------------------------
// 1. A frozen server

/// A stopped process is an outage, not a reason to end sessions: the device
/// that kept heartbeating keeps its seat, and a session live when the
/// process froze gets a full timeout from the moment it continues.
#[tokio::test]
async fn a_frozen_server_treats_the_freeze_as_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(
        &dir.path().join("k.db"),
        &dir.path().join("log"),
        Wall::Real,
    )
    .await;
    let key = server.create_key(json!({"max_sessions": 2})).await;
    let busy = server.started(&key, "busy").await;
    let quiet = server.started(&key, "quiet").await;
    let device = Device::heartbeat_every(&server, &key, &busy, Duration::from_millis(500));
    tokio::time::sleep(Duration::from_millis(1200)).await;

    server.signal("STOP");
    tokio::time::sleep(Duration::from_secs(6)).await;
    // Read before the signal: the freeze ends no earlier than this (after
    // it, `kill` may take seconds to return on a loaded machine).
    let continued_ms = unix_ms();
    server.signal("CONT");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (beats, failures) = device.finish().await;

    assert!(
        failures.is_empty(),
        "heartbeats refused after the freeze: {failures:?}"
    );
    assert!(beats >= 4, "only {beats} heartbeats answered");
    let expired = expired_ids(&server.events("session_expired").await);
    assert!(
        !expired.contains(&busy),
        "the heartbeating device was recorded as expired"
    );
    // The quiet session had under 2 s left when the process froze; it gets
    // a full timeout from the end of the freeze, then dies as usual, once:
    // an outage does not keep it forever.
    tokio::time::sleep(Duration::from_millis(TIMEOUT_SECS * 1000 + 1500)).await;
    assert!(!server.live_ids(&key).await.contains(&quiet));
    let events = server.events("session_expired").await;
    let quiet_end = events
        .iter()
        .find(|e| e["session_id"] == quiet.as_str())
        .unwrap_or_else(|| panic!("no expiry recorded for the quiet session: {events:?}"));
    let ended_ms = rfc3339_ms(quiet_end["at"].as_str().unwrap());
    // A full timeout from the end of the freeze, which was no earlier than
    // `continued_ms` (100 ms for the two clocks' rounding).
    assert!(
        ended_ms >= continued_ms + (TIMEOUT_SECS as i64) * 1000 - 100,
        "the quiet session expired {} ms after the freeze, not a full timeout",
        ended_ms - continued_ms
    );
    let log = server.log();
    assert!(
        log.contains("made no progress"),
        "the freeze was not logged:\n{log}"
    );
}

// ---------------------------------------------------------------------------
// 2. The wall clock stepped under the server

fn faketime_available() -> bool {
    if Path::new(LIBFAKETIME).exists() {
        true
    } else if std::env::var_os("KEYSEAT_REQUIRE_FAKETIME").is_some() {
        panic!("{LIBFAKETIME} not found and KEYSEAT_REQUIRE_FAKETIME is set: install faketime");
    } else {
        eprintln!(
            "skipping: {LIBFAKETIME} not found (Debian's faketime package; .ci/run installs it)"
        );
        false
    }
}

fn set_offset(file: &Path, secs: i64) {
    std::fs::write(file, format!("{secs:+}\n")).unwrap();
}

/// What the server's clock says: the `server_time`-free way is the Date
/// header (seconds) of a `/health` answer.
async fn server_date(proc: &Proc) -> String {
    let resp = proc
        .client
        .get(format!("{}/health", proc.url))
        .send()
        .await
        .unwrap();
    resp.headers()["date"].to_str().unwrap().to_owned()
}

/// A server under libfaketime, its wall clock's offset 0 in the returned
/// file; `None` (after saying why) where libfaketime is missing.
async fn faked_server() -> Option<(Proc, PathBuf, tempfile::TempDir)> {
    if !faketime_available() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let offset = dir.path().join("offset");
    set_offset(&offset, 0);
    let log = dir.path().join("log");
    let server = serve(&dir.path().join("k.db"), &log, Wall::Faked(&offset)).await;
    // The server first: it is stopped before its directory goes.
    Some((server, offset, dir))
}

/// A wall clock stepped 30 s ahead does not end the lease of a device
/// heartbeating every half second.
#[tokio::test]
async fn a_wall_clock_stepped_forward_ends_no_lease() {
    let Some((server, offset, _dir)) = faked_server().await else {
        return;
    };
    let key = server.create_key(json!({})).await;
    let id = server.started(&key, "laptop").await;
    let device = Device::heartbeat_every(&server, &key, &id, Duration::from_millis(500));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    set_offset(&offset, 30);
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let (beats, failures) = device.finish().await;
    assert!(failures.is_empty(), "refused after the step: {failures:?}");
    assert!(beats >= 6, "only {beats} heartbeats answered");
    assert_eq!(server.live_ids(&key).await, vec![id]);
}

/// A wall clock stepped 60 s back neither stops the server's clock nor lets
/// a ghost (a device that stopped heartbeating) hold a reject key's only
/// seat past its timeout.
#[tokio::test]
async fn a_wall_clock_stepped_back_keeps_time_moving_and_ghosts_die_on_time() {
    let Some((server, offset, _dir)) = faked_server().await else {
        return;
    };
    let key = server.create_key(json!({"on_conflict": "reject"})).await;
    server.started(&key, "ghost").await;
    let ghost_seen = Instant::now();
    set_offset(&offset, -60);
    let before = server_date(&server).await;
    // Refused while the ghost is live, then admitted within its timeout.
    let admitted = loop {
        let (status, body) = server.start(&key, "newcomer").await;
        if status == 200 {
            break ghost_seen.elapsed();
        }
        assert_eq!(status, 409, "{body}");
        assert!(
            ghost_seen.elapsed() < Duration::from_secs(TIMEOUT_SECS + 2),
            "the ghost still holds the seat after {:?}",
            ghost_seen.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(admitted >= Duration::from_millis(TIMEOUT_SECS * 1000 - 300));
    let after = server_date(&server).await;
    assert_ne!(before, after, "the server's clock stood still");
}

/// A lease persisted while the wall clock was ahead ("in the future" after
/// the clock is set back and the server restarted) holds no seat past one
/// timeout from readiness.
#[tokio::test]
async fn a_lease_from_a_clock_that_was_ahead_holds_one_timeout_after_restart() {
    if !faketime_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (db, offset) = (dir.path().join("k.db"), dir.path().join("offset"));
    set_offset(&offset, 60);
    let mut server = serve(&db, &dir.path().join("log"), Wall::Faked(&offset)).await;
    let key = server.create_key(json!({"on_conflict": "reject"})).await;
    server.started(&key, "ghost").await;
    server.stop();

    set_offset(&offset, 0);
    let spawned = Instant::now();
    let server = serve(&db, &dir.path().join("log2"), Wall::Faked(&offset)).await;
    loop {
        let (status, body) = server.start(&key, "newcomer").await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 409, "{body}");
        assert!(
            spawned.elapsed() < Duration::from_secs(TIMEOUT_SECS + 3),
            "the ghost's future lease still holds the seat after {:?}",
            spawned.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------
// 3. The database file deleted or replaced under the server

fn side(db: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", db.display()))
}

/// Writes are refused (503) once the file is gone, `/health` says the
/// database is in error, the log says what happened, and no fresh database
/// appears at the old path.
async fn deleted_files_stop_every_acknowledgement(suffixes: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.db");
    let server = serve(&db, &dir.path().join("log"), Wall::Real).await;
    let key = server.create_key(json!({"max_sessions": 5})).await;
    let id = server.started(&key, "laptop").await;
    for s in suffixes {
        std::fs::remove_file(side(&db, s)).unwrap();
    }
    // A write right away is refused: the check runs before every commit.
    let (status, body) = server.start(&key, "second").await;
    assert_eq!(
        status, 503,
        "start acknowledged after the file was deleted: {body}"
    );
    assert_eq!(body["error"]["code"], "unavailable");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("deleted"), "{message}");
    let (status, _) = server.heartbeat(&key, &id).await;
    assert_eq!(
        status, 503,
        "heartbeat acknowledged after the file was deleted"
    );
    let (status, body) = send(server.client.get(format!("{}/health", server.url))).await;
    assert_eq!(status, 503);
    assert_eq!(body["database"], "error");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let log = server.log();
    assert!(
        log.contains("was deleted while the server was running"),
        "{log}"
    );
    if suffixes.contains(&"") {
        assert!(!db.exists(), "a fresh database was created at the old path");
    }
}

#[tokio::test]
async fn deleting_the_database_under_the_server_stops_acknowledging_writes() {
    deleted_files_stop_every_acknowledgement(&["", "-wal", "-shm"]).await;
}

#[tokio::test]
async fn deleting_the_wal_under_the_server_stops_acknowledging_writes() {
    deleted_files_stop_every_acknowledgement(&["-wal", "-shm"]).await;
}

/// SQLite keeps the side files beside the real file when the path is a
/// symbolic link; the server starts on such a path and watches them there.
#[tokio::test]
async fn a_database_named_through_a_symbolic_link_is_served_and_watched() {
    let dir = tempfile::tempdir().unwrap();
    let real_dir = dir.path().join("real");
    std::fs::create_dir(&real_dir).unwrap();
    let real = real_dir.join("k.db");
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let server = serve(&link, &dir.path().join("log"), Wall::Real).await;
    let key = server.create_key(json!({})).await;
    std::fs::remove_file(side(&real, "-wal")).unwrap();
    let (status, body) = server.start(&key, "laptop").await;
    assert_eq!(status, 503, "{body}");
}

async fn key_count(proc: &Proc) -> usize {
    let (status, body) = send(
        proc.client
            .get(format!("{}/api/admin/keys?limit=1000", proc.url))
            .bearer_auth(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["keys"].as_array().unwrap().len()
}

/// Deleting the log loses nothing acknowledged before: the server copies
/// the log it still has open into the database file, so even a SIGKILL
/// after that keeps every key.
#[tokio::test]
async fn writes_acknowledged_before_the_log_was_deleted_survive_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.db");
    let mut server = serve(&db, &dir.path().join("log"), Wall::Real).await;
    for _ in 0..20 {
        server.create_key(json!({})).await;
    }
    std::fs::remove_file(side(&db, "-wal")).unwrap();
    std::fs::remove_file(side(&db, "-shm")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log().contains("was copied into") {
        assert!(
            Instant::now() < deadline,
            "no rescue logged:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.signal("KILL");
    server.child.wait().unwrap();
    let server = serve(&db, &dir.path().join("log2"), Wall::Real).await;
    assert_eq!(key_count(&server).await, 20);
}

/// Deleting the database file: the server saves a copy of everything it
/// had beside it, and the next start refuses to make a new empty database
/// and names the copy; with the copy moved back, every key is there.
#[tokio::test]
async fn a_deleted_database_is_saved_beside_it_and_never_silently_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.db");
    let mut server = serve(&db, &dir.path().join("log"), Wall::Real).await;
    for _ in 0..5 {
        server.create_key(json!({})).await;
    }
    for s in ["", "-wal", "-shm"] {
        std::fs::remove_file(side(&db, s)).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server
        .log()
        .contains("a copy of everything this server had was saved to")
    {
        assert!(
            Instant::now() < deadline,
            "no copy logged:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop();
    assert!(!db.exists(), "a new database was created at the old path");
    let copy = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("k.db.rescued-"))
        .expect("a rescued copy");

    let out = common::keyseat_command()
        .arg("serve")
        .arg("--database")
        .arg(&db)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not exist, but a keyseat server has served it"),
        "{err}"
    );
    assert!(err.contains(&copy.display().to_string()), "{err}");
    assert!(!db.exists());

    std::fs::rename(&copy, &db).unwrap();
    let server = serve(&db, &dir.path().join("log2"), Wall::Real).await;
    assert_eq!(key_count(&server).await, 5);
}

#[tokio::test]
async fn a_replaced_database_is_noticed_within_a_tick() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.db");
    let server = serve(&db, &dir.path().join("log"), Wall::Real).await;
    server.create_key(json!({})).await;
    let copy = dir.path().join("copy.db");
    std::fs::copy(&db, &copy).unwrap();
    std::fs::rename(&copy, &db).unwrap();
    // No request: the upkeep tick notices by itself.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, body) = send(server.client.get(format!("{}/health", server.url))).await;
    assert_eq!(status, 503, "{body}");
    let log = server.log();
    assert!(log.contains("was replaced by another file"), "{log}");
}
