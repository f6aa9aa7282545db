//! The settings' precedence, validation and messages.

use super::*;
use std::collections::HashMap;
use std::io::Write;

fn load_env(
    pairs: &[(&str, &str)],
    overrides: &Overrides,
) -> Result<(Settings, Vec<String>), ConfigError> {
    let env: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let names = env.keys().cloned().collect();
    load_with_env(overrides, |k| env.get(k).cloned(), names)
}

#[test]
fn defaults_match_the_contract() {
    let (s, _) = load_env(&[], &Overrides::default()).unwrap();
    assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(s.database, Database::Sqlite(PathBuf::from("keyseat.db")));
    assert_eq!(s.heartbeat_interval_seconds, 30);
    assert_eq!(s.session_timeout_seconds, 60);
    assert_eq!(s.sweep_interval_seconds, 10);
    assert_eq!(s.history_days, 30);
    assert!(s.rate_limits);
    assert!(s.admin_token.is_none());
    assert_eq!(s.log_format, LogFormat::Text);
}

/// `log_format` takes `text` or `json` (any case) from every source.
#[test]
fn log_format_is_text_or_json() {
    let (s, _) = load_env(&[("KEYSEAT_LOG_FORMAT", "JSON")], &Overrides::default()).unwrap();
    assert_eq!(s.log_format, LogFormat::Json);
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "log_format = \"json\"").unwrap();
    let mut o = Overrides {
        config: Some(file.path().to_owned()),
        ..Default::default()
    };
    assert_eq!(load_env(&[], &o).unwrap().0.log_format, LogFormat::Json);
    o.values.insert("log_format", "text".into());
    assert_eq!(load_env(&[], &o).unwrap().0.log_format, LogFormat::Text);
    let err = load_env(
        &[],
        &Overrides {
            config: None,
            values: [("log_format", "yaml".to_owned())].into(),
        },
    )
    .unwrap_err();
    assert_eq!(
        err.0,
        "log_format = `yaml` (from --log-format) must be `text` or `json`"
    );
}

#[test]
fn file_then_env_then_flags() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        file,
        "listen = \"127.0.0.1:9000\"\nhistory_days = 7\nlog = \"debug\""
    )
    .unwrap();
    let mut o = Overrides {
        config: Some(file.path().to_owned()),
        ..Default::default()
    };
    o.values.insert("history_days", "3".into());
    let (s, _) = load_env(
        &[
            ("KEYSEAT_LISTEN", "127.0.0.1:9001"),
            ("KEYSEAT_HISTORY_DAYS", "5"),
        ],
        &o,
    )
    .unwrap();
    assert_eq!(s.listen.port(), 9001, "env beats file");
    assert_eq!(s.history_days, 3, "flag beats env");
    assert_eq!(s.log, "debug", "file beats default");
}

#[test]
fn config_path_can_come_from_the_environment() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "sweep_interval_seconds = 2").unwrap();
    let path = file.path().display().to_string();
    let (s, _) = load_env(&[("KEYSEAT_CONFIG", &path)], &Overrides::default()).unwrap();
    assert_eq!(s.sweep_interval_seconds, 2);
}

#[test]
fn invalid_settings_are_one_clear_line() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("KEYSEAT_SESSION_TIMEOUT_SECONDS", "30")],
            "must be greater than heartbeat_interval_seconds",
        ),
        (&[("KEYSEAT_LISTEN", "nowhere")], "not an address"),
        (&[("KEYSEAT_HISTORY_DAYS", "-1")], "not a whole number"),
        (&[("KEYSEAT_RATE_LIMITS", "maybe")], "must be `on` or `off`"),
        (
            &[("KEYSEAT_SWEEP_INTERVAL_SECONDS", "0")],
            "between 1 and 3600",
        ),
        (&[("KEYSEAT_ADMIN_TOKEN", "has space")], "visible ASCII"),
        (&[("KEYSEAT_LOG", "[[[")], "not a valid log filter"),
        (
            &[("KEYSEAT_LOG_FORMAT", "xml")],
            "log_format = `xml` (from environment variable KEYSEAT_LOG_FORMAT) must be `text` or `json`",
        ),
    ];
    for (env, expected) in cases {
        let err = load_env(env, &Overrides::default()).unwrap_err();
        assert!(err.0.contains(expected), "{env:?}: {err}");
        assert!(!err.0.contains('\n'), "one line: {err}");
    }
}

#[test]
fn unknown_keys_in_the_file_are_refused() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "sesion_timeout_seconds = 90").unwrap();
    let o = Overrides {
        config: Some(file.path().to_owned()),
        ..Default::default()
    };
    let err = load_env(&[], &o).unwrap_err();
    assert!(
        err.0.contains("unknown setting `sesion_timeout_seconds`"),
        "{err}"
    );
    assert!(
        err.0.contains("did you mean `session_timeout_seconds`?"),
        "{err}"
    );
    assert!(!err.0.contains('\n'));
}

#[test]
fn a_value_of_the_wrong_type_names_the_setting_and_the_fix() {
    let cases = [
        (
            "heartbeat_interval_seconds = \"30\"",
            "heartbeat_interval_seconds must be a whole number without quotes, e.g. \
             heartbeat_interval_seconds = 30, not the string \"30\"",
        ),
        (
            "listen = 8080",
            "listen must be a string in quotes, e.g. listen = \"...\", not the number 8080",
        ),
        (
            "trusted_proxies = [1]",
            "trusted_proxies must be a list of strings",
        ),
        ("history_days = -1", "history_days = `-1`"),
        (
            "zzz = 1",
            "unknown setting `zzz`; valid settings: listen, database",
        ),
        ("listen = ", "config file"),
    ];
    for (line, expected) in cases {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "{line}").unwrap();
        let o = Overrides {
            config: Some(file.path().to_owned()),
            ..Default::default()
        };
        let err = load_env(&[], &o).unwrap_err();
        assert!(err.0.contains(expected), "{line}: {err}");
        assert!(!err.0.contains('\n'), "one line: {err}");
    }
}

#[test]
fn missing_config_file_is_an_error() {
    let o = Overrides {
        config: Some("/nonexistent/keyseat.toml".into()),
        ..Default::default()
    };
    assert!(load_env(&[], &o)
        .unwrap_err()
        .0
        .contains("cannot read config file"));
}

#[test]
fn unknown_env_vars_warn_and_secrets_are_redacted() {
    let (s, warnings) = load_env(
        &[
            ("KEYSEAT_SESION_TIMEOUT", "1"),
            ("KEYSEAT_ADMIN_TOKEN", "sixteen-chars-ok"),
        ],
        &Overrides::default(),
    )
    .unwrap();
    assert!(warnings
        .iter()
        .any(|w| w.contains("KEYSEAT_SESION_TIMEOUT")));
    assert!(!format!("{s:?}").contains("sixteen"));
}

/// An admin token under 16 characters is a configuration error naming
/// the setting and where it came from, and never shows the token.
#[test]
fn short_admin_tokens_are_refused() {
    let err = load_env(&[("KEYSEAT_ADMIN_TOKEN", "hunt2")], &Overrides::default())
        .unwrap_err()
        .0;
    assert!(err.contains("admin_token"), "{err}");
    assert!(err.contains("KEYSEAT_ADMIN_TOKEN"), "{err}");
    assert!(err.contains("at least 16"), "{err}");
    assert!(!err.contains("hunt2"), "{err}");
    let fifteen = "x".repeat(15);
    assert!(load_env(&[("KEYSEAT_ADMIN_TOKEN", &fifteen)], &Overrides::default()).is_err());
    let sixteen = "x".repeat(16);
    assert!(load_env(&[("KEYSEAT_ADMIN_TOKEN", &sixteen)], &Overrides::default()).is_ok());
}

#[test]
fn example_config_lists_every_setting_at_its_default() {
    let text = include_str!("../../config.example.toml");
    for name in SETTING_NAMES {
        assert!(text.contains(name), "config.example.toml lacks {name}");
    }
    let uncommented: String = text
        .lines()
        .map(|l| {
            l.strip_prefix("# ")
                .filter(|l| l.contains(" = "))
                .unwrap_or(l)
        })
        .collect::<Vec<_>>()
        .join("\n");
    // Every setting, uncommented, loads and gives the defaults.
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "{uncommented}").unwrap();
    let o = Overrides {
        config: Some(file.path().to_owned()),
        ..Default::default()
    };
    let (loaded, _) = load_env(&[], &o).unwrap();
    assert_eq!(format!("{loaded:?}"), format!("{:?}", Settings::default()));
}

#[test]
fn trusted_proxies_from_a_toml_list_or_a_comma_string() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, r#"trusted_proxies = ["127.0.0.1", "10.0.0.0/8"]"#).unwrap();
    let o = Overrides {
        config: Some(f.path().to_path_buf()),
        ..Default::default()
    };
    let (s, _) = load_env(&[], &o).unwrap();
    assert!(s.trusted_proxies.contains("10.9.9.9".parse().unwrap()));
    let (s, _) = load_env(&[("KEYSEAT_TRUSTED_PROXIES", "::1, 192.0.2.0/24")], &o).unwrap();
    assert!(s.trusted_proxies.contains("192.0.2.77".parse().unwrap()));
    assert!(!s.trusted_proxies.contains("10.9.9.9".parse().unwrap()));
    let e = load_env(&[("KEYSEAT_TRUSTED_PROXIES", "proxy.lan")], &o).unwrap_err();
    assert!(
        e.0.contains("KEYSEAT_TRUSTED_PROXIES") && e.0.contains("proxy.lan"),
        "{e}"
    );
}

#[test]
fn metrics_on_off_or_an_address() {
    let o = Overrides::default();
    assert_eq!(load_env(&[], &o).unwrap().0.metrics, MetricsMode::Main);
    let off = load_env(&[("KEYSEAT_METRICS", "off")], &o).unwrap().0;
    assert_eq!(off.metrics, MetricsMode::Off);
    let own = load_env(&[("KEYSEAT_METRICS", "127.0.0.1:9090")], &o)
        .unwrap()
        .0;
    assert_eq!(
        own.metrics,
        MetricsMode::Separate("127.0.0.1:9090".parse().unwrap())
    );
    let e = load_env(&[("KEYSEAT_METRICS", "yes please")], &o).unwrap_err();
    assert!(e.0.contains("must be `on`, `off` or an address"), "{e}");
    let e = load_env(&[("KEYSEAT_METRICS", "127.0.0.1:8080")], &o).unwrap_err();
    assert!(e.0.contains("main listen address"), "{e}");
}

#[test]
fn overload_limits_are_validated() {
    let o = Overrides::default();
    for (var, value, needle) in [
        ("KEYSEAT_MAX_CONNECTIONS", "0", "max_connections = 0"),
        (
            "KEYSEAT_MAX_CONNECTIONS_PER_ADDRESS",
            "0",
            "max_connections_per_address = 0",
        ),
        ("KEYSEAT_MAX_PENDING_WRITES", "0", "max_pending_writes = 0"),
        (
            "KEYSEAT_CLIENT_TIMEOUT_SECONDS",
            "0",
            "client_timeout_seconds = 0",
        ),
        ("KEYSEAT_STARTS_PER_KEY_PER_MINUTE", "0", "at least 1"),
        ("KEYSEAT_MAX_CONNECTIONS", "many", "not a whole number"),
    ] {
        let e = load_env(&[(var, value)], &o).unwrap_err();
        assert!(e.0.contains(needle), "{var}={value}: {e}");
    }
}
