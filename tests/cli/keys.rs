//! `keys create`, `list`, `show`, `update`, `suspend`, `resume` and
//! `revoke`.

use super::*;

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
