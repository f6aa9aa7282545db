//! The command line as an operator uses it: the real `keyseat` binary run
//! against a temporary database, checked against the "Running" section of
//! the wire contract (docs/api.md).
//!
//! Every child process starts with no `KEYSEAT_*` variable from the
//! developer's environment, so only what a test sets reaches it. Only one
//! test starts a real server (`serve_runs_until_sigterm_...`); the others
//! stay with what the CLI alone can do.

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

/// Runs `keyseat --database <db> <args…>`.
fn run(db: &Path, args: &[&str]) -> Output {
    run_env(db, args, &[])
}

/// Runs `keyseat --database <db> <args…>` with extra environment variables.
fn run_env(db: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
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

/// A temporary directory holding a migrated `keyseat.db`.
struct Db {
    _dir: TempDir,
    path: PathBuf,
}

impl Db {
    fn path(&self) -> &Path {
        &self.path
    }
}

fn fresh_db() -> Db {
    let dir = TempDir::new().expect("tempdir");
    let path = dir.path().join("keyseat.db");
    ok(&run(&path, &["migrate"]));
    Db { _dir: dir, path }
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
fn create_key(db: &Path, args: &[&str]) -> Value {
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

// ------------------------------------------------------------- migrate

/// `migrate` creates the database file; a second `migrate` is a no-op that
/// succeeds; `migrate --json` prints parseable JSON naming the database.
#[test]
fn migrate_creates_the_database_and_can_run_again() {
    let (_dir, path) = missing_db();
    let first = ok(&run(&path, &["migrate"]));
    assert!(path.is_file(), "migrate did not create {}", path.display());
    assert!(first.contains("up to date"), "{first}");

    ok(&run(&path, &["migrate"]));
    let v = ok_json(&run(&path, &["migrate", "--json"]));
    assert_eq!(v["migrated"], Value::Bool(true), "{v}");
    assert_eq!(field(&v, "database"), path.display().to_string());

    // The migrated database is usable by every other command.
    ok(&run(&path, &["keys", "list"]));
}

/// `migrate` into a directory that does not exist fails with one line and
/// creates nothing.
#[test]
fn migrate_into_a_missing_directory_fails_cleanly() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("nope").join("keyseat.db");
    let line = fails(&run(&path, &["migrate"]));
    assert!(line.contains("nope"), "{line}");
    assert!(dir_entries(dir.path()).is_empty());
}

// ---------------------------------------------------- database problems

/// Every command other than serve/migrate, given a database path that does
/// not exist, exits non-zero with one line naming the path, and does not
/// create the file (a typo must not become a new empty database).
#[test]
fn commands_on_a_missing_database_fail_without_creating_it() {
    let (dir, path) = missing_db();
    for args in EXISTING_DB_COMMANDS {
        let out = run(&path, args);
        let line = fails(&out);
        assert!(
            line.contains(&path.display().to_string()),
            "{args:?}: error does not name the path: {line}"
        );
        assert!(
            line.contains("keyseat migrate"),
            "{args:?}: no hint: {line}"
        );
        assert!(!path.exists(), "{args:?} created {}", path.display());
        assert!(
            dir_entries(dir.path()).is_empty(),
            "{args:?} left files behind: {:?}",
            dir_entries(dir.path())
        );
    }
}

/// Run from the wrong directory, a relative database path that does not
/// exist is shown as the absolute path that was looked for.
#[test]
fn a_missing_relative_database_names_the_absolute_path() {
    let dir = TempDir::new().unwrap();
    let out = keyseat()
        .current_dir(dir.path())
        .args(["--database", "keyseat.db", "keys", "list"])
        .output()
        .unwrap();
    let line = fails(&out);
    let abs = dir.path().canonicalize().unwrap().join("keyseat.db");
    assert!(
        line.contains(&format!("(looked for {})", abs.display())),
        "{line}"
    );
}

/// A file that is not SQLite, passed as --database, gives one clear line
/// ("not a SQLite database", naming the file) and a non-zero exit, for
/// every command including `migrate`, and is left byte-for-byte untouched
/// with no -wal/-shm files beside it.
#[test]
fn a_non_sqlite_file_is_refused_and_left_untouched() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("notes.txt");
    let content = b"these are my notes, definitely not a database\n".repeat(20);
    std::fs::write(&path, &content).unwrap();

    let mut commands: Vec<&[&str]> = vec![&["migrate"], &["migrate", "--json"]];
    commands.extend_from_slice(EXISTING_DB_COMMANDS);
    for args in commands {
        let line = fails(&run(&path, args));
        assert!(
            line.contains("not a SQLite database"),
            "{args:?}: unclear error: {line}"
        );
        assert!(line.contains("notes.txt"), "{args:?}: {line}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            content,
            "{args:?} changed it"
        );
        assert_eq!(dir_entries(dir.path()), vec!["notes.txt".to_owned()]);
    }
}

/// An empty file is not treated as a keyseat database: commands say to run
/// `keyseat migrate`.
#[test]
fn an_empty_file_asks_for_migrate() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("empty.db");
    std::fs::write(&path, b"").unwrap();
    let line = fails(&run(&path, &["keys", "list"]));
    assert!(line.contains("keyseat migrate"), "{line}");
    ok(&run(&path, &["migrate"]));
    ok(&run(&path, &["keys", "list"]));
}

/// The database path can come from KEYSEAT_DATABASE instead of --database.
#[test]
fn the_database_can_come_from_the_environment() {
    let (_dir, path) = missing_db();
    let p = path.display().to_string();
    let out = keyseat()
        .args(["migrate", "--json"])
        .env("KEYSEAT_DATABASE", &p)
        .output()
        .unwrap();
    assert_eq!(field(&ok_json(&out), "database"), p);
    assert!(path.is_file());
}

// Regression (fixed): with a relative --database that starts with `file:` (a legal file
// name), `migrate` opens it as an SQLite URI (SQLITE_OPEN_URI in
// SqliteStore::open) and creates `foo.db`, while every other command looks
// for the literal file `file:foo.db` and says it does not exist.
/// The database file is exactly the path given: `--database file:foo.db`
/// means a file called `file:foo.db`, for `migrate` and every other command.
#[test]
fn the_database_path_is_taken_literally() {
    let dir = TempDir::new().unwrap();
    let migrate = keyseat()
        .current_dir(dir.path())
        .args(["--database", "file:foo.db", "migrate"])
        .output()
        .unwrap();
    ok(&migrate);
    let list = keyseat()
        .current_dir(dir.path())
        .args(["--database", "file:foo.db", "keys", "list"])
        .output()
        .unwrap();
    ok(&list);
    assert_eq!(
        dir_entries(dir.path())
            .into_iter()
            .filter(|n| n.ends_with(".db"))
            .collect::<Vec<_>>(),
        vec!["file:foo.db".to_owned()]
    );
}

// ------------------------------------------------------------ keys create

/// `keys create --label L --max-sessions 3 --on-conflict reject --json`
/// returns the access key (`ks_` + 38 base62, the last 6 a CRC32 checksum
/// of the rest), a key id (`key_` + 16+ base62), the prefix (first 11
/// characters of the access key) and the settings given.
#[test]
fn keys_create_json_has_the_contract_fields() {
    let db = fresh_db();
    let v = create_key(
        db.path(),
        &[
            "--label",
            "L",
            "--max-sessions",
            "3",
            "--on-conflict",
            "reject",
        ],
    );
    let key = field(&v, "access_key");
    assert_eq!(key.len(), 41, "{key}");
    assert!(key.starts_with("ks_"), "{key}");
    assert!(key[3..].bytes().all(|b| b.is_ascii_alphanumeric()), "{key}");
    let (body, checksum) = key.split_at(35);
    assert_eq!(
        checksum,
        base62(u64::from(crc32fast::hash(body.as_bytes())), 6),
        "checksum of {key}"
    );

    let key_id = field(&v, "key_id");
    assert!(key_id.starts_with("key_"), "{key_id}");
    assert!(key_id.len() >= 20, "{key_id}");
    assert!(key_id[4..].bytes().all(|b| b.is_ascii_alphanumeric()));

    assert_eq!(field(&v, "prefix"), &key[..11]);
    assert_eq!(field(&v, "label"), "L");
    assert_eq!(v["max_sessions"], 3);
    assert_eq!(field(&v, "on_conflict"), "reject");
    assert_eq!(field(&v, "status"), "active");
    assert!(v["expires_at"].is_null(), "{v}");

    // Two keys never share a secret or an id.
    let w = create_key(db.path(), &[]);
    assert_ne!(field(&w, "access_key"), key);
    assert_ne!(field(&w, "key_id"), key_id);
}

/// Defaults of `keys create`: one seat, policy takeover, no expiry.
#[test]
fn keys_create_defaults() {
    let db = fresh_db();
    let v = create_key(db.path(), &[]);
    assert_eq!(v["max_sessions"], 1);
    assert_eq!(field(&v, "on_conflict"), "takeover");
    assert!(v["label"].is_null() && v["expires_at"].is_null(), "{v}");
    let e = create_key(db.path(), &["--expires-at", "2030-06-01T12:00:00Z"]);
    assert_eq!(field(&e, "expires_at"), "2030-06-01T12:00:00Z");
}

/// Human `keys create` prints the access key exactly once, with the key id
/// and prefix, and nothing on stderr.
#[test]
fn keys_create_human_output_prints_the_access_key_once() {
    let db = fresh_db();
    let out = run(db.path(), &["keys", "create", "--label", "Acme"]);
    let text = ok(&out);
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    let keys: Vec<&str> = text
        .split_whitespace()
        .filter(|w| w.starts_with("ks_") && w.len() == 41)
        .collect();
    assert_eq!(
        keys.len(),
        1,
        "access key not printed exactly once:\n{text}"
    );
    let secret = keys[0];
    assert_eq!(text.matches(secret).count(), 1, "{text}");
    assert!(text.contains(&secret[..11]), "prefix missing:\n{text}");
    assert!(text.contains("key_"), "key id missing:\n{text}");
    assert!(text.contains("Acme"), "{text}");

    // The key it printed is the one stored.
    let list = ok_json(&run(db.path(), &["keys", "list", "--json"]));
    assert_eq!(field(&list[0], "prefix"), &secret[..11]);
}

// ------------------------------------------------------ keys list / show

/// `keys list` on an empty database says so; afterwards it lists every key
/// (human: one row with id, prefix, label; --json: an array of keys).
#[test]
fn keys_list_human_and_json() {
    let db = fresh_db();
    let empty = ok(&run(db.path(), &["keys", "list"]));
    assert!(empty.contains("No keys"), "{empty}");
    assert_eq!(
        ok_json(&run(db.path(), &["keys", "list", "--json"])),
        serde_json::json!([])
    );

    let a = create_key(db.path(), &["--label", "alpha"]);
    let b = create_key(db.path(), &["--label", "beta", "--max-sessions", "4"]);

    let text = ok(&run(db.path(), &["keys", "list"]));
    for (k, label) in [(&a, "alpha"), (&b, "beta")] {
        let row = text
            .lines()
            .find(|l| l.contains(field(k, "key_id")))
            .unwrap_or_else(|| panic!("no row for {k}:\n{text}"));
        assert!(row.contains(field(k, "prefix")), "{row}");
        assert!(row.contains(label), "{row}");
        assert!(row.contains("active"), "{row}");
    }
    assert_eq!(text.lines().count(), 3, "header + 2 rows:\n{text}");

    let list = ok_json(&run(db.path(), &["keys", "list", "--json"]));
    let list = list.as_array().expect("array");
    assert_eq!(list.len(), 2);
    let ids: Vec<&str> = list.iter().map(|k| field(k, "key_id")).collect();
    assert!(ids.contains(&field(&a, "key_id")) && ids.contains(&field(&b, "key_id")));
    let beta = list
        .iter()
        .find(|k| k["label"] == "beta")
        .expect("beta listed");
    assert_eq!(beta["max_sessions"], 4);
    assert_eq!(beta["live_sessions"], 0);
}

/// `keys show` finds a key by its key id and by its display prefix
/// (`ks_xxxxxxxx`), human and --json, and lists its (no) live sessions.
#[test]
fn keys_show_by_key_id_and_by_prefix() {
    let db = fresh_db();
    let k = create_key(db.path(), &["--label", "shown"]);
    let id = field(&k, "key_id");
    let prefix = field(&k, "prefix");
    assert_eq!(prefix.len(), 11);

    for reference in [id, prefix] {
        let v = ok_json(&run(db.path(), &["keys", "show", reference, "--json"]));
        assert_eq!(field(&v, "key_id"), id, "by {reference}");
        assert_eq!(field(&v, "prefix"), prefix);
        assert_eq!(field(&v, "label"), "shown");
        assert_eq!(v["sessions"], serde_json::json!([]), "{v}");
        assert!(v.get("access_key").is_none(), "secret in show: {v}");

        let text = ok(&run(db.path(), &["keys", "show", reference]));
        assert!(text.contains(id) && text.contains(prefix), "{text}");
        assert!(text.contains("No live sessions"), "{text}");
    }
}

/// The operator often has only the full key a customer pasted: it finds the
/// key wherever a key id or prefix is accepted, and is never printed back;
/// a mistyped one says so.
#[test]
fn keys_are_found_by_the_full_access_key_which_is_never_printed() {
    let db = fresh_db();
    let k = create_key(db.path(), &["--label", "pasted"]);
    let secret = field(&k, "access_key").to_owned();
    let id = field(&k, "key_id").to_owned();

    let out = run(db.path(), &["keys", "show", &secret, "--json"]);
    let v = ok_json(&out);
    assert_eq!(field(&v, "key_id"), id);
    for out in [
        out,
        run(db.path(), &["keys", "show", &secret]),
        run(db.path(), &["keys", "suspend", &secret]),
        run(db.path(), &["keys", "resume", &secret]),
    ] {
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(out.status.success(), "{all}");
        assert!(!all.contains(&secret), "the secret was printed: {all}");
    }

    // One character changed: the checksum catches it, and the message says
    // so without the secret.
    let last = secret.chars().last().unwrap();
    let typo = format!(
        "{}{}",
        &secret[..secret.len() - 1],
        if last == 'A' { 'B' } else { 'A' }
    );
    let err = fails(&run(db.path(), &["keys", "show", &typo]));
    assert!(err.contains("checksum does not match"), "{err}");
    assert!(!err.contains(&typo[..20]), "the secret was printed: {err}");
}

// --------------------------------------------------------- keys update

/// `keys update` changes the label, the seat limit, the conflict policy
/// and the expiry (RFC 3339, stored in UTC; `never` removes it); an empty
/// label clears it. Each change is recorded as a `key_updated` event.
#[test]
fn keys_update_changes_each_field() {
    let db = fresh_db();
    let k = create_key(db.path(), &["--label", "before"]);
    let id = field(&k, "key_id");
    let prefix = field(&k, "prefix");

    let v = ok_json(&run(
        db.path(),
        &["keys", "update", id, "--label", "after", "--json"],
    ));
    assert_eq!(field(&v, "label"), "after");

    let v = ok_json(&run(
        db.path(),
        &["keys", "update", prefix, "--max-sessions", "7", "--json"],
    ));
    assert_eq!(v["max_sessions"], 7);
    assert_eq!(field(&v, "label"), "after", "other fields kept");

    let v = ok_json(&run(
        db.path(),
        &["keys", "update", id, "--on-conflict", "reject", "--json"],
    ));
    assert_eq!(field(&v, "on_conflict"), "reject");

    let v = ok_json(&run(
        db.path(),
        &[
            "keys",
            "update",
            id,
            "--expires-at",
            "2031-01-01T02:00:00+02:00",
            "--json",
        ],
    ));
    assert_eq!(field(&v, "expires_at"), "2031-01-01T00:00:00Z", "UTC");

    let v = ok_json(&run(
        db.path(),
        &["keys", "update", id, "--expires-at", "never", "--json"],
    ));
    assert!(v["expires_at"].is_null(), "{v}");

    let v = ok_json(&run(
        db.path(),
        &["keys", "update", id, "--label", "", "--json"],
    ));
    assert!(v["label"].is_null(), "{v}");

    // Several at once, human output.
    let text = ok(&run(
        db.path(),
        &[
            "keys",
            "update",
            id,
            "--label",
            "both",
            "--max-sessions",
            "2",
            "--on-conflict",
            "takeover",
        ],
    ));
    assert!(text.contains("Updated") && text.contains(id), "{text}");

    let shown = ok_json(&run(db.path(), &["keys", "show", id, "--json"]));
    assert_eq!(field(&shown, "label"), "both");
    assert_eq!(shown["max_sessions"], 2);
    assert_eq!(field(&shown, "on_conflict"), "takeover");
    assert!(shown["expires_at"].is_null());

    let events = ok_json(&run(
        db.path(),
        &["events", "--type", "key_updated", "--json"],
    ));
    assert_eq!(events.as_array().unwrap().len(), 7, "{events}");
}

/// An expiry in the past is shown as `expired` in `keys list`.
#[test]
fn a_past_expiry_shows_as_expired() {
    let db = fresh_db();
    let k = create_key(db.path(), &["--label", "old"]);
    let id = field(&k, "key_id");
    ok(&run(
        db.path(),
        &["keys", "update", id, "--expires-at", "2020-01-01T00:00:00Z"],
    ));
    let text = ok(&run(db.path(), &["keys", "list"]));
    let row = text.lines().find(|l| l.contains(id)).unwrap();
    assert!(row.contains("expired"), "{row}");
}

// --------------------------------------------- suspend, resume, revoke

/// `keys suspend` sets status `suspended`; `keys resume` sets it back to
/// `active`; both accept the key id or the prefix.
#[test]
fn keys_suspend_and_resume() {
    let db = fresh_db();
    let k = create_key(db.path(), &[]);
    let id = field(&k, "key_id");
    let prefix = field(&k, "prefix");

    let v = ok_json(&run(db.path(), &["keys", "suspend", id, "--json"]));
    assert_eq!(field(&v, "status"), "suspended");
    assert_eq!(v["ended_sessions"], serde_json::json!([]));
    let shown = ok_json(&run(db.path(), &["keys", "show", id, "--json"]));
    assert_eq!(field(&shown, "status"), "suspended");

    let text = ok(&run(db.path(), &["keys", "resume", prefix]));
    assert!(text.contains("Resumed"), "{text}");
    let shown = ok_json(&run(db.path(), &["keys", "show", id, "--json"]));
    assert_eq!(field(&shown, "status"), "active");

    let text = ok(&run(db.path(), &["keys", "suspend", prefix]));
    assert!(text.contains("Suspended") && text.contains(id), "{text}");
}

/// `keys revoke` sets status `revoked` and `revoked_at`, and is final:
/// update, resume and suspend afterwards fail non-zero with one line that
/// says the key is revoked.
#[test]
fn keys_revoke_is_final() {
    let db = fresh_db();
    let k = create_key(db.path(), &["--label", "gone"]);
    let id = field(&k, "key_id");
    let prefix = field(&k, "prefix");

    let v = ok_json(&run(db.path(), &["keys", "revoke", id, "--json"]));
    assert_eq!(field(&v, "status"), "revoked");
    assert!(v["revoked_at"].is_string(), "{v}");

    for args in [
        vec!["keys", "update", id, "--label", "back"],
        vec!["keys", "update", prefix, "--max-sessions", "2"],
        vec!["keys", "resume", id],
        vec!["keys", "resume", prefix],
        vec!["keys", "suspend", id],
    ] {
        let line = fails(&run(db.path(), &args));
        assert!(line.contains("revoked"), "{args:?}: {line}");
    }
    let shown = ok_json(&run(db.path(), &["keys", "show", id, "--json"]));
    assert_eq!(field(&shown, "status"), "revoked");
    assert_eq!(field(&shown, "label"), "gone");

    let events = ok_json(&run(
        db.path(),
        &["events", "--type", "key_revoked", "--json"],
    ));
    assert_eq!(events.as_array().unwrap().len(), 1, "{events}");
}

// ------------------------------------------------------------ bad input

/// Bad input (seat limit 0 or 1001, a malformed --expires-at, an unknown
/// key reference, an update with nothing to change, an unknown event type,
/// an unparseable --since) exits non-zero with one line on stderr, prints
/// nothing on stdout, changes nothing and never panics.
#[test]
fn bad_input_is_refused_with_one_line() {
    let db = fresh_db();
    let k = create_key(db.path(), &[]);
    let id = field(&k, "key_id");
    let before = ok(&run(db.path(), &["keys", "list", "--json"]));

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["keys", "create", "--max-sessions", "0"],
            "max_sessions",
        ),
        (
            vec!["keys", "create", "--max-sessions", "1001"],
            "max_sessions",
        ),
        (
            vec!["keys", "update", id, "--max-sessions", "0"],
            "max_sessions",
        ),
        (
            vec!["keys", "update", id, "--max-sessions", "1001"],
            "max_sessions",
        ),
        (
            vec!["keys", "create", "--expires-at", "next tuesday"],
            "--expires-at",
        ),
        (
            vec!["keys", "create", "--expires-at", "2027-01-31"],
            "--expires-at",
        ),
        (
            vec!["keys", "update", id, "--expires-at", "tomorrow"],
            "--expires-at",
        ),
        (
            vec!["keys", "show", "key_doesnotexist000"],
            "key_doesnotexist000",
        ),
        (vec!["keys", "show", "ks_zzzzzzzz"], "ks_zzzzzzzz"),
        (
            vec!["keys", "update", "ks_zzzzzzzz", "--label", "x"],
            "ks_zzzzzzzz",
        ),
        (vec!["keys", "suspend", "nobody"], "nobody"),
        (vec!["keys", "resume", "nobody"], "nobody"),
        (vec!["keys", "revoke", "nobody"], "nobody"),
        (vec!["keys", "update", id], "nothing to change"),
        (vec!["events", "--type", "nope"], "key_created"),
        (vec!["events", "--since", "soon"], "--since"),
        (vec!["events", "--key", "nobody"], "nobody"),
        (vec!["events", "--limit", "0"], "--limit"),
        (vec!["sessions", "list", "--key", "nobody"], "nobody"),
    ];
    for (args, mention) in cases {
        let out = run(db.path(), &args);
        let line = fails(&out);
        assert!(line.contains(mention), "{args:?}: {line}");
        assert!(line.starts_with("keyseat: "), "{args:?}: {line}");
        assert!(stdout(&out).is_empty(), "{args:?}: {}", stdout(&out));
    }
    assert_eq!(
        ok(&run(db.path(), &["keys", "list", "--json"])),
        before,
        "bad input changed a key"
    );
}

// ------------------------------------------------------------- settings

/// An invalid setting (timeout not above the heartbeat interval, a bad
/// --listen address, an unknown key in the config file, a rate_limits
/// value other than on/off, a config file that does not exist) stops any
/// command with exit code 2 and one line, before touching the database.
#[test]
fn invalid_settings_exit_2_with_one_line() {
    let dir = TempDir::new().unwrap();
    let config = dir.path().join("keyseat.toml");
    std::fs::write(&config, "sesion_timeout_seconds = 90\n").unwrap();
    let config = config.display().to_string();
    let missing_config = dir.path().join("absent.toml").display().to_string();
    let db = dir.path().join("keyseat.db");

    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![],
            vec![
                ("KEYSEAT_SESSION_TIMEOUT_SECONDS", "10"),
                ("KEYSEAT_HEARTBEAT_INTERVAL_SECONDS", "30"),
            ],
            "session_timeout_seconds",
        ),
        (vec!["--listen", "nowhere"], vec![], "nowhere"),
        (vec![], vec![("KEYSEAT_LISTEN", "nowhere")], "nowhere"),
        (vec!["--config", &config], vec![], "sesion_timeout_seconds"),
        (
            vec![],
            vec![("KEYSEAT_CONFIG", &config)],
            "sesion_timeout_seconds",
        ),
        (
            vec![],
            vec![("KEYSEAT_RATE_LIMITS", "maybe")],
            "rate_limits",
        ),
        (vec!["--config", &missing_config], vec![], "absent.toml"),
        // A guessable admin token is refused, not only warned about.
        (
            vec![],
            vec![("KEYSEAT_ADMIN_TOKEN", "hunt2")],
            "KEYSEAT_ADMIN_TOKEN",
        ),
        (
            vec!["--admin-token", "fifteen-chars-x"],
            vec![],
            "admin_token (from --admin-token)",
        ),
    ];
    for (flags, env, mention) in &cases {
        for command in [&["migrate"][..], &["keys", "list"], &["sweep"], &["events"]] {
            let mut args = flags.clone();
            args.extend_from_slice(command);
            let out = run_env(&db, &args, env);
            let line = fails_with_2(&out);
            assert!(line.contains(mention), "{args:?} {env:?}: {line}");
            assert!(!db.exists(), "{args:?} {env:?} created the database");
        }
    }
}

/// `serve` with an invalid setting exits 2 at once with one line, without
/// creating the database or listening.
#[test]
fn serve_with_an_invalid_setting_exits_2_quickly() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("keyseat.db");
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);
    let cases: [Case; 4] = [
        (
            &["--listen", "127.0.0.1:0"],
            &[
                ("KEYSEAT_SESSION_TIMEOUT_SECONDS", "10"),
                ("KEYSEAT_HEARTBEAT_INTERVAL_SECONDS", "30"),
            ],
        ),
        (
            &["--listen", "127.0.0.1:0"],
            &[("KEYSEAT_ADMIN_TOKEN", "hunt2")],
        ),
        (&["--listen", "nowhere"], &[]),
        (
            &["--listen", "127.0.0.1:0"],
            &[("KEYSEAT_RATE_LIMITS", "maybe")],
        ),
    ];
    for (flags, env) in cases {
        let started = Instant::now();
        let child = keyseat()
            .arg("--database")
            .arg(&db)
            .args(flags)
            .arg("serve")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut child = KillOnDrop(child);
        let status = wait_for(&mut child.0, Duration::from_secs(5));
        assert!(status.is_some(), "serve {flags:?} {env:?} kept running");
        let out = child.0.wait_with_output_taken();
        assert!(started.elapsed() < Duration::from_secs(5));
        fails_with_2(&out);
        assert!(!db.exists(), "serve {flags:?} created the database");
    }
}

/// `serve` on an address that is already in use exits 2 with one line
/// naming the address.
#[test]
fn serve_on_a_busy_address_exits_2() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("keyseat.db");
    let child = keyseat()
        .arg("--database")
        .arg(&db)
        .args(["--listen", &addr, "serve"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let status = wait_for(&mut child.0, Duration::from_secs(5));
    assert!(status.is_some(), "serve on busy {addr} kept running");
    let out = child.0.wait_with_output_taken();
    let line = fails_with_2(&out);
    assert!(line.contains(&addr), "{line}");
    drop(busy);
}

/// Collects the output of a child that has already exited.
trait TakeOutput {
    fn wait_with_output_taken(&mut self) -> Output;
}

impl TakeOutput for Child {
    fn wait_with_output_taken(&mut self) -> Output {
        use std::io::Read;
        let status = self.wait().expect("wait");
        let mut out = Vec::new();
        let mut err = Vec::new();
        if let Some(mut s) = self.stdout.take() {
            s.read_to_end(&mut out).expect("read stdout");
        }
        if let Some(mut s) = self.stderr.take() {
            s.read_to_end(&mut err).expect("read stderr");
        }
        Output {
            status,
            stdout: out,
            stderr: err,
        }
    }
}

// ----------------------------------------------------- sessions, events

/// `sessions list` on a fresh database says there are no live sessions
/// (--json: an empty array); `sessions kick` of an unknown id fails
/// non-zero with one line naming it.
#[test]
fn sessions_list_and_kick_without_sessions() {
    let db = fresh_db();
    let text = ok(&run(db.path(), &["sessions", "list"]));
    assert!(text.contains("No live sessions"), "{text}");
    assert_eq!(
        ok_json(&run(db.path(), &["sessions", "list", "--json"])),
        serde_json::json!([])
    );

    let k = create_key(db.path(), &[]);
    let by_key = ok_json(&run(
        db.path(),
        &["sessions", "list", "--key", field(&k, "prefix"), "--json"],
    ));
    assert_eq!(by_key, serde_json::json!([]));

    for args in [
        &["sessions", "kick", "unknown-session-id"][..],
        &["sessions", "kick", "unknown-session-id", "--json"],
    ] {
        let line = fails(&run(db.path(), args));
        assert!(line.contains("unknown-session-id"), "{line}");
    }
}

/// `events` is empty on a fresh database, then lists `key_created` after
/// `keys create` (human and --json), filters by --type and --key, and
/// --since 1h includes it while a --since in the future does not.
#[test]
fn events_record_key_changes_and_filter() {
    let db = fresh_db();
    let text = ok(&run(db.path(), &["events"]));
    assert!(text.contains("No events"), "{text}");
    assert_eq!(
        ok_json(&run(db.path(), &["events", "--json"])),
        serde_json::json!([])
    );

    let k = create_key(db.path(), &["--label", "audited"]);
    let id = field(&k, "key_id");
    let prefix = field(&k, "prefix");
    let other = create_key(db.path(), &[]);
    ok(&run(
        db.path(),
        &["keys", "update", id, "--label", "renamed"],
    ));

    let text = ok(&run(db.path(), &["events"]));
    assert!(text.contains("key_created"), "{text}");
    assert!(text.contains(prefix), "{text}");

    let all = ok_json(&run(db.path(), &["events", "--json"]));
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 3, "{all:?}");
    assert_eq!(field(&all[0], "type"), "key_updated", "newest first");
    for e in all {
        assert!(e["at"].is_string(), "{e}");
        assert!(e.get("key_id").is_some(), "{e}");
    }

    let created = ok_json(&run(
        db.path(),
        &["events", "--type", "key_created", "--json"],
    ));
    let created = created.as_array().unwrap();
    assert_eq!(created.len(), 2);
    assert!(created.iter().all(|e| e["type"] == "key_created"));

    let mine = ok_json(&run(
        db.path(),
        &["events", "--key", prefix, "--type", "key_created", "--json"],
    ));
    assert_eq!(mine.as_array().unwrap().len(), 1);
    assert_eq!(field(&mine[0], "key_id"), id);
    let theirs = ok_json(&run(
        db.path(),
        &["events", "--key", field(&other, "key_id"), "--json"],
    ));
    assert_eq!(theirs.as_array().unwrap().len(), 1);

    let recent = ok_json(&run(db.path(), &["events", "--since", "1h", "--json"]));
    assert_eq!(recent.as_array().unwrap().len(), 3);
    let text = ok(&run(db.path(), &["events", "--since", "1h"]));
    assert!(text.contains("key_created"), "{text}");
    let future = ok_json(&run(
        db.path(),
        &["events", "--since", "2999-01-01T00:00:00Z", "--json"],
    ));
    assert_eq!(future, serde_json::json!([]));

    let limited = ok_json(&run(db.path(), &["events", "--limit", "1", "--json"]));
    assert_eq!(limited.as_array().unwrap().len(), 1);
}

/// `sweep` on a fresh database prints "Cleaned up 0 stale session(s)";
/// `sweep --json` parses and reports nothing expired.
#[test]
fn sweep_on_a_fresh_database() {
    let db = fresh_db();
    let text = ok(&run(db.path(), &["sweep"]));
    assert!(text.contains("Cleaned up 0 stale session(s)"), "{text}");
    let v = ok_json(&run(db.path(), &["sweep", "--json"]));
    assert_eq!(v["expired"], serde_json::json!([]), "{v}");
    assert_eq!(v["pruned_sessions"], 0, "{v}");
}

// -------------------------------------------------------------- secrets

/// The full access key is never shown again after `keys create`: `keys
/// list` and `keys show` (human and JSON) show only its prefix, and no
/// command puts it on stderr, even when the operator pastes the secret
/// where a key reference belongs.
#[test]
fn the_access_key_is_never_shown_again() {
    let db = fresh_db();
    let k = create_key(db.path(), &["--label", "secretive"]);
    let secret = field(&k, "access_key").to_owned();
    let id = field(&k, "key_id").to_owned();
    let prefix = field(&k, "prefix").to_owned();
    let hidden = &secret[11..];

    let commands: Vec<Vec<&str>> = vec![
        vec!["keys", "list"],
        vec!["keys", "list", "--json"],
        vec!["keys", "show", &id],
        vec!["keys", "show", &id, "--json"],
        vec!["keys", "show", &prefix],
        vec!["keys", "show", &prefix, "--json"],
        vec!["keys", "update", &id, "--max-sessions", "2", "--json"],
        vec!["keys", "suspend", &id],
        vec!["keys", "resume", &id, "--json"],
        vec!["sessions", "list"],
        vec!["events"],
        vec!["events", "--json"],
        vec!["sweep", "--json"],
        // The secret pasted where a key reference belongs.
        vec!["keys", "show", &secret],
        vec!["keys", "update", &secret, "--label", "x"],
        vec!["keys", "suspend", &secret],
        vec!["keys", "resume", &secret],
        vec!["keys", "revoke", &secret],
        vec!["events", "--key", &secret],
        vec!["sessions", "list", "--key", &secret],
    ];
    for args in &commands {
        let out = run(db.path(), args);
        let err = stderr(&out);
        assert!(!err.contains(hidden), "{args:?} leaked on stderr: {err}");
        let is_listing = args.starts_with(&["keys", "list"]) || args.starts_with(&["keys", "show"]);
        if is_listing && out.status.success() {
            let text = stdout(&out);
            assert!(!text.contains(hidden), "{args:?} leaked: {text}");
            assert!(text.contains(&prefix), "{args:?} lacks the prefix: {text}");
        }
    }
    // Pasting the secret finds the key (issue 12): the commands above acted
    // on it, the last of them a revoke, without ever printing it.
    let shown = ok_json(&run(db.path(), &["keys", "show", &id, "--json"]));
    assert_eq!(field(&shown, "status"), "revoked");
}

// Regression (fixed): `sessions kick <access key>` echoes the whole secret on stderr
// ("keyseat: no session with id ks_…<all 41 characters>"): the session-id
// path of the error (Error::AdminSessionNotFound) is not redacted the way
// key references are (keys::redact). Same for `--since`/`--expires-at`
// error messages, which quote their input verbatim.
/// An access key pasted into `sessions kick` by mistake is not echoed on
/// stderr in full.
#[test]
fn sessions_kick_does_not_echo_an_access_key() {
    let db = fresh_db();
    let k = create_key(db.path(), &[]);
    let secret = field(&k, "access_key");
    let out = run(db.path(), &["sessions", "kick", secret]);
    let line = fails(&out);
    assert!(!line.contains(&secret[11..]), "secret on stderr: {line}");
}

// Regression (fixed): labels may contain newlines (and other control characters such as
// ESC), which `keys list`/`keys show` print raw, so one key spans several
// rows and a label can forge table rows or send terminal escapes. The same
// path exists for device names sent by clients over HTTP (shown raw by
// `sessions list` and `events`).
/// A label cannot break the one-row-per-key layout of `keys list`: control
/// characters are refused or escaped.
#[test]
fn a_label_cannot_break_the_key_table() {
    let db = fresh_db();
    let out = run(
        db.path(),
        &["keys", "create", "--label", "Acme\nks_FAKEFAKE  forged row"],
    );
    if !out.status.success() {
        // Refusing the label is fine too, with one line.
        fails(&out);
        return;
    }
    let text = ok(&run(db.path(), &["keys", "list"]));
    assert_eq!(text.lines().count(), 2, "header + one row:\n{text}");
}

/// A label with a bidirectional override, an isolate, a zero-width space
/// or a byte-order mark is refused with exit 2 and one line naming
/// `label`; one already stored (by an earlier release) is shown escaped,
/// `\u{202e}`, by `keys list` and `keys show`.
#[test]
fn invisible_characters_are_refused_and_stored_ones_shown_escaped() {
    let db = fresh_db();
    for c in ['\u{202E}', '\u{2066}', '\u{200B}', '\u{FEFF}', '\u{2028}'] {
        let label = format!("Acme{c}emcA");
        let line = fails_with_2(&run(db.path(), &["keys", "create", "--label", &label]));
        assert!(line.contains("label"), "{line}");
        assert!(
            !line.contains(c),
            "the message shows the character raw: {line:?}"
        );
    }
    let k = create_key(db.path(), &["--label", "plain"]);
    let id = field(&k, "key_id");
    let line = fails_with_2(&run(
        db.path(),
        &["keys", "update", id, "--label", "a\u{202E}b"],
    ));
    assert!(line.contains("label"), "{line}");
    // As an earlier release could have stored it.
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    conn.execute(
        "UPDATE keys SET label = ?1 WHERE key_id = ?2",
        ("gpj.\u{202E}exe\u{200B}\u{FEFF}", id),
    )
    .unwrap();
    drop(conn);
    for args in [vec!["keys", "list"], vec!["keys", "show", id]] {
        let text = ok(&run(db.path(), &args));
        assert!(
            text.contains("gpj.\\u{202e}exe\\u{200b}\\u{feff}"),
            "{args:?}:\n{text}"
        );
        assert!(
            !text.contains(['\u{202E}', '\u{200B}', '\u{FEFF}']),
            "{args:?} printed them raw"
        );
    }
}

// ---------------------------------------------------------------- serve

/// `serve --listen 127.0.0.1:0` creates and migrates the database, logs
/// one line naming the real address ("listening on http://127.0.0.1:N"),
/// lets CLI commands work on the same database while it runs, and on
/// SIGTERM exits 0.
#[test]
fn serve_runs_until_sigterm_and_the_cli_works_alongside() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("served.db");
    let mut child = KillOnDrop(
        keyseat()
            .arg("--database")
            .arg(&db)
            .args(["--listen", "127.0.0.1:0", "serve"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn serve"),
    );
    let stderr_pipe = child.0.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr_pipe).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let ready = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("listening on http://") => break line,
            Ok(line) => seen.push(line),
            Err(_) => panic!("serve never said it was listening; stderr: {seen:?}"),
        }
    };
    let port = ready
        .split("listening on http://127.0.0.1:")
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let port: u16 = port
        .parse()
        .unwrap_or_else(|_| panic!("no port in: {ready}"));
    assert_ne!(port, 0, "the real port, not 0: {ready}");
    assert!(db.is_file(), "serve did not create the database");
    // The next line says the admin API and the dashboard are off, and how
    // to turn them on.
    let admin = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a line about the admin API after the listening line");
    assert!(
        admin.contains("admin API and dashboard off (no admin_token is set)")
            && admin.contains("KEYSEAT_ADMIN_TOKEN=")
            && admin.contains(&format!("http://127.0.0.1:{port}/admin")),
        "{admin}"
    );

    // The CLI works on the database while the server runs.
    let text = ok(&run(&db, &["sessions", "list"]));
    assert!(text.contains("No live sessions"), "{text}");
    let k = create_key(&db, &["--label", "while serving"]);
    let listed = ok_json(&run(&db, &["keys", "list", "--json"]));
    assert_eq!(field(&listed[0], "key_id"), field(&k, "key_id"));

    let pid = child.0.id().to_string();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(kill.success());
    let status = wait_for(&mut child.0, Duration::from_secs(15));
    let status = status.expect("serve did not stop within 15 s of SIGTERM");
    assert!(status.success(), "serve exited with {status}");
    reader.join().unwrap();
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(
        !rest.iter().chain(&seen).any(|l| l.contains("panicked")),
        "{seen:?} {rest:?}"
    );
}

/// With an admin token, the start-up log says where the admin API and the
/// dashboard are, and never prints the token.
#[test]
fn serve_says_where_the_dashboard_is_when_it_is_on() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("served.db");
    let token = "start-up-line-admin-token-0123456789";
    let mut child = KillOnDrop(
        keyseat()
            .args(["serve", "--listen", "127.0.0.1:0", "--database"])
            .arg(&db)
            .env("KEYSEAT_ADMIN_TOKEN", token)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn serve"),
    );
    let lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines {
        let line = line.expect("read the log");
        let done = line.contains("admin API");
        seen.push(line);
        if done {
            break;
        }
    }
    let admin = seen.last().cloned().unwrap_or_default();
    let port = seen
        .iter()
        .find_map(|l| l.split("listening on http://127.0.0.1:").nth(1))
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .unwrap_or_else(|| panic!("no listening line in {seen:?}"))
        .to_owned();
    assert!(
        admin.contains(&format!(
            "admin API on http://127.0.0.1:{port}/api/admin/ and dashboard on http://127.0.0.1:{port}/admin"
        )),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|l| l.contains(token)), "{seen:?}");
}

// ---------------------------------------------------------------- help

/// Only `serve` reads the server's settings, so their flags are listed in
/// `serve --help` (and the top-level help) but not in every other
/// subcommand's help, and a server flag after another subcommand is an
/// error rather than silently ignored.
#[test]
fn server_only_flags_are_listed_by_serve_alone() {
    let help = |args: &[&str]| {
        let out = keyseat().args(args).output().expect("run keyseat");
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    let server_flags = [
        "--listen",
        "--admin-token",
        "--max-connections",
        "--rate-limits",
    ];
    for args in [
        &["keys", "show", "--help"][..],
        &["keys", "list", "--help"],
        &["sessions", "list", "--help"],
        &["events", "--help"],
        &["migrate", "--help"],
    ] {
        let text = help(args);
        assert!(
            text.contains("--database") && text.contains("--config"),
            "{args:?}: {text}"
        );
        for flag in server_flags {
            assert!(!text.contains(flag), "{args:?} lists {flag}: {text}");
        }
    }
    let serve = help(&["serve", "--help"]);
    for flag in server_flags.iter().chain(&["--database", "--history-days"]) {
        assert!(serve.contains(flag), "serve --help lacks {flag}: {serve}");
    }
    assert!(help(&["sweep", "--help"]).contains("--history-days"));

    let db = fresh_db();
    let out = run(db.path(), &["keys", "list", "--listen", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unexpected argument '--listen'"),
        "{}",
        stderr(&out)
    );
}

/// `sweep --history-days N` is read like the setting: a bad value is the
/// setting's one-line error with exit 2, whether the flag comes before or
/// after `sweep`.
#[test]
fn sweep_takes_history_days_before_or_after_the_subcommand() {
    let db = fresh_db();
    for args in [
        &["sweep", "--history-days", "x"][..],
        &["--history-days", "x", "sweep"],
    ] {
        let line = fails_with_2(&run(db.path(), args));
        assert!(
            line.contains("history_days = `x` (from --history-days)"),
            "{line}"
        );
    }
    let text = ok(&run(db.path(), &["sweep", "--history-days", "7"]));
    assert!(text.contains("older than 7 days"), "{text}");
}
