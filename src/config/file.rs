//! The config file: reading the TOML, refusing unknown settings with the
//! nearest known name, and turning each value into the text every source
//! is validated from (so a wrong type names the setting and how to write
//! it, instead of serde's bare "invalid type").

use std::path::Path;

use super::{apply_text, ConfigError, Settings, SETTING_NAMES};

/// What a setting's value is written as in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    /// A TOML string.
    Text,
    /// A TOML integer.
    Number,
    /// A TOML array of strings, or one comma-separated string.
    List,
}

impl FileKind {
    fn of(setting: &str) -> FileKind {
        match setting {
            "heartbeat_interval_seconds"
            | "session_timeout_seconds"
            | "sweep_interval_seconds"
            | "history_days"
            | "failed_key_lookups_per_minute"
            | "admin_auth_failures_per_minute"
            | "heartbeat_persist_seconds"
            | "starts_per_key_per_minute"
            | "max_connections"
            | "max_connections_per_address"
            | "max_pending_writes"
            | "client_timeout_seconds"
            | "signing_key_overlap_days" => FileKind::Number,
            "trusted_proxies" => FileKind::List,
            _ => FileKind::Text,
        }
    }

    /// How to write such a value, for the error when it was written
    /// otherwise.
    fn example(self, setting: &str) -> String {
        match self {
            FileKind::Number => format!("a whole number without quotes, e.g. {setting} = 30"),
            FileKind::Text => format!("a string in quotes, e.g. {setting} = \"...\""),
            FileKind::List => format!("a list of strings, e.g. {setting} = [\"10.0.0.1\"]"),
        }
    }
}

/// The TOML type of a value, as the error names it.
fn toml_type(value: &toml::Value) -> String {
    match value {
        toml::Value::String(v) => format!("the string {v:?}"),
        toml::Value::Integer(v) => format!("the number {v}"),
        toml::Value::Float(v) => format!("the number {v}"),
        toml::Value::Boolean(v) => format!("{v}"),
        toml::Value::Datetime(v) => format!("the date {v}"),
        toml::Value::Array(_) => "a list".into(),
        toml::Value::Table(_) => "a table".into(),
    }
}

/// The closest setting name to a mistyped one, if any is close.
fn nearest_setting(name: &str) -> Option<&'static str> {
    SETTING_NAMES
        .iter()
        .map(|candidate| (strsim::jaro_winkler(name, candidate), *candidate))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

/// A setting name that is not one, with the nearest one suggested.
fn unknown_setting(name: &str, from: &str) -> ConfigError {
    let hint = match nearest_setting(name) {
        Some(near) => format!("did you mean `{near}`?"),
        None => format!("valid settings: {}", SETTING_NAMES.join(", ")),
    };
    ConfigError(format!("{from}: unknown setting `{name}`; {hint}"))
}

/// A config file value as the text every source gives: the same parser
/// and checks then apply to a file, the environment and flags.
fn file_value_as_text(name: &str, value: toml::Value, from: &str) -> Result<String, ConfigError> {
    let kind = FileKind::of(name);
    let wrong = |value: &toml::Value| {
        ConfigError(format!(
            "{from}: {name} must be {}, not {}",
            kind.example(name),
            toml_type(value)
        ))
    };
    match (kind, value) {
        (FileKind::Number, toml::Value::Integer(v)) => Ok(v.to_string()),
        (FileKind::Text | FileKind::List, toml::Value::String(v)) => Ok(v),
        (FileKind::List, toml::Value::Array(items)) => {
            let mut texts = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    toml::Value::String(v) => texts.push(v),
                    other => return Err(wrong(&other)),
                }
            }
            Ok(texts.join(","))
        }
        (_, other) => Err(wrong(&other)),
    }
}

/// Reads the config file at `path` into `s`.
pub(super) fn apply_file(s: &mut Settings, path: &Path) -> Result<(), ConfigError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read config file {shown}: {e}")))?;
    let from = format!("config file {shown}");
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let msg = e.message().replace('\n', " ");
        ConfigError(format!("{from}: {msg}"))
    })?;
    for (name, value) in table {
        let Some(name) = SETTING_NAMES.iter().find(|n| **n == name) else {
            return Err(unknown_setting(&name, &from));
        };
        let text = file_value_as_text(name, value, &from)?;
        apply_text(s, name, &text, &from)?;
    }
    Ok(())
}
