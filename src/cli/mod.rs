//! The command line: `serve`, `migrate`, `sweep`, `keys …`, `sessions …`,
//! `events`. While a server holds the database, `sweep`, `keys`,
//! `sessions`, `events` and `report` run on that server's live store
//! through its control socket ([`crate::control`]), so they see live
//! heartbeats and make the admin API's choices; with no server they work
//! directly on the database file. They print a human table, or JSON with
//! `--json`. `client`, `check` and `health` talk to a server over HTTP;
//! the hidden `generate` writes the completions and man pages the package
//! installs.
//!
//! Exit codes: 0 success, 1 the command failed (one line on stderr), 2 bad
//! usage or an invalid setting.

#[cfg(feature = "client")]
pub mod check;
#[cfg(feature = "client")]
pub mod client;
/// `println!` that exits quietly when stdout is closed (`keyseat keys list
/// | head -1`), instead of panicking on the broken pipe.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}
#[cfg(feature = "client")]
pub(crate) use outln;

mod generate;
#[cfg(feature = "client")]
mod health;
mod keys;
mod report;
mod sessions;
mod signing;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::clock::{Clock, SystemClock};
use crate::config::Database;
use crate::config::{self, LogFormat, Overrides, Settings};
use crate::error::{Error, Result};
use crate::server::{shutdown_signal, Server};
use crate::store::{OpenMode, PostgresStore, SqliteStore, Storage};

/// keyseat: a self-hosted license seat server. One device at a time (or N)
/// per access key.
#[derive(Debug, Parser)]
#[command(name = "keyseat", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    settings: SettingFlags,
    #[command(flatten)]
    server: ServerFlags,
    #[command(subcommand)]
    command: Command,
}

/// Settings every command reads; each overrides the config file and
/// `KEYSEAT_*`. They go before or after any subcommand.
#[derive(Debug, Args)]
struct SettingFlags {
    /// Config file (TOML); see config.example.toml [env: KEYSEAT_CONFIG]
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// SQLite database file, or a postgres:// URL (several servers on one
    /// database) [default: keyseat.db] [env: KEYSEAT_DATABASE]
    #[arg(long, global = true, value_name = "PATH|URL")]
    database: Option<String>,
    /// Log filter such as info or debug [default: info] [env: KEYSEAT_LOG]
    #[arg(long, global = true, value_name = "FILTER")]
    log: Option<String>,
    /// text | json (one JSON object a line) [default: text] [env: KEYSEAT_LOG_FORMAT]
    #[arg(long, global = true, value_name = "TEXT|JSON")]
    log_format: Option<String>,
}

/// The server's settings: only `serve` reads them (and `sweep` its
/// `--history-days`), so they are not global and do not clutter the help
/// of every other subcommand. They go before `serve` (`keyseat
/// --listen ADDR serve`, as the README has long shown) or after it; after
/// wins.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Server settings")]
struct ServerFlags {
    /// Address to listen on [default: 127.0.0.1:8080] [env: KEYSEAT_LISTEN]
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Admin API bearer token; unset turns the admin API off [env: KEYSEAT_ADMIN_TOKEN]
    #[arg(long, value_name = "TOKEN")]
    admin_token: Option<String>,
    /// [default: 30] [env: KEYSEAT_HEARTBEAT_INTERVAL_SECONDS]
    #[arg(long, value_name = "SECS")]
    heartbeat_interval_seconds: Option<String>,
    /// [default: 60] [env: KEYSEAT_SESSION_TIMEOUT_SECONDS]
    #[arg(long, value_name = "SECS")]
    session_timeout_seconds: Option<String>,
    /// [default: 10] [env: KEYSEAT_SWEEP_INTERVAL_SECONDS]
    #[arg(long, value_name = "SECS")]
    sweep_interval_seconds: Option<String>,
    /// Days of history kept [default: 30] [env: KEYSEAT_HISTORY_DAYS]
    #[arg(long, value_name = "DAYS")]
    history_days: Option<String>,
    /// on | off [default: on] [env: KEYSEAT_RATE_LIMITS]
    #[arg(long, value_name = "ON|OFF")]
    rate_limits: Option<String>,
    /// [default: 30] [env: KEYSEAT_FAILED_KEY_LOOKUPS_PER_MINUTE]
    #[arg(long, value_name = "N")]
    failed_key_lookups_per_minute: Option<String>,
    /// [default: 10] [env: KEYSEAT_ADMIN_AUTH_FAILURES_PER_MINUTE]
    #[arg(long, value_name = "N")]
    admin_auth_failures_per_minute: Option<String>,
    /// Staleness of heartbeat times on disk [default: 300] [env: KEYSEAT_HEARTBEAT_PERSIST_SECONDS]
    #[arg(long, value_name = "SECS")]
    heartbeat_persist_seconds: Option<String>,
    /// full | normal [default: full] [env: KEYSEAT_SYNCHRONOUS]
    #[arg(long, value_name = "FULL|NORMAL")]
    synchronous: Option<String>,
    /// Starts per access key per minute [default: 20] [env: KEYSEAT_STARTS_PER_KEY_PER_MINUTE]
    #[arg(long, value_name = "N")]
    starts_per_key_per_minute: Option<String>,
    /// Proxies whose X-Forwarded-For is believed, e.g. 10.0.0.0/8,::1 [default: none] [env: KEYSEAT_TRUSTED_PROXIES]
    #[arg(long, value_name = "LIST")]
    trusted_proxies: Option<String>,
    /// Connections served at once [default: 10000] [env: KEYSEAT_MAX_CONNECTIONS]
    #[arg(long, value_name = "N")]
    max_connections: Option<String>,
    /// Connections from one address at once [default: 256, at most a quarter of max_connections] [env: KEYSEAT_MAX_CONNECTIONS_PER_ADDRESS]
    #[arg(long, value_name = "N")]
    max_connections_per_address: Option<String>,
    /// Database writes in flight before shedding with 503 [default: 1024] [env: KEYSEAT_MAX_PENDING_WRITES]
    #[arg(long, value_name = "N")]
    max_pending_writes: Option<String>,
    /// Time a client has to send headers or a body [default: 10] [env: KEYSEAT_CLIENT_TIMEOUT_SECONDS]
    #[arg(long, value_name = "SECS")]
    client_timeout_seconds: Option<String>,
    /// on | off | ADDR (own listener) [default: on] [env: KEYSEAT_METRICS]
    #[arg(long, value_name = "ON|OFF|ADDR")]
    metrics: Option<String>,
}

impl SettingFlags {
    fn overrides(&self, server: &[&ServerFlags]) -> Overrides {
        let mut o = Overrides {
            config: self.config.clone(),
            ..Default::default()
        };
        for (name, value) in [
            ("database", &self.database),
            ("log", &self.log),
            ("log_format", &self.log_format),
        ] {
            if let Some(v) = value {
                o.values.insert(name, v.clone());
            }
        }
        for flags in server {
            for (name, value) in flags.pairs() {
                if let Some(v) = value {
                    o.values.insert(name, v.clone());
                }
            }
        }
        o
    }
}

impl ServerFlags {
    /// Each flag with the setting it overrides.
    fn pairs(&self) -> [(&'static str, &Option<String>); 18] {
        [
            ("listen", &self.listen),
            ("admin_token", &self.admin_token),
            (
                "heartbeat_interval_seconds",
                &self.heartbeat_interval_seconds,
            ),
            ("session_timeout_seconds", &self.session_timeout_seconds),
            ("sweep_interval_seconds", &self.sweep_interval_seconds),
            ("history_days", &self.history_days),
            ("rate_limits", &self.rate_limits),
            (
                "failed_key_lookups_per_minute",
                &self.failed_key_lookups_per_minute,
            ),
            (
                "admin_auth_failures_per_minute",
                &self.admin_auth_failures_per_minute,
            ),
            ("heartbeat_persist_seconds", &self.heartbeat_persist_seconds),
            ("synchronous", &self.synchronous),
            ("starts_per_key_per_minute", &self.starts_per_key_per_minute),
            ("trusted_proxies", &self.trusted_proxies),
            ("max_connections", &self.max_connections),
            (
                "max_connections_per_address",
                &self.max_connections_per_address,
            ),
            ("max_pending_writes", &self.max_pending_writes),
            ("client_timeout_seconds", &self.client_timeout_seconds),
            ("metrics", &self.metrics),
        ]
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (creates and migrates the database if needed).
    Serve(Box<ServerFlags>),
    /// Create the database if needed and apply pending migrations.
    Migrate {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One sweep pass: record expired sessions, prune old history.
    Sweep {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Days of history kept [default: 30] [env: KEYSEAT_HISTORY_DAYS]
        #[arg(long, value_name = "DAYS")]
        history_days: Option<String>,
    },
    /// Manage access keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Live sessions.
    #[command(subcommand)]
    Sessions(sessions::SessionsCommand),
    /// The audit log, newest first.
    Events(sessions::EventsArgs),
    /// Reports over the history (e.g. `report sharing`).
    #[command(subcommand)]
    Report(report::ReportCommand),
    /// The keys that sign answers: `show` (the public key an app pins),
    /// `rotate`.
    #[command(subcommand)]
    SigningKey(signing::SigningKeyCommand),
    /// Print the HTTP API's OpenAPI 3.1 document (as served at
    /// /openapi.json; `keyseat openapi > docs/openapi.json` refreshes the
    /// checked-in copy).
    Openapi,
    /// Hold a seat like an app would, printing each event (the reference
    /// client). Exit codes: 0 ended by user, 3 superseded, 4 expired,
    /// 5 revoked, 6 key refused, 7 unreachable, 8 seats full, 9 answers
    /// failed the signature check (--public-key), 10 borrowing refused
    /// (--borrow), 11 the server's TLS certificate was refused (see
    /// --ca-file), 1 other.
    #[cfg(feature = "client")]
    Client(client::ClientArgs),
    /// Verify a live deployment: health, start, heartbeat, status,
    /// one-device-at-a-time, end (and expiry). Exit 0 only if all pass.
    #[cfg(feature = "client")]
    Check(check::CheckArgs),
    /// Ask a server's /health once: exit 0 when it serves and its database
    /// answers, 1 (with one line on stderr) otherwise. For service
    /// managers and container health checks.
    #[cfg(feature = "client")]
    Health(health::HealthArgs),
    /// Write shell completions and man pages from this definition (the
    /// package build runs it).
    #[command(hide = true)]
    Generate {
        /// Directory to write `completions/` and `man/` into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The document is built from the code alone: no settings, no database.
    if let Command::Openapi = cli.command {
        outln!("{}", crate::http::openapi::pretty().trim_end());
        return ExitCode::SUCCESS;
    }
    if let Command::Generate { out } = &cli.command {
        return match generate::run(out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("keyseat: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // The device-side commands talk to a server; they need no settings.
    #[cfg(feature = "client")]
    match cli.command {
        Command::Client(args) => return client::run_client(args),
        Command::Check(args) => return check::run_check(args),
        Command::Health(args) => return health::run_health(args),
        _ => {}
    }
    // Flags after the subcommand win over the same flags before it.
    let sweep_flags;
    let after = match &cli.command {
        Command::Serve(flags) => Some(&**flags),
        Command::Sweep { history_days, .. } => {
            sweep_flags = ServerFlags {
                history_days: history_days.clone(),
                ..Default::default()
            };
            Some(&sweep_flags)
        }
        _ => None,
    };
    let mut server = vec![&cli.server];
    server.extend(after);
    let (settings, warnings) = match config::load(&cli.settings.overrides(&server)) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("keyseat: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let serving = matches!(cli.command, Command::Serve(_));
    init_tracing(&settings, serving);
    for w in warnings {
        tracing::warn!("{w}");
    }
    let result = match cli.command {
        Command::Serve(_) => serve(settings),
        Command::Migrate { json } => migrate(&settings, json),
        Command::Sweep { json, .. } => sweep(&settings, json),
        Command::Keys(cmd) => with_store(&settings, |s, now| keys::run(cmd, s, now)),
        Command::Sessions(cmd) => with_store(&settings, |s, now| sessions::run(cmd, s, now)),
        Command::Events(args) => with_store(&settings, |s, now| sessions::events(args, s, now)),
        Command::Report(cmd) => with_store(&settings, |s, now| report::run(cmd, s, now)),
        Command::SigningKey(cmd) => {
            with_store(&settings, |s, now| signing::run(cmd, s, now, &settings))
        }
        Command::Openapi | Command::Generate { .. } => unreachable!("handled above"),
        #[cfg(feature = "client")]
        Command::Client(_) | Command::Check(_) | Command::Health(_) => {
            unreachable!("handled above")
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyseat: {}", one_line(&e.to_string()));
            ExitCode::from(match e {
                Error::Config(_) | Error::InvalidRequest(_) => 2,
                _ => 1,
            })
        }
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Logs go to stderr, so `--json` output on stdout stays parseable. The
/// server logs at the configured level; other commands only warn unless a
/// level was asked for.
fn init_tracing(settings: &Settings, serving: bool) {
    let filter = if serving || settings.log != Settings::default().log {
        settings.log.clone()
    } else {
        "warn".into()
    };
    // refinery narrates every start-up at info; its news is in our own line.
    let filter = if filter.contains("refinery") {
        filter
    } else {
        format!("{filter},refinery=warn,refinery_core=warn")
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match settings.log_format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        // The event's fields at the top level beside `message`, as the
        // text line puts them after it: `{"timestamp":…,"level":"INFO",
        // "message":"session started","key":"ks_ab12",…}`.
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

fn serve(settings: Settings) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .map_err(|e| Error::Config(listen_failure(settings.listen, &e)))?;
        let server = Server::start(settings, listener, Arc::new(SystemClock)).await?;
        server.run_until(shutdown_signal()).await
    })
}

/// Why `serve` cannot listen, with the likely cause when the address is
/// taken.
fn listen_failure(addr: std::net::SocketAddr, e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        format!(
            "cannot listen on {addr}: the address is in use; is another keyseat running? \
             use --listen to pick another address"
        )
    } else {
        format!("cannot listen on {addr}: {e}")
    }
}

fn migrate(settings: &Settings, json: bool) -> Result<()> {
    let path = match &settings.database {
        Database::Sqlite(path) => {
            let store = SqliteStore::open(path, OpenMode::CreateAndMigrate)?;
            store.path().display().to_string()
        }
        Database::Postgres(url) => {
            PostgresStore::open(
                url,
                OpenMode::CreateAndMigrate,
                settings.postgres_options(false),
            )?;
            url.to_string()
        }
    };
    if json {
        outln!(
            "{}",
            serde_json::json!({ "database": path, "migrated": true })
        );
    } else {
        outln!("database {path} is up to date");
    }
    Ok(())
}

fn sweep(settings: &Settings, json: bool) -> Result<()> {
    let store = open_store(settings)?;
    let now = SystemClock.now();
    let report = store.sweep(now, settings.history_days, false)?;
    if json {
        outln!(
            "{}",
            serde_json::json!({
                "expired": report.expired.iter().map(|s| serde_json::json!({
                    "key_prefix": s.key_prefix, "session_id": s.session_id,
                    "device_name": s.device_name, "expired_at": s.expires_at,
                })).collect::<Vec<_>>(),
                "revoked": report.revoked.iter().map(|s| serde_json::json!({
                    "key_prefix": s.key_prefix, "session_id": s.session_id,
                    "device_name": s.device_name,
                })).collect::<Vec<_>>(),
                "pruned_sessions": report.pruned_sessions,
                "pruned_events": report.pruned_events,
            })
        );
    } else {
        outln!("Cleaned up {} stale session(s)", report.expired.len());
        for s in &report.expired {
            outln!(
                "  - Key: {}..., Session: {}, Device: {}",
                s.key_prefix,
                s.session_id,
                table::printable(s.device_name.as_deref().unwrap_or("-"))
            );
        }
        for s in &report.revoked {
            outln!(
                "Ended session {} of expired key {}...",
                s.session_id,
                s.key_prefix
            );
        }
        outln!(
            "Pruned {} session(s) and {} event(s) older than {} days",
            report.pruned_sessions,
            report.pruned_events,
            settings.history_days
        );
    }
    Ok(())
}

fn with_store(
    settings: &Settings,
    f: impl FnOnce(&dyn Storage, crate::clock::Timestamp) -> Result<()>,
) -> Result<()> {
    let store = open_store(settings)?;
    f(store.as_ref(), SystemClock.now())
}

/// The store a command runs on: the running server's, when one answers on
/// the database's control socket (the file alone holds stale heartbeat
/// times, and the server's writer holds its lock); else the file itself.
///
/// A server that holds the file but does not answer on its socket (it is
/// starting or stopping, or the socket is not this user's) is waited for
/// briefly, then refused: the file alone would give stale answers. Only
/// where the socket cannot exist (a path too long for one) does the
/// command fall back to the file, with a warning.
fn open_store(settings: &Settings) -> Result<Box<dyn Storage>> {
    let db = match &settings.database {
        Database::Sqlite(path) => path,
        // Every server works on the database itself; so does the CLI.
        Database::Postgres(url) => {
            return Ok(Box::new(PostgresStore::open(
                url,
                OpenMode::Existing,
                settings.postgres_options(false),
            )?))
        }
    };
    #[cfg(unix)]
    {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            if let Some(remote) = crate::control::RemoteStore::connect(db) {
                return Ok(Box::new(remote));
            }
            let Some(holder) = crate::instance_lock::holder(db) else {
                break;
            };
            let socket = crate::control::socket_path(db);
            if socket.as_os_str().len() >= 100 {
                tracing::warn!(
                    "the server ({holder}) cannot offer a control socket at {} (the path is too \
                     long for one); working on the database file directly, where heartbeat \
                     times may be stale",
                    socket.display()
                );
                break;
            }
            if std::time::Instant::now() >= deadline {
                return Err(Error::Unavailable(format!(
                    "a keyseat server ({holder}) is serving {} but does not answer on {}; retry \
                     when it has started, or run this command as the user the server runs as",
                    db.display(),
                    socket.display()
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    Ok(Box::new(SqliteStore::open(db, OpenMode::Existing)?))
}
