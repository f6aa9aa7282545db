//! The CLI while a server runs (issue 11, item 4): the real `keyseat`
//! binary serving a temporary database, and the real CLI beside it.
//!
//! While a server holds the database, the CLI's commands go through the
//! server's control socket (`<database>.sock`) and see its live view: the
//! device that keeps heartbeating is the one that keeps its seat, a dead
//! session is not listed, and a revoke does not wait for the file's lock
//! behind the server's writes. With no server, or only the stale socket of
//! a killed one, the CLI works on the file.
#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::{free_port, keyseat_command};
use keyseat::clock::Timestamp;
use serde_json::{json, Value};
use tempfile::TempDir;

// ---------------------------------------------------------------- harness

/// A `keyseat serve` child on a temporary database, killed on drop.
struct Served {
    child: Child,
    port: u16,
    db: PathBuf,
    log: mpsc::Receiver<String>,
    _dir: Option<TempDir>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Short timing, so a session dies within seconds; the sweep is slow, so
/// a dead session stays unswept (on disk, it still looks live).
const FAST: &[&str] = &[
    "--heartbeat-interval-seconds",
    "1",
    "--session-timeout-seconds",
    "3",
    "--sweep-interval-seconds",
    "600",
    "--rate-limits",
    "off",
];

fn serve(db: &Path, extra: &[&str]) -> Served {
    let port = free_port();
    let mut child = keyseat_command()
        .arg("--database")
        .arg(db)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keyseat serve");
    let pipe = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let served = Served {
        child,
        port,
        db: db.to_owned(),
        log: rx,
        _dir: None,
    };
    served.wait_for_log("listening on http://");
    served
}

fn serve_fresh(extra: &[&str]) -> Served {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("live.db");
    let mut served = serve(&db, extra);
    served._dir = Some(dir);
    served
}

impl Served {
    fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("the server never logged {needle:?}"),
            }
        }
    }

    fn cli(&self, args: &[&str]) -> Output {
        cli(&self.db, args)
    }

    /// A JSON POST to the server, answered as (status, body).
    fn post(&self, path: &str, body: Value) -> (u16, Value) {
        post(self.port, path, &body)
    }

    fn start(&self, key: &str, device: &str) -> String {
        let (status, body) = self.post(
            "/api/session/start",
            json!({"access_key": key, "device": {"name": device}}),
        );
        assert_eq!(status, 200, "start: {body}");
        body["session_id"].as_str().unwrap().to_owned()
    }

    fn heartbeat(&self, key: &str, session_id: &str) -> u16 {
        self.post(
            "/api/session/heartbeat",
            json!({"access_key": key, "session_id": session_id}),
        )
        .0
    }

    fn kill(&mut self, signal: &str) {
        let pid = self.child.id().to_string();
        let ok = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {signal} {pid}");
        self.child.wait().expect("wait for the server");
    }
}

fn cli(db: &Path, args: &[&str]) -> Output {
    keyseat_command()
        .arg("--database")
        .arg(db)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run keyseat")
}

fn ok_json(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "expected success, got {}\nstdout: {text}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `keys create --json`: (access key, key id).
fn create_key(db: &Path, args: &[&str]) -> (String, String) {
    let mut all = vec!["keys", "create", "--json"];
    all.extend_from_slice(args);
    let v = ok_json(&cli(db, &all));
    (
        v["access_key"].as_str().expect("access_key").to_owned(),
        v["key_id"].as_str().expect("key_id").to_owned(),
    )
}

/// One HTTP/1.1 request on its own connection.
fn post(port: u16, path: &str, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read the answer");
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

fn session_ids(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("a JSON array")
        .iter()
        .map(|s| s["session_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Heartbeats `session_id` every 0.5 s until stopped; counts failures.
fn keep_beating(port: u16, key: String, session_id: String) -> (Arc<AtomicBool>, Arc<AtomicUsize>) {
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let (s, f) = (stop.clone(), failed.clone());
    std::thread::spawn(move || {
        while !s.load(Ordering::SeqCst) {
            let body = json!({"access_key": key, "session_id": session_id});
            // The server may be gone when a test ends first.
            let Ok((status, _)) =
                std::panic::catch_unwind(|| post(port, "/api/session/heartbeat", &body))
            else {
                return;
            };
            if status != 200 {
                f.fetch_add(1, Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    (stop, failed)
}

// ---------------------------------------------------------------- tests

/// A 2-seat key: A started first and keeps heartbeating; B started later
/// and went quiet until its lease ran out (not yet swept). Lowering the
/// limit to 1 seat must keep A, as the admin API does. On disk A's
/// heartbeat time is still its start (older than B's), so a CLI deciding
/// from the file ended A.
#[test]
fn lowering_the_seat_limit_keeps_the_device_that_heartbeats() {
    let server = serve_fresh(FAST);
    let (key, key_id) = create_key(&server.db, &["--max-sessions", "2"]);
    let a = server.start(&key, "heartbeating");
    let (stop, failed) = keep_beating(server.port, key.clone(), a.clone());
    std::thread::sleep(Duration::from_millis(1200));
    let b = server.start(&key, "gone quiet");
    // B's lease (3 s) runs out; A keeps beating.
    std::thread::sleep(Duration::from_millis(4000));

    let change =
        ok_json(&server.cli(&["keys", "update", &key_id, "--max-sessions", "1", "--json"]));
    let ended = change["ended_sessions"].clone();
    assert!(
        !ended.to_string().contains(&a),
        "the heartbeating session {a} was ended: {change}"
    );
    std::thread::sleep(Duration::from_millis(1200));
    stop.store(true, Ordering::SeqCst);
    assert_eq!(failed.load(Ordering::SeqCst), 0, "A lost its seat");
    assert_eq!(server.heartbeat(&key, &a), 200, "A keeps its seat");
    let live = ok_json(&server.cli(&["sessions", "list", "--key", &key_id, "--json"]));
    assert_eq!(session_ids(&live), vec![a], "B ({b}) is dead, A is live");
}

/// A session stops being listed (by `sessions list` and `keys show`) as
/// soon as its lease runs out, not when the server next writes heartbeat
/// times or sweeps; and a live one is listed with its true last heartbeat.
#[test]
fn a_dead_session_is_not_listed_and_a_live_one_shows_its_last_heartbeat() {
    let server = serve_fresh(FAST);
    let (key, key_id) = create_key(&server.db, &["--max-sessions", "2"]);
    let quiet = server.start(&key, "quiet");
    let beating = server.start(&key, "beating");
    let (stop, _) = keep_beating(server.port, key.clone(), beating.clone());
    std::thread::sleep(Duration::from_millis(4500));

    let live = ok_json(&server.cli(&["sessions", "list", "--json"]));
    assert_eq!(
        session_ids(&live),
        vec![beating.clone()],
        "{quiet} died: {live}"
    );
    let time = |field: &str| {
        let text = live[0][field].as_str().unwrap();
        Timestamp::parse_rfc3339(text).unwrap_or_else(|| panic!("{field}: {text}"))
    };
    let (started, last) = (time("started_at"), time("last_heartbeat"));
    assert!(
        last.millis() - started.millis() >= 3000,
        "last heartbeat {last} is the live one, not the start {started}"
    );
    let shown = ok_json(&server.cli(&["keys", "show", &key_id, "--json"]));
    assert_eq!(
        session_ids(&shown["sessions"]),
        vec![beating.clone()],
        "{shown}"
    );
    // The same server is found through another name of the file.
    let link = server.db.with_file_name("another-name.db");
    std::os::unix::fs::symlink(&server.db, &link).unwrap();
    let live = ok_json(&cli(&link, &["sessions", "list", "--json"]));
    assert_eq!(
        session_ids(&live),
        vec![beating],
        "through a symlink: {live}"
    );
    stop.store(true, Ordering::SeqCst);
}

/// Revokes while 8 threads start sessions as fast as they can: every one
/// succeeds, promptly (the file's lock is the server's writer's, and a
/// CLI writing the file itself waited for it and sometimes gave up with
/// "database is locked").
#[test]
fn revoke_succeeds_promptly_under_start_load() {
    let server = serve_fresh(&["--rate-limits", "off"]);
    let victims: Vec<String> = (0..30).map(|_| create_key(&server.db, &[]).1).collect();
    let loaded: Vec<String> = (0..8).map(|_| create_key(&server.db, &[]).0).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let starts = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = loaded
        .into_iter()
        .map(|key| {
            let (stop, starts, port) = (stop.clone(), starts.clone(), server.port);
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let (status, _) = post(
                        port,
                        "/api/session/start",
                        &json!({"access_key": key, "device": {"name": "load"}}),
                    );
                    if status == 200 {
                        starts.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let began = Instant::now();
    let mut slowest = Duration::ZERO;
    for key_id in &victims {
        let t = Instant::now();
        let out = server.cli(&["keys", "revoke", key_id, "--json"]);
        slowest = slowest.max(t.elapsed());
        let v = ok_json(&out);
        assert_eq!(v["status"], "revoked", "{v}");
    }
    let elapsed = began.elapsed();
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    let n = starts.load(Ordering::SeqCst);
    eprintln!(
        "{} revokes in {elapsed:?} (slowest {slowest:?}) beside {n} starts",
        victims.len()
    );
    assert!(n > 0, "the load generator never started a session");
    assert!(
        slowest < Duration::from_secs(2),
        "a revoke took {slowest:?}"
    );
}

/// The socket is the owner's only (0600) and goes away at a clean stop;
/// after a SIGKILL its file stays, nobody answers on it, and the CLI
/// works on the file; the next server replaces it.
#[test]
fn without_a_server_or_with_a_stale_socket_the_cli_uses_the_file() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("k.db");
    let sock = PathBuf::from(format!("{}.sock", db.display()));

    let mut server = serve(&db, FAST);
    let meta = std::fs::symlink_metadata(&sock).expect("the control socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "owner only");
    let (key, key_id) = create_key(&db, &[]);
    server.kill("-TERM");
    assert!(!sock.exists(), "a clean stop removes the socket");

    // No server: the file.
    let listed = ok_json(&cli(&db, &["keys", "list", "--json"]));
    assert_eq!(listed[0]["key_id"], key_id.as_str());

    // A crash leaves the socket behind; nobody answers on it.
    let mut server = serve(&db, FAST);
    let a = server.start(&key, "before the crash");
    server.kill("-KILL");
    assert!(sock.exists(), "SIGKILL leaves the socket file");
    let (_, second) = create_key(&db, &["--label", "after the crash"]);
    let listed = ok_json(&cli(&db, &["keys", "list", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let live = ok_json(&cli(&db, &["sessions", "list", "--json"]));
    assert_eq!(session_ids(&live), vec![a.clone()], "from the file: {live}");
    let out = cli(&db, &["keys", "suspend", &second]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The next server replaces the stale socket and the CLI uses it again.
    let server = serve(&db, FAST);
    assert!(std::fs::symlink_metadata(&sock)
        .unwrap()
        .file_type()
        .is_socket());
    assert_eq!(server.heartbeat(&key, &a), 200, "resumed after the restart");
    let shown = ok_json(&server.cli(&["keys", "show", &second, "--json"]));
    assert_eq!(shown["status"], "suspended", "{shown}");
    let live = ok_json(&server.cli(&["sessions", "list", "--json"]));
    assert_eq!(session_ids(&live), vec![a]);
}
