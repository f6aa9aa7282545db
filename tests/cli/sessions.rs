//! `sessions`, `events` and `sweep`, and the secrets they must never show
//! (the access key, raw control characters).

use super::*;

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
    // As an earlier release could have stored it: only SQLite databases
    // come from earlier releases.
    if common::on_postgres() {
        return;
    }
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

/// A seat borrowed over HTTP (a server on the test's database, stopped
/// before the CLI runs): `sessions list` shows until when in its BORROWED
/// UNTIL column (`-` for an ordinary session) and `--json` carries
/// `borrowed_until`; `keys show` lists it and the key's terms; `events`
/// lists `session_borrowed`; kicking it says the device's lease token stays
/// valid offline.
#[test]
fn a_borrowed_session_is_listed_as_borrowed() {
    let db = fresh_db();
    let k = create_key(
        db.path(),
        &["--max-sessions", "2", "--max-borrow-hours", "4"],
    );
    let secret = field(&k, "access_key").to_owned();
    let key_id = field(&k, "key_id").to_owned();
    let target = db.path().to_string_lossy().into_owned();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (desk, body) = rt.block_on(async {
        let mut s = common::TestServer::start_with(|c| {
            c.database = keyseat::config::Database::parse(&target)
        })
        .await;
        let desk = s.started(&secret, "desk").await;
        let (status, body) = s
            .post(
                "/api/session/borrow",
                serde_json::json!({"access_key": secret, "device": {"name": "laptop"}, "hours": 2}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        s.stop().await;
        (desk, body)
    });
    let laptop = body["session_id"].as_str().unwrap().to_owned();
    let until = body["borrowed_until"].as_str().unwrap().to_owned();

    let text = ok(&run(db.path(), &["sessions", "list"]));
    let header = text.lines().next().unwrap();
    assert!(header.ends_with("BORROWED UNTIL"), "{text}");
    let line = |id: &str| {
        text.lines()
            .find(|l| l.contains(id))
            .unwrap_or_else(|| panic!("{id} in {text}"))
            .to_owned()
    };
    assert!(line(&laptop).ends_with(&until), "{text}");
    assert!(line(&desk).ends_with(" -"), "{text}");

    let list = ok_json(&run(db.path(), &["sessions", "list", "--json"]));
    let of = |id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|s| s["session_id"] == id)
            .unwrap_or_else(|| panic!("{id} in {list}"))
            .clone()
    };
    assert_eq!(of(&laptop)["borrowed_until"], until.as_str(), "{list}");
    assert!(of(&desk)["borrowed_until"].is_null(), "{list}");

    let shown = ok(&run(db.path(), &["keys", "show", &key_id]));
    assert!(shown.contains("up to 4 h"), "{shown}");
    assert!(
        shown
            .lines()
            .any(|l| l.contains(&laptop) && l.ends_with(&until)),
        "{shown}"
    );

    let events = ok(&run(db.path(), &["events", "--type", "session_borrowed"]));
    assert!(
        events
            .lines()
            .any(|l| l.contains("session_borrowed") && l.contains(&laptop)),
        "{events}"
    );

    let kicked = ok(&run(db.path(), &["sessions", "kick", &laptop]));
    assert!(
        kicked.contains(&format!("lease token stays valid offline until {until}")),
        "{kicked}"
    );
    let kicked = ok(&run(db.path(), &["sessions", "kick", &desk]));
    assert!(!kicked.contains("lease token"), "{kicked}");
}
