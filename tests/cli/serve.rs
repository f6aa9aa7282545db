//! `serve` run for real until SIGTERM, and the help text of its flags.

use super::*;

/// `serve --listen 127.0.0.1:0` creates and migrates the database, logs
/// one line naming the real address ("listening on http://127.0.0.1:N"),
/// lets CLI commands work on the same database while it runs, and on
/// SIGTERM exits 0.
#[test]
fn serve_runs_until_sigterm_and_the_cli_works_alongside() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("served.db");
    let mut cmd = keyseat();
    cmd.arg("--database")
        .arg(&db)
        .args(["--listen", "127.0.0.1:0", "serve"]);
    let serve = LoggedServe::spawn(cmd);
    let mut seen = Vec::new();
    let (ready, port) = serve.listening(&mut seen);
    assert_ne!(port, 0, "the real port, not 0: {ready}");
    assert!(db.is_file(), "serve did not create the database");
    // The next line says the admin API and the dashboard are off, and how
    // to turn them on.
    let admin = serve
        .lines
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

    let rest = serve.stop();
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
