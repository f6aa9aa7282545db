//! Opening the database file: connection settings, WAL, and the
//! migrations embedded in the binary. Every refusal here names the file
//! and what to do, because it is the first thing an operator sees when a
//! path or a version is wrong; and `OpenMode::Existing` refuses a missing
//! file so that a mistyped path never becomes a new, empty database.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OpenFlags};

use super::SqliteStore;
use crate::error::{Error, Result};

mod embedded {
    refinery::embed_migrations!("migrations/sqlite");
}

/// How long a connection waits for another process's write lock before
/// the request is answered 503.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections in the pool: enough for concurrent reads on 2-8 cores.
const POOL_SIZE: u32 = 8;
/// Where refinery records applied migrations.
const HISTORY_TABLE: &str = "refinery_schema_history";

/// How to open the database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Create the file if needed and apply pending migrations (`serve`,
    /// `migrate`).
    CreateAndMigrate,
    /// The file must exist and be fully migrated (every other command), so
    /// a mistyped path is an error rather than a new empty database.
    Existing,
}

/// Per-connection settings, applied to every connection.
fn configure(conn: &mut Connection, durability: Durability) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Every statement on the hot paths stays prepared (the default of 16
    // is fewer than the statements a start uses).
    conn.set_prepared_statement_cache_capacity(128);
    // FULL: a start, end or key change acknowledged to a client survives a
    // power cut, not just a process crash. NORMAL (WAL): survives a process
    // crash; a power cut may lose the last commits.
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA foreign_keys = ON; PRAGMA synchronous = {sync};"
    ))?;
    Ok(())
}

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous = FULL`: acknowledged writes survive a power cut.
    #[default]
    Full,
    /// `synchronous = NORMAL`: acknowledged writes survive a process crash;
    /// a power cut may lose the last ones.
    Normal,
}

impl SqliteStore {
    /// Opens (and in `CreateAndMigrate` mode creates and migrates) the
    /// database at `path`.
    pub fn open(path: &Path, mode: OpenMode) -> Result<SqliteStore> {
        Self::open_with(path, mode, Durability::Full)
    }

    /// Opens with a chosen durability.
    pub fn open_with(path: &Path, mode: OpenMode, durability: Durability) -> Result<SqliteStore> {
        let shown = path.display();
        // The bundled SQLite treats a name starting with `file:` as a URI
        // whatever the open flags say; `./file:x.db` is taken literally.
        let literal;
        let path = if path.to_string_lossy().starts_with("file:") {
            literal = Path::new(".").join(path);
            literal.as_path()
        } else {
            path
        };
        let flags = match mode {
            OpenMode::CreateAndMigrate => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    if !parent.is_dir() {
                        return Err(Error::Database(format!(
                            "cannot create database {shown}: directory {} does not exist",
                            parent.display()
                        )));
                    }
                }
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
            }
            OpenMode::Existing => {
                if !path.is_file() {
                    // Relative to where the command ran, which is what a
                    // user in the wrong directory needs to see.
                    let looked = match std::path::absolute(path) {
                        Ok(abs) if abs != path => format!(" (looked for {})", abs.display()),
                        _ => String::new(),
                    };
                    return Err(Error::Database(format!(
                        "database file {shown} does not exist{looked}; check --database or \
                         KEYSEAT_DATABASE, or create it with `keyseat migrate`"
                    )));
                }
                OpenFlags::SQLITE_OPEN_READ_WRITE
            }
        } | OpenFlags::SQLITE_OPEN_NO_MUTEX;

        let describe = |e: rusqlite::Error| -> Error {
            match &e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::NotADatabase =>
                {
                    Error::Database(format!("{shown} is not a SQLite database"))
                }
                _ => Error::Database(format!(
                    "cannot open database {shown}: {}",
                    crate::error::sqlite_message(&e)
                )),
            }
        };

        let mut conn = Connection::open_with_flags(path, flags).map_err(describe)?;
        configure(&mut conn, durability).map_err(describe)?;
        match mode {
            OpenMode::CreateAndMigrate => {
                let journal: String = conn
                    .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
                    .map_err(describe)?;
                if !journal.eq_ignore_ascii_case("wal") {
                    return Err(Error::Database(format!(
                        "cannot switch {shown} to WAL mode (got {journal})"
                    )));
                }
                check_not_foreign(&conn, &shown.to_string())?;
                check_not_newer(&mut conn, &shown.to_string())?;
                embedded::migrations::runner()
                    .run(&mut conn)
                    .map_err(|e| Error::Database(format!("migrating {shown} failed: {e}")))?;
            }
            OpenMode::Existing => check_schema_current(&mut conn, &shown.to_string())?,
        }
        drop(conn);

        let manager = SqliteConnectionManager::file(path)
            .with_flags(OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .with_init(move |c| configure(c, durability));
        let pool = Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(BUSY_TIMEOUT)
            .build(manager)
            .map_err(|e| Error::Database(format!("cannot open database {shown}: {e}")))?;
        Ok(SqliteStore {
            durability,
            pool,
            write_lock: Mutex::new(()),
            path: path.to_owned(),
        })
    }

    /// A new connection of its own (for the server's writer thread).
    pub(in crate::store) fn new_connection(&self) -> Result<Connection> {
        let mut conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure(&mut conn, self.durability)?;
        Ok(conn)
    }

    /// The file this store works on.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Refuses a database written by a newer keyseat (its migrations would be
/// unknown to this binary).
fn check_not_newer(conn: &mut Connection, shown: &str) -> Result<()> {
    if !history_table_exists(conn)? {
        return Ok(());
    }
    let latest = latest_embedded_version();
    let applied: Option<i64> = conn.query_row(
        &format!("SELECT MAX(version) FROM {HISTORY_TABLE}"),
        [],
        |r| r.get(0),
    )?;
    if applied.is_some_and(|v| v > latest) {
        return Err(Error::Database(format!(
            "database {shown} has schema version {} but this keyseat knows only up to {latest}; \
             use a newer keyseat",
            applied.unwrap_or_default()
        )));
    }
    Ok(())
}

/// Refuses to add keyseat's tables to another application's database.
fn check_not_foreign(conn: &Connection, shown: &str) -> Result<()> {
    if history_table_exists(conn)? {
        return Ok(());
    }
    let tables: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'",
        [],
        |r| r.get(0),
    )?;
    if tables > 0 {
        return Err(Error::Database(format!(
            "{shown} is not a keyseat database (it has other tables); choose another --database"
        )));
    }
    Ok(())
}

fn check_schema_current(conn: &mut Connection, shown: &str) -> Result<()> {
    if !history_table_exists(conn)? {
        let has_tables: i64 = conn.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'",
            [],
            |r| r.get(0),
        )?;
        return Err(Error::Database(if has_tables == 0 {
            format!("database {shown} is empty; create it with `keyseat migrate`")
        } else {
            format!("{shown} is not a keyseat database")
        }));
    }
    check_not_newer(conn, shown)?;
    let applied: Option<i64> = conn.query_row(
        &format!("SELECT MAX(version) FROM {HISTORY_TABLE}"),
        [],
        |r| r.get(0),
    )?;
    if applied.unwrap_or(0) < latest_embedded_version() {
        return Err(Error::Database(format!(
            "database {shown} needs migrating; run `keyseat migrate` (or start `keyseat serve`)"
        )));
    }
    Ok(())
}

fn history_table_exists(conn: &Connection) -> Result<bool> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [HISTORY_TABLE],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

fn latest_embedded_version() -> i64 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0)
}
