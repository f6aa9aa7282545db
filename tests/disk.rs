//! Disk trouble against the real binary: a database locked by another
//! process, a read-only file system, a full disk. The contract: a clear
//! start-up error (one line, non-zero exit) or 503 `unavailable` answers
//! with the JSON error shape; never a panic or a 500; never a half-applied
//! change (a write that got 503 left nothing behind); and once the trouble
//! is gone, the server works again without a restart.
//!
//! How each condition is made (we run as root, so `chmod` stops nothing):
//! - locked: this process holds `BEGIN EXCLUSIVE` on the file through
//!   rusqlite (SQLite's own write lock, as another keyseat or a `sqlite3`
//!   shell in a write transaction would);
//! - read-only at start-up: the server runs in its own mount namespace
//!   (`unshare -m`) where the database directory is a read-only bind mount,
//!   a real `EROFS` file system;
//! - read-only while running: a mount cannot turn read-only while files on
//!   it are open for writing (EBUSY), so the files get the immutable
//!   attribute (`chattr +i`), after which every write to them fails with
//!   EPERM, as on a file system remounted read-only by the kernel after an
//!   error;
//! - full: the server runs in its own mount namespace on a small `tmpfs`
//!   (real `ENOSPC`), which the test then grows (`nsenter ... mount -o
//!   remount,size=`) to show recovery.
//!
//! Tests that need `unshare`, `mount`, `nsenter` or `chattr` skip with a
//! printed reason when the machine does not allow them.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::api::{Answered, Api, ApiErr};
use keyseat::model::Event;
use keyseat::wire::{HeartbeatAnswer, StartAnswer};
use serde_json::json;

const ADMIN_TOKEN: &str = "disk-admin-token-0123456789";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_keyseat")
}

/// `keyseat serve` with test settings, as a shell word list, so it can also
/// run behind `unshare`.
fn serve_args(db: &Path, port: u16) -> Vec<String> {
    vec![
        bin().to_owned(),
        "serve".into(),
        "--database".into(),
        db.display().to_string(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
    ]
}

struct Server {
    child: Child,
    api: Api,
    log: PathBuf,
}

/// Spawns `program args` (keyseat serve, possibly wrapped) with the test
/// environment; stderr goes to `log`.
fn spawn(program: &str, args: &[String], log: &Path, port: u16) -> Server {
    let mut cmd = common::clean_command(program);
    let child = cmd
        .args(args)
        .env("KEYSEAT_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("KEYSEAT_RATE_LIMITS", "off")
        .env("KEYSEAT_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(log).unwrap())
        .spawn()
        .expect("spawn");
    Server {
        child,
        api: Api::new(&format!("http://127.0.0.1:{port}"))
            .with_admin(ADMIN_TOKEN)
            .with_timeout(Duration::from_secs(60)),
        log: log.to_owned(),
    }
}

impl Server {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for `/health` 200; `Err(exit code, stderr)` if it exits first.
    async fn ready(&mut self) -> Result<(), (Option<i32>, String)> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err((status.code(), self.log()));
            }
            assert!(Instant::now() < deadline, "never ready:\n{}", self.log());
            if self.api.health().await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A new key with default settings: (access key, key id).
    async fn create_key(&self) -> (String, String) {
        let created = checked(self.api.create_key(json!({})).await).answer("create key");
        (created.access_key, created.key.key_id)
    }

    async fn start(&self, key: &str, id: &str, device: &str) -> Result<StartAnswer, ApiErr> {
        checked(
            self.api
                .start(key, Some(id), Some(device), Some(device))
                .await,
        )
    }

    async fn heartbeat(&self, key: &str, id: &str) -> Result<HeartbeatAnswer, ApiErr> {
        checked(self.api.heartbeat(key, id).await)
    }

    /// Every event, newest first.
    async fn events(&self) -> Vec<Event> {
        checked(self.api.events("limit=1000").await)
            .answer("events")
            .events
    }

    async fn key_count(&self) -> usize {
        checked(self.api.list_keys("limit=1000").await)
            .answer("keys")
            .keys
            .len()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = self.log();
        assert!(!log.contains("panicked"), "the server panicked:\n{log}");
    }
}

/// Every answer arrives, and a 5xx is 503 `unavailable`.
#[track_caller]
fn checked<T>(answer: Result<T, ApiErr>) -> Result<T, ApiErr> {
    if let Err(e) = &answer {
        assert!(!e.no_answer(), "{e}");
        assert!(
            e.status < 500 || e.is_unavailable(),
            "{e} (a 5xx must be 503 unavailable)"
        );
    }
    answer
}

/// A start-up failure: non-zero exit, one `keyseat: ...` line, no panic.
fn assert_clear_start_up_error(code: Option<i32>, stderr: &str, mentions: &[&str]) -> String {
    assert!(
        matches!(code, Some(c) if c != 0),
        "exit code {code:?}:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("keyseat: "))
        .unwrap_or_else(|| panic!("no `keyseat: ...` line:\n{stderr}"))
        .to_owned();
    assert!(
        mentions.iter().any(|m| line.to_lowercase().contains(m)),
        "the error does not say what is wrong (expected one of {mentions:?}): {line}"
    );
    line
}

fn migrate(db: &Path) {
    let out = Command::new(bin())
        .args(["migrate", "--database"])
        .arg(db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// Runs a shell command; `Err(reason)` if it fails.
fn sh(script: &str) -> Result<(), String> {
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{script}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether this machine lets us make private mounts; the reason if not.
fn can_mount() -> Result<(), String> {
    sh("unshare -m sh -c 'mount -t tmpfs -o size=64k tmpfs /mnt && umount /mnt'")
        .and_then(|()| sh("command -v nsenter"))
}

// ---------------------------------------------------------------------------
// Locked by another process

/// Start-up while another process holds the write lock: 503 meanwhile,
/// then a clear error (or, if the lock goes in time, a normal start).
#[tokio::test]
async fn locked_database_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keyseat.db");
    migrate(&db);
    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();

    let port = common::free_port();
    let args = serve_args(&db, port);
    let mut s = spawn(&args[0], &args[1..], &dir.path().join("1.log"), port);
    // While it waits for the lock, every answer is 503.
    let mut answered = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match s.api.health().await {
            Err(e) if e.no_answer() => {} // not listening yet
            health => {
                assert_eq!(health.err().map(|e| e.status), Some(503));
                let e = checked(s.api.list_keys("").await).unwrap_err();
                assert_eq!(e.status, 503, "{e}");
                assert!(e.is_unavailable(), "{e}");
                answered += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered > 0, "the listener never answered while starting");

    // Held past SQLite's busy timeout (5 s): a clear start-up error.
    let outcome = tokio::time::timeout(Duration::from_secs(30), s.ready()).await;
    lock.execute_batch("COMMIT").unwrap();
    match outcome {
        Ok(Err((code, stderr))) => {
            let line =
                assert_clear_start_up_error(code, &stderr, &["another process holds a lock"]);
            println!("locked at start-up: exit {code:?}: {line}");
        }
        Ok(Ok(())) => panic!("became ready while the database was locked"),
        Err(_) => panic!("neither ready nor failed 30 s after start:\n{}", s.log()),
    }
    s.kill();

    // Lock gone: it starts.
    let port = common::free_port();
    let args = serve_args(&db, port);
    let mut s = spawn(&args[0], &args[1..], &dir.path().join("2.log"), port);
    s.ready().await.expect("starts once the lock is gone");
    s.kill();
}

/// While running: writes get 503 (after the busy timeout), heartbeats and
/// reads go on, nothing is half-applied, and writes work again once the
/// lock is released.
#[tokio::test]
async fn locked_database_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keyseat.db");
    let port = common::free_port();
    let args = serve_args(&db, port);
    let mut s = spawn(&args[0], &args[1..], &dir.path().join("1.log"), port);
    s.ready().await.unwrap();
    let (key, key_id) = s.create_key().await;
    s.start(&key, "live-before-lock", "a").await.answer("start");
    let events_before = s.events().await.len();
    let keys_before = s.key_count().await;

    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let (start, create, end, hb, status) = tokio::join!(
        s.start(&key, "started-while-locked", "b"),
        s.api.create_key(json!({"label": "while locked"})),
        s.api.end(&key, "live-before-lock"),
        s.heartbeat(&key, "live-before-lock"),
        s.api.status(&key),
    );
    lock.execute_batch("COMMIT").unwrap();
    let (create, end, status) = (checked(create), checked(end), checked(status));
    for (what, refused) in [
        ("start", start.err()),
        ("create key", create.err()),
        ("end", end.err()),
    ] {
        let e = refused.unwrap_or_else(|| panic!("{what} while locked: succeeded"));
        assert_eq!(e.status, 503, "{what} while locked: {e}");
        assert!(e.is_unavailable(), "{what}: {e}");
    }
    hb.answer("heartbeats are answered from memory");
    status.answer("reads work while a writer holds the lock");

    // Nothing half-applied.
    assert_eq!(
        s.events().await.len(),
        events_before,
        "no event was recorded"
    );
    assert_eq!(s.key_count().await, keys_before, "no key was created");
    let e = s.heartbeat(&key, "started-while-locked").await.unwrap_err();
    assert_eq!(e.status, 404, "the refused start left no session: {e}");
    let beat = s.heartbeat(&key, "live-before-lock").await;
    beat.answer("the refused end ended nothing");

    // Recovered, without a restart.
    s.start(&key, "started-after-lock", "c")
        .await
        .answer("start");
    checked(s.api.revoke_key(&key_id).await).answer("revoke");
    s.kill();
}

// ---------------------------------------------------------------------------
// Read-only

/// A database on a read-only file system: a clear start-up error.
#[tokio::test]
async fn read_only_file_system_at_start_up() {
    if let Err(why) = can_mount() {
        println!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let db = data.join("keyseat.db");
    migrate(&db);
    let port = common::free_port();
    let d = data.display();
    let script =
        format!("mount --bind '{d}' '{d}' && mount -o remount,bind,ro '{d}' && exec \"$@\"");
    let mut args = vec![
        "-m".to_owned(),
        "sh".into(),
        "-c".into(),
        script,
        "sh".into(),
    ];
    args.extend(serve_args(&db, port));
    let mut s = spawn("unshare", &args, &dir.path().join("1.log"), port);
    match s.ready().await {
        Err((code, stderr)) => {
            // SQLite says "attempt to write a readonly database" or
            // "unable to open database file", depending on the step that
            // meets the read-only file system first.
            let line = assert_clear_start_up_error(code, &stderr, &["read-only"]);
            println!("read-only at start-up: exit {code:?}: {line}");
        }
        Ok(()) => {
            // If it serves reads, every write must be 503.
            let e = checked(s.api.create_key(json!({})).await).unwrap_err();
            assert_eq!(e.status, 503, "{e}");
            s.kill();
        }
    }
}

/// Files that turn unwritable while the server runs (immutable attribute:
/// every write fails with EPERM): 503 for writes, nothing half-applied,
/// and recovery once they are writable again.
#[tokio::test]
async fn files_turning_unwritable_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keyseat.db");
    let port = common::free_port();
    let args = serve_args(&db, port);
    let mut s = spawn(&args[0], &args[1..], &dir.path().join("1.log"), port);
    s.ready().await.unwrap();
    let (key, _) = s.create_key().await;
    s.start(&key, "live-before", "a").await.answer("start");
    let events_before = s.events().await.len();
    let keys_before = s.key_count().await;

    let files: Vec<String> = ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| format!("{}{suffix}", db.display()))
        .collect();
    struct Immutable(Vec<String>);
    impl Drop for Immutable {
        fn drop(&mut self) {
            for f in &self.0 {
                let _ = sh(&format!("chattr -i '{f}'"));
            }
        }
    }
    let mut guard = Immutable(Vec::new());
    for f in &files {
        if let Err(why) = sh(&format!("chattr +i '{f}'")) {
            println!("skipped: {why}");
            s.kill();
            return;
        }
        guard.0.push(f.clone());
    }

    let e = s
        .start(&key, "started-while-readonly", "b")
        .await
        .unwrap_err();
    assert_eq!(e.status, 503, "start on an unwritable file: {e}");
    let e = checked(s.api.create_key(json!({})).await).unwrap_err();
    assert_eq!(e.status, 503, "key creation on an unwritable file: {e}");
    s.heartbeat(&key, "live-before").await.answer("heartbeat");
    drop(guard);

    // Nothing half-applied, and writes work again.
    assert_eq!(
        s.events().await.len(),
        events_before,
        "no event was recorded"
    );
    assert_eq!(s.key_count().await, keys_before, "no key was created");
    let e = s
        .heartbeat(&key, "started-while-readonly")
        .await
        .unwrap_err();
    assert_eq!(e.status, 404, "the refused start left no session: {e}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let Err(e) = s.start(&key, "started-after", "c").await else {
            break;
        };
        assert!(Instant::now() < deadline, "never recovered: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.kill();
    let check = rusqlite::Connection::open(&db).unwrap();
    let ok: String = check
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}

// ---------------------------------------------------------------------------
// Full

/// `keyseat serve` in its own mount namespace on a tmpfs of `size` at
/// `data`.
fn serve_on_tmpfs(dir: &Path, data: &Path, size: &str, log: &str) -> (Server, u16) {
    let port = common::free_port();
    let d = data.display();
    let script = format!("mount -t tmpfs -o size={size} tmpfs '{d}' && exec \"$@\"");
    let mut args = vec![
        "-m".to_owned(),
        "sh".into(),
        "-c".into(),
        script,
        "sh".into(),
    ];
    args.extend(serve_args(&data.join("keyseat.db"), port));
    (spawn("unshare", &args, &dir.join(log), port), port)
}

/// A file system too small to create the database: a clear start-up error.
#[tokio::test]
async fn full_disk_at_start_up() {
    if let Err(why) = can_mount() {
        println!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let (mut s, _) = serve_on_tmpfs(dir.path(), &data, "8k", "1.log");
    match s.ready().await {
        Err((code, stderr)) => {
            let line = assert_clear_start_up_error(code, &stderr, &["full"]);
            println!("full disk at start-up: exit {code:?}: {line}");
        }
        Ok(()) => panic!("started on an 8 KiB file system"),
    }
}

/// Filling the disk under load: every write either succeeds or gets 503;
/// a refused start leaves no session and no event, a refused key creation
/// no key; every acknowledged start is still there; after the file system
/// grows, writes work again without a restart.
#[tokio::test]
async fn full_disk_while_running() {
    if let Err(why) = can_mount() {
        println!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let (mut s, _) = serve_on_tmpfs(dir.path(), &data, "1m", "1.log");
    s.ready().await.unwrap();
    let (key, key_id) = s.create_key().await;
    let patched = checked(
        s.api
            .patch_key(&key_id, json!({"max_sessions": 1000}))
            .await,
    );
    patched.answer("patch");

    let pad = "x".repeat(120);
    let mut acked = Vec::new();
    let mut refused = Vec::new();
    let mut keys_acked = 1;
    let mut keys_refused = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut n = 0;
    while refused.len() < 5 {
        assert!(Instant::now() < deadline, "the disk never filled up");
        n += 1;
        let id = format!("fill-{n:06}");
        match s.start(&key, &id, &format!("{pad}{n}")).await {
            Ok(_) => acked.push(id),
            Err(e) if e.status == 503 => refused.push(id),
            Err(e) => panic!("start {id}: {e}"),
        }
        if n % 10 == 0 {
            match checked(s.api.create_key(json!({"label": pad})).await) {
                Ok(_) => keys_acked += 1,
                Err(e) if e.status == 503 => keys_refused += 1,
                Err(e) => panic!("create key: {e}"),
            }
        }
    }
    println!(
        "full disk: {} starts acknowledged, {} refused with 503; keys {keys_acked} created, {keys_refused} refused",
        acked.len(),
        refused.len()
    );

    // Reads still work; nothing refused is there; everything acknowledged is.
    assert_eq!(
        s.key_count().await,
        keys_acked,
        "refused key creations left no key"
    );
    let events = s.events().await;
    for id in &refused {
        let beat = s.heartbeat(&key, id).await;
        let e = beat.expect_err("a refused start left no session");
        assert!(
            e.status == 404 || e.is_unavailable(),
            "refused start {id}: heartbeat {e}"
        );
        assert!(
            !events.iter().any(|e| e.session_id.as_ref() == Some(id)),
            "refused start {id} left an event"
        );
    }
    let query = format!("key_id={key_id}");
    let list = checked(s.api.sessions(&query).await).answer("sessions");
    let live: Vec<&str> = list
        .sessions
        .iter()
        .map(|s| s.session_id.as_str())
        .collect();
    for id in &acked {
        assert!(
            live.contains(&id.as_str()),
            "acknowledged start {id} is missing"
        );
    }
    assert_eq!(live.len(), acked.len(), "only acknowledged starts are live");

    // Room again: writes work without a restart.
    let pid = s.child.id();
    sh(&format!(
        "nsenter -t {pid} -m mount -o remount,size=16m '{}'",
        data.display()
    ))
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let Err(e) = s.start(&key, "after-more-room", "z").await else {
            break;
        };
        assert!(Instant::now() < deadline, "never recovered: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The file as the server sees it is sound.
    let db = format!("/proc/{pid}/root{}", data.join("keyseat.db").display());
    let check = rusqlite::Connection::open(&db).unwrap();
    let ok: String = check
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    drop(check);
    s.kill();
}
