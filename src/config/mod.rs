//! Settings: built-in defaults, then the TOML config file, then `KEYSEAT_*`
//! environment variables, then command-line flags, validated once after
//! merging. Every problem is reported as one line naming the setting and
//! where it came from; the CLI exits 2 on it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

pub use crate::proxy::TrustedProxies;

mod database;
mod file;

pub use database::{Database, PostgresUrl};

use file::apply_file;

use crate::rules::Timing;
use crate::store::Durability;

/// A secret whose `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself, for comparing or sending.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The merged, validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// The SQLite file or the PostgreSQL URL.
    pub database: Database,
    /// Bearer token for `/api/admin/*`; `None` turns the admin API off.
    pub admin_token: Option<Secret>,
    /// How often clients are told to heartbeat.
    pub heartbeat_interval_seconds: u64,
    /// How long a session lives after its last heartbeat.
    pub session_timeout_seconds: u64,
    /// How often the sweep records expired sessions.
    pub sweep_interval_seconds: u64,
    /// Days of ended sessions and events kept.
    pub history_days: u32,
    /// Whether rate limits apply.
    pub rate_limits: bool,
    /// Failed key lookups allowed per client address per minute.
    pub failed_key_lookups_per_minute: u32,
    /// Failed admin authentications allowed per client address per minute.
    pub admin_auth_failures_per_minute: u32,
    /// A tracing filter, e.g. `info` or `keyseat=debug`.
    pub log: String,
    /// How each log line is written: text for people, JSON for shippers.
    pub log_format: LogFormat,
    /// How stale heartbeat times on disk may be (the CLI's view).
    pub heartbeat_persist_seconds: u64,
    /// Commit durability: FULL (default) or NORMAL.
    pub durability: Durability,
    /// Starts allowed per access key per minute (a token bucket), so a
    /// takeover ping-pong between two devices cannot saturate the server.
    pub starts_per_key_per_minute: u32,
    /// Reverse proxies whose `X-Forwarded-For` names the real client.
    pub trusted_proxies: TrustedProxies,
    /// Open connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Open connections served at once from one client address (at most a
    /// quarter of `max_connections`), so one address cannot fill the server.
    pub max_connections_per_address: usize,
    /// Requests that write to the database (starts, ends, admin changes)
    /// allowed in flight; more are shed with 503 `overloaded` at once
    /// instead of queueing until clients time out.
    pub max_pending_writes: usize,
    /// How long a client may take to send its request headers or body.
    pub client_timeout_seconds: u64,
    /// Where `/metrics` is served.
    pub metrics: MetricsMode,
    /// A PEM file with the Ed25519 key that signs answers, instead of the
    /// keys kept in the database (docs/api.md, "Signed answers").
    pub signing_key_file: Option<PathBuf>,
    /// How long a rotated-out signing key stays listed.
    pub signing_key_overlap_days: u32,
}

/// How log lines are written (`log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One readable line per event (the default).
    #[default]
    Text,
    /// One JSON object per line, with the same fields as the text line,
    /// for log shippers.
    Json,
}

/// Where the Prometheus metrics endpoint is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsMode {
    /// Not served.
    Off,
    /// `/metrics` on the main listener.
    Main,
    /// `/metrics` on its own listener (e.g. a private interface).
    Separate(SocketAddr),
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database: Database::default(),
            admin_token: None,
            heartbeat_interval_seconds: 30,
            session_timeout_seconds: 60,
            sweep_interval_seconds: 10,
            history_days: 30,
            rate_limits: true,
            failed_key_lookups_per_minute: 30,
            admin_auth_failures_per_minute: 10,
            log: "info".into(),
            log_format: LogFormat::Text,
            heartbeat_persist_seconds: 300,
            durability: Durability::Full,
            starts_per_key_per_minute: 20,
            trusted_proxies: TrustedProxies::default(),
            max_connections: 10_000,
            max_connections_per_address: 256,
            max_pending_writes: 1_024,
            client_timeout_seconds: 10,
            metrics: MetricsMode::Main,
            signing_key_file: None,
            signing_key_overlap_days: 30,
        }
    }
}

impl Settings {
    /// The durations the session rules need.
    pub fn timing(&self) -> Timing {
        Timing {
            heartbeat_interval_secs: self.heartbeat_interval_seconds,
            session_timeout_secs: self.session_timeout_seconds,
        }
    }

    /// How the PostgreSQL engine runs; `caller_clock` when the server's
    /// clock is a test's, which then decides leases.
    pub fn postgres_options(&self, caller_clock: bool) -> crate::store::PostgresOptions {
        crate::store::PostgresOptions {
            timing: self.timing(),
            time: if caller_clock {
                crate::store::TimeSource::Caller
            } else {
                crate::store::TimeSource::Database
            },
            ..Default::default()
        }
    }

    /// What the server's live store is opened with.
    pub fn live_options(&self) -> crate::store::LiveOptions {
        crate::store::LiveOptions {
            timing: self.timing(),
            persist_secs: self.heartbeat_persist_seconds,
            durability: self.durability,
        }
    }
}

/// A configuration problem, as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Values given on the command line; `None` leaves the setting alone.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config`
    pub config: Option<PathBuf>,
    /// Every other flag, by setting name (`listen`, `database`, …), as text.
    pub values: BTreeMap<&'static str, String>,
}

/// The shortest admin token accepted (characters). 16 random visible
/// characters are far beyond online guessing; fewer are not.
pub const MIN_ADMIN_TOKEN: usize = 16;

/// Every setting name, in the order of the example file. Each has an
/// environment variable `KEYSEAT_<NAME>` and a flag `--<name>` (dashes).
pub const SETTING_NAMES: [&str; 23] = [
    "listen",
    "database",
    "admin_token",
    "heartbeat_interval_seconds",
    "session_timeout_seconds",
    "sweep_interval_seconds",
    "history_days",
    "rate_limits",
    "failed_key_lookups_per_minute",
    "admin_auth_failures_per_minute",
    "log",
    "log_format",
    "heartbeat_persist_seconds",
    "synchronous",
    "starts_per_key_per_minute",
    "trusted_proxies",
    "max_connections",
    "max_connections_per_address",
    "max_pending_writes",
    "client_timeout_seconds",
    "metrics",
    "signing_key_file",
    "signing_key_overlap_days",
];

/// Loads settings from the real environment.
pub fn load(overrides: &Overrides) -> Result<(Settings, Vec<String>), ConfigError> {
    load_with_env(overrides, |name| std::env::var(name).ok(), env_names())
}

fn env_names() -> Vec<String> {
    std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.starts_with("KEYSEAT_"))
        .collect()
}

/// Loads settings with an injected environment (for tests). Returns the
/// settings and warnings worth logging (unknown `KEYSEAT_*` variables).
pub fn load_with_env(
    overrides: &Overrides,
    env: impl Fn(&str) -> Option<String>,
    env_present: Vec<String>,
) -> Result<(Settings, Vec<String>), ConfigError> {
    let mut warnings = Vec::new();
    let mut s = Settings::default();

    let config_path = overrides.config.clone().or_else(|| {
        env("KEYSEAT_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    if let Some(path) = &config_path {
        apply_file(&mut s, path)?;
    }

    for name in SETTING_NAMES {
        let var = env_var_name(name);
        if let Some(value) = env(&var) {
            apply_text(&mut s, name, &value, &format!("environment variable {var}"))?;
        }
    }
    for var in env_present {
        // KEYSEAT_KEY is the device-side commands' access key.
        let known = var == "KEYSEAT_CONFIG"
            || var == "KEYSEAT_KEY"
            || SETTING_NAMES.iter().any(|n| env_var_name(n) == var);
        if !known {
            warnings.push(format!("ignoring unknown environment variable {var}"));
        }
    }

    for (name, value) in &overrides.values {
        apply_text(
            &mut s,
            name,
            value,
            &format!("--{}", name.replace('_', "-")),
        )?;
    }

    validate(&s)?;
    Ok((s, warnings))
}

/// `KEYSEAT_` + the setting name in capitals.
pub fn env_var_name(setting: &str) -> String {
    format!("KEYSEAT_{}", setting.to_ascii_uppercase())
}

fn number<T: std::str::FromStr>(name: &str, value: &str, from: &str) -> Result<T, ConfigError> {
    value.trim().parse().map_err(|_| {
        ConfigError(format!(
            "{name} = `{value}` (from {from}) is not a whole number"
        ))
    })
}

/// Sets one setting from text, whatever its source.
fn apply_text(s: &mut Settings, name: &str, value: &str, from: &str) -> Result<(), ConfigError> {
    match name {
        "listen" => {
            s.listen = value.trim().parse().map_err(|_| {
                ConfigError(format!(
                    "listen = `{value}` (from {from}) is not an address like 127.0.0.1:8080"
                ))
            })?
        }
        "database" => {
            if value.trim().is_empty() {
                return Err(ConfigError(format!("database (from {from}) is empty")));
            }
            s.database = Database::parse(value)
        }
        "admin_token" => {
            s.admin_token = if value.is_empty() {
                None
            } else if !value.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ConfigError(format!(
                    "admin_token (from {from}) may contain only visible ASCII characters, no spaces"
                )));
            } else if value.len() < MIN_ADMIN_TOKEN {
                // A short token is guessed online (the failure limit only
                // slows that down), so it is refused, not merely warned
                // about: a warning in a log nobody reads protects nothing.
                return Err(ConfigError(format!(
                    "admin_token (from {from}) is {} characters; it must be at least \
                     {MIN_ADMIN_TOKEN} (use a long random one, e.g. `openssl rand -hex 32`)",
                    value.len()
                )));
            } else {
                Some(Secret::new(value))
            }
        }
        "heartbeat_interval_seconds" => s.heartbeat_interval_seconds = number(name, value, from)?,
        "session_timeout_seconds" => s.session_timeout_seconds = number(name, value, from)?,
        "sweep_interval_seconds" => s.sweep_interval_seconds = number(name, value, from)?,
        "history_days" => s.history_days = number(name, value, from)?,
        "failed_key_lookups_per_minute" => {
            s.failed_key_lookups_per_minute = number(name, value, from)?
        }
        "admin_auth_failures_per_minute" => {
            s.admin_auth_failures_per_minute = number(name, value, from)?
        }
        "rate_limits" => {
            s.rate_limits = match value.trim().to_ascii_lowercase().as_str() {
                "on" | "true" => true,
                "off" | "false" => false,
                _ => {
                    return Err(ConfigError(format!(
                        "rate_limits = `{value}` (from {from}) must be `on` or `off`"
                    )))
                }
            }
        }
        "log" => {
            tracing_subscriber::EnvFilter::try_new(value).map_err(|e| {
                ConfigError(format!(
                    "log = `{value}` (from {from}) is not a valid log filter: {e}"
                ))
            })?;
            s.log = value.to_owned()
        }
        "log_format" => {
            s.log_format = match value.trim().to_ascii_lowercase().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => {
                    return Err(ConfigError(format!(
                        "log_format = `{value}` (from {from}) must be `text` or `json`"
                    )))
                }
            }
        }
        "heartbeat_persist_seconds" => s.heartbeat_persist_seconds = number(name, value, from)?,
        "synchronous" => {
            s.durability = match value.trim().to_ascii_lowercase().as_str() {
                "full" => Durability::Full,
                "normal" => Durability::Normal,
                _ => {
                    return Err(ConfigError(format!(
                        "synchronous = `{value}` (from {from}) must be `full` or `normal`"
                    )))
                }
            }
        }
        "starts_per_key_per_minute" => s.starts_per_key_per_minute = number(name, value, from)?,
        "trusted_proxies" => {
            s.trusted_proxies = TrustedProxies::parse(value).map_err(|e| {
                ConfigError(format!("trusted_proxies (from {from}): {e}"))
            })?
        }
        "max_connections" => s.max_connections = number(name, value, from)?,
        "max_connections_per_address" => {
            s.max_connections_per_address = number(name, value, from)?
        }
        "max_pending_writes" => s.max_pending_writes = number(name, value, from)?,
        "client_timeout_seconds" => s.client_timeout_seconds = number(name, value, from)?,
        "metrics" => {
            s.metrics = match value.trim().to_ascii_lowercase().as_str() {
                "on" | "true" => MetricsMode::Main,
                "off" | "false" => MetricsMode::Off,
                other => MetricsMode::Separate(other.parse().map_err(|_| {
                    ConfigError(format!(
                        "metrics = `{value}` (from {from}) must be `on`, `off` or an address like 127.0.0.1:9090"
                    ))
                })?),
            }
        }
        "signing_key_file" => {
            s.signing_key_file = (!value.trim().is_empty()).then(|| PathBuf::from(value.trim()))
        }
        "signing_key_overlap_days" => s.signing_key_overlap_days = number(name, value, from)?,
        other => return Err(ConfigError(format!("unknown setting {other}"))),
    }
    Ok(())
}

fn validate(s: &Settings) -> Result<(), ConfigError> {
    let fail = |m: String| Err(ConfigError(m));
    if !(1..=86_400).contains(&s.heartbeat_interval_seconds) {
        return fail(format!(
            "heartbeat_interval_seconds = {} must be between 1 and 86400",
            s.heartbeat_interval_seconds
        ));
    }
    if s.session_timeout_seconds <= s.heartbeat_interval_seconds {
        return fail(format!(
            "session_timeout_seconds = {} must be greater than heartbeat_interval_seconds = {} \
             (twice the interval is usual)",
            s.session_timeout_seconds, s.heartbeat_interval_seconds
        ));
    }
    if s.session_timeout_seconds > 7 * 86_400 {
        return fail(format!(
            "session_timeout_seconds = {} must be at most 604800 (7 days)",
            s.session_timeout_seconds
        ));
    }
    // Whole-number settings and their ranges, checked in this order.
    let ranges: [(&str, u64, u64); 7] = [
        ("sweep_interval_seconds", s.sweep_interval_seconds, 3_600),
        ("history_days", s.history_days.into(), 3_650),
        (
            "heartbeat_persist_seconds",
            s.heartbeat_persist_seconds,
            3_600,
        ),
        ("max_connections", s.max_connections as u64, 1_000_000),
        (
            "max_connections_per_address",
            s.max_connections_per_address as u64,
            1_000_000,
        ),
        ("max_pending_writes", s.max_pending_writes as u64, 1_000_000),
        ("client_timeout_seconds", s.client_timeout_seconds, 3_600),
    ];
    if s.signing_key_overlap_days > 3_650 {
        return fail(format!(
            "signing_key_overlap_days = {} must be between 0 and 3650",
            s.signing_key_overlap_days
        ));
    }
    for (name, value, max) in ranges {
        if !(1..=max).contains(&value) {
            return fail(format!("{name} = {value} must be between 1 and {max}"));
        }
    }
    if let MetricsMode::Separate(addr) = s.metrics {
        if addr == s.listen {
            return fail(format!(
                "metrics = {addr} is the main listen address; use metrics = \"on\" to serve /metrics there"
            ));
        }
    }
    if s.failed_key_lookups_per_minute == 0
        || s.admin_auth_failures_per_minute == 0
        || s.starts_per_key_per_minute == 0
    {
        return fail(
            "rate limits per minute must be at least 1 (use rate_limits = \"off\" to disable)"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
