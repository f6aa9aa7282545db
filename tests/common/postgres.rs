//! A real PostgreSQL for the PostgreSQL engine's tests.
//!
//! Most tests share one server, given as `KEYSEAT_TEST_POSTGRES_URL` (the
//! URL `bash .ci/postgres.sh start DIR` prints; `.ci/run` starts one and
//! sets it), and each makes its own database there with
//! [`fresh_database`], so parallel tests never see each other's rows.
//! Tests that stop the database (outages) must not stop the shared one:
//! they start a [`Cluster`] of their own.
//!
//! Without PostgreSQL the tests skip, saying why on stderr, except under
//! `CI=true` or `KEYSEAT_REQUIRE_POSTGRES=1` (set by `.ci/run`), where a
//! missing PostgreSQL is a failure, not a skip.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The shared server's URL: `postgres://USER:PASSWORD@HOST:PORT/postgres`.
pub const URL_VAR: &str = "KEYSEAT_TEST_POSTGRES_URL";
/// The path of `.ci/postgres.sh` (default: the one in this checkout).
pub const SCRIPT_VAR: &str = "KEYSEAT_TEST_PG_SCRIPT";

/// Under `CI=true` or `KEYSEAT_REQUIRE_POSTGRES=1` (which `.ci/run` sets)
/// a missing PostgreSQL fails the test.
fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
        || std::env::var("KEYSEAT_REQUIRE_POSTGRES").as_deref() == Ok("1")
}

/// Skips (None, with the reason on stderr), or panics under `CI=true`.
fn skip<T>(why: &str) -> Option<T> {
    if in_ci() {
        panic!("CI=true, so PostgreSQL is required: {why}");
    }
    eprintln!("skipping a PostgreSQL test: {why}");
    None
}

/// The shared server's URL from `KEYSEAT_TEST_POSTGRES_URL`; None (the
/// test skips) when it is unset, a panic when it is unset under `CI=true`.
pub fn server_url() -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().to_owned()),
        _ => skip(&format!(
            "{URL_VAR} is not set; start a throwaway server with \
             `bash .ci/postgres.sh start /tmp/ks-pg` and set {URL_VAR} to the URL it prints \
             (`bash .ci/postgres.sh destroy /tmp/ks-pg` removes it)"
        )),
    }
}

/// A new, empty database on the shared server; returns its URL. None when
/// there is no server (see [`server_url`]).
pub async fn fresh_database() -> Option<String> {
    let url = server_url()?;
    Some(create_database(&url).await)
}

/// Creates `ks_test_<16 random hex digits>` on the server at `url` and
/// returns the URL of that database. The databases are left in place: the
/// server is throwaway (`.ci/postgres.sh destroy` removes them all).
pub async fn create_database(url: &str) -> String {
    let name = format!("ks_test_{:016x}", rand::random::<u64>());
    let client = connect(url).await;
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "CREATE DATABASE {name} on {}: {}",
                redacted(url),
                describe(&e)
            )
        });
    with_database(url, &name)
}

/// A client of the database at `url` (no TLS), its connection driven by a
/// spawned task; panics, naming the URL without its password, if the
/// connection fails.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    try_connect(url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {}: {}", redacted(url), describe(&e)))
}

/// [`connect`] that returns the error (to check that a stopped database
/// refuses connections).
pub async fn try_connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        // Ends when the client is dropped, or with the server; the
        // client's own calls report any error.
        let _ = connection.await;
    });
    Ok(client)
}

/// `url` with its database name replaced by `name`, keeping the query
/// string (minus any `dbname=`, which would override the path).
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.find('?') {
        Some(i) => (&url[..i], &url[i + 1..]),
        None => (url, ""),
    };
    let authority = base
        .find("://")
        .map(|i| i + 3)
        .unwrap_or_else(|| panic!("not a postgres:// URL: {}", redacted(url)));
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    let params: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("dbname="))
        .collect();
    if params.is_empty() {
        format!("{}/{name}", &base[..path])
    } else {
        format!("{}/{name}?{}", &base[..path], params.join("&"))
    }
}

/// `url` with the password (if any) replaced by `***`, for messages.
pub fn redacted(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let Some(at) = url[start..].find('@').map(|i| start + i) else {
        return url.to_owned();
    };
    match url[start..at].find(':') {
        Some(colon) => format!("{}:***{}", &url[..start + colon], &url[at..]),
        None => url.to_owned(),
    }
}

/// An error with its causes (tokio_postgres's own message is often just
/// "db error" or "error connecting to server").
pub fn describe(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `.ci/postgres.sh`: `KEYSEAT_TEST_PG_SCRIPT`, else this checkout's.
pub fn script_path() -> PathBuf {
    match std::env::var_os(SCRIPT_VAR) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/postgres.sh"),
    }
}

/// Whether the script will find initdb and pg_ctl (the same places it
/// looks: `KEYSEAT_PG_BIN`, Debian's /usr/lib/postgresql/*/bin, PATH).
pub fn binaries_found() -> bool {
    if let Some(bin) = std::env::var_os("KEYSEAT_PG_BIN") {
        return Path::new(&bin).join("initdb").exists();
    }
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .flatten()
                .any(|e| e.path().join("bin/initdb").exists())
        })
        .unwrap_or(false);
    debian
        || std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("initdb").exists()))
}

/// A PostgreSQL cluster of one test's own, for tests that stop and
/// restart the database; destroyed on drop. Its methods block (about a
/// second to start), so a test that also runs a server in-process should
/// use a multi-threaded runtime.
pub struct Cluster {
    dir: tempfile::TempDir,
    url: String,
    script: PathBuf,
}

impl Cluster {
    /// A new cluster, started; None (the test skips) without PostgreSQL
    /// binaries, a panic then under `CI=true` and whenever the script
    /// fails.
    pub fn start() -> Option<Cluster> {
        if !binaries_found() {
            return skip(
                "no PostgreSQL binaries (initdb, pg_ctl) in KEYSEAT_PG_BIN, \
                 /usr/lib/postgresql/*/bin or PATH (Debian: apt-get install postgresql)",
            );
        }
        let script = script_path();
        // Under /tmp, not $TMPDIR: the unix socket's path must be short, and
        // as root the cluster runs as an unprivileged user that must be able
        // to reach the directory.
        let dir = tempfile::Builder::new()
            .prefix("ks-pg-")
            .tempdir_in("/tmp")
            .expect("temp dir for a PostgreSQL cluster");
        let url = run_script(&script, "start", dir.path(), None);
        assert!(
            url.starts_with("postgres://") && !url.contains('\n'),
            "{} start printed {:?}, not one URL",
            script.display(),
            redacted(&url)
        );
        Some(Cluster { dir, url, script })
    }

    /// `postgres://keyseat:PASSWORD@127.0.0.1:PORT/postgres`, the same
    /// across [`Cluster::stop_immediate`] and [`Cluster::start_again`].
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server at once, as a crash would (`pg_ctl stop -m
    /// immediate`): open connections break, new ones are refused.
    pub fn stop_immediate(&self) {
        run_script(&self.script, "stop", self.dir.path(), Some("immediate"));
    }

    /// Stops the server cleanly (`pg_ctl stop -m fast`): sessions are
    /// ended, then it shuts down.
    pub fn stop_fast(&self) {
        run_script(&self.script, "stop", self.dir.path(), Some("fast"));
    }

    /// Starts the stopped server again, on the same port and URL.
    pub fn start_again(&self) {
        let url = run_script(&self.script, "start", self.dir.path(), None);
        assert!(
            url == self.url,
            "the restarted cluster has another URL: {} (was {})",
            redacted(&url),
            redacted(&self.url)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let out = Command::new("bash")
            .arg(&self.script)
            .arg("destroy")
            .arg(self.dir.path())
            .output();
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "{} destroy {}: {}\n{}",
                self.script.display(),
                self.dir.path().display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("running {}: {e}", self.script.display()),
        }
    }
}

/// Runs `bash SCRIPT COMMAND DIR [ARG]`; its stdout, trimmed. Panics with
/// its stderr if it fails.
fn run_script(script: &Path, command: &str, dir: &Path, arg: Option<&str>) -> String {
    let mut cmd = Command::new("bash");
    cmd.arg(script).arg(command).arg(dir);
    if let Some(arg) = arg {
        cmd.arg(arg);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running bash {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} {command} {} failed ({}):\n{}",
        script.display(),
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
