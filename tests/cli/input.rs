//! Bad input and invalid settings: one line, the right exit code, for the
//! commands and for `serve`.

use super::*;

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
