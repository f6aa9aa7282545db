//! `migrate`, and what every command does with a database that is missing,
//! not SQLite, empty, or named through the environment.

use super::*;

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
