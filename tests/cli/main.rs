//! The command line as an operator uses it: the real `keyseat` binary run
//! against a temporary database, checked against the "Running" section of
//! the wire contract (docs/api.md).
//!
//! Every child process starts with no `KEYSEAT_*` variable from the
//! developer's environment, so only what a test sets reaches it. Only one
//! test starts a real server (`serve_runs_until_sigterm_...`); the others
//! stay with what the CLI alone can do.

#[path = "../common/mod.rs"]
mod common;
mod database;
mod input;
mod keys;
// Traffic for the logs comes from `keyseat check`, a client command.
#[cfg(feature = "client")]
mod logs;
mod serve;
mod sessions;
mod signing;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_keyseat");
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

// ---------------------------------------------------------------- helpers

/// `keyseat` with a clean environment: no inherited `KEYSEAT_*` variable.
fn keyseat() -> Command {
    let mut cmd = Command::new(BIN);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KEYSEAT_") {
            cmd.env_remove(&name);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs `keyseat --database <db> <args…>` (a file, or a PostgreSQL URL).
fn run(db: impl AsRef<OsStr>, args: &[&str]) -> Output {
    run_env(db, args, &[])
}

/// Runs `keyseat --database <db> <args…>` with extra environment variables.
fn run_env(db: impl AsRef<OsStr>, args: &[&str], env: &[(&str, &str)]) -> Output {
    keyseat()
        .arg("--database")
        .arg(db)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run keyseat")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts success and returns stdout.
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "expected success, got {}\nstdout: {}\nstderr: {}",
        out.status,
        stdout(out),
        stderr(out)
    );
    assert!(!stderr(out).contains("panicked"), "{}", stderr(out));
    stdout(out)
}

/// Asserts success and parses stdout as JSON.
fn ok_json(out: &Output) -> Value {
    let text = ok(out);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Asserts failure with exactly one line on stderr, no panic; returns it.
fn fails(out: &Output) -> String {
    let err = stderr(out);
    assert!(
        !out.status.success(),
        "expected failure, got {}\nstdout: {}\nstderr: {err}",
        out.status,
        stdout(out)
    );
    assert!(!err.contains("panicked"), "panicked: {err}");
    let lines: Vec<&str> = err.trim_end().lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got: {err:?}");
    assert!(!lines[0].trim().is_empty(), "empty error line");
    lines[0].to_owned()
}

/// Asserts exit code 2 with one line on stderr; returns it.
fn fails_with_2(out: &Output) -> String {
    let line = fails(out);
    assert_eq!(out.status.code(), Some(2), "exit code for: {line}");
    line
}

/// A migrated database: a temporary directory holding `keyseat.db`, or
/// with `KEYSEAT_TEST_ENGINE=postgres` a new PostgreSQL database (the
/// commands that work on data run on both engines; the tests of the file
/// itself, in `database.rs`, on SQLite).
struct Db {
    _dir: TempDir,
    target: std::ffi::OsString,
}

impl Db {
    /// What `--database` is given.
    fn path(&self) -> &OsStr {
        &self.target
    }
}

fn fresh_db() -> Db {
    let dir = TempDir::new().expect("tempdir");
    let target = std::ffi::OsString::from(common::test_database_blocking(dir.path()));
    ok(&run(&target, &["migrate"]));
    Db { _dir: dir, target }
}

/// A temporary directory and a path inside it that does not exist yet.
fn missing_db() -> (TempDir, PathBuf) {
    let dir = TempDir::new().expect("tempdir");
    let path = dir.path().join("no-such.db");
    (dir, path)
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `keys create <args…> --json`, returning the parsed key.
fn create_key(db: impl AsRef<OsStr>, args: &[&str]) -> Value {
    let mut all = vec!["keys", "create"];
    all.extend_from_slice(args);
    all.push("--json");
    ok_json(&run(db, &all))
}

fn field<'a>(v: &'a Value, name: &str) -> &'a str {
    v[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} is not a string in {v}"))
}

fn base62(mut value: u64, width: usize) -> String {
    let mut digits = vec![b'0'; width];
    for slot in digits.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    String::from_utf8(digits).expect("ascii")
}

/// Waits for a child up to `limit`; `None` if it is still running.
fn wait_for(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills a spawned server if a test fails before it is stopped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A spawned `serve` whose stderr is read line by line on a thread, so a
/// test can wait for a line and still get every line at the end.
struct LoggedServe {
    child: KillOnDrop,
    lines: mpsc::Receiver<String>,
    reader: std::thread::JoinHandle<()>,
}

impl LoggedServe {
    /// Spawns `cmd` (a `serve` command) with stdout closed, stderr read.
    fn spawn(mut cmd: Command) -> LoggedServe {
        let mut child = KillOnDrop(
            cmd.stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn serve"),
        );
        let pipe = child.0.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        LoggedServe {
            child,
            lines,
            reader,
        }
    }

    /// Waits (20 s at most) for the "listening on http://127.0.0.1:N" line;
    /// the lines before it go to `seen`. The line and the port it names.
    fn listening(&self, seen: &mut Vec<String>) -> (String, u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let ready = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains("listening on http://") => break line,
                Ok(line) => seen.push(line),
                Err(_) => panic!("serve never said it was listening; stderr: {seen:?}"),
            }
        };
        let port = ready
            .split("listening on http://127.0.0.1:")
            .nth(1)
            .map(|rest| {
                rest.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .and_then(|digits| digits.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("no port in: {ready}"));
        (ready, port)
    }

    /// SIGTERM; asserts it exits 0 within 15 s. The lines not read yet.
    fn stop(mut self) -> Vec<String> {
        let pid = self.child.0.id().to_string();
        let kill = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(kill.success());
        let status = wait_for(&mut self.child.0, Duration::from_secs(15));
        let status = status.expect("serve did not stop within 15 s of SIGTERM");
        assert!(status.success(), "serve exited with {status}");
        self.reader.join().unwrap();
        self.lines.try_iter().collect()
    }
}

/// Every command that needs an existing database (all but serve/migrate).
const EXISTING_DB_COMMANDS: &[&[&str]] = &[
    &["sweep"],
    &["sweep", "--json"],
    &["keys", "create", "--label", "L"],
    &["keys", "list"],
    &["keys", "list", "--json"],
    &["keys", "show", "key_0000000000000000"],
    &["keys", "update", "key_0000000000000000", "--label", "x"],
    &["keys", "suspend", "key_0000000000000000"],
    &["keys", "resume", "key_0000000000000000"],
    &["keys", "revoke", "key_0000000000000000"],
    &["sessions", "list"],
    &["sessions", "kick", "some-session-id"],
    &["events"],
];
