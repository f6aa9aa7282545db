//! SQLite behind the [`Storage`] boundary: one file in WAL mode, an r2d2
//! pool for reads, one in-process writer at a time, refinery migrations
//! embedded in the binary.
//!
//! Why a writer mutex as well as SQLite's own lock: SQLite lets only one
//! writer in at a time anyway, and contending writers inside one process
//! would otherwise spin in `busy_timeout` sleeps. The mutex queues them
//! fairly; `busy_timeout` still covers writers in *other* processes (the CLI
//! working on the same file while the server runs). Every write opens with
//! `BEGIN IMMEDIATE`, so the read-decide-write of a start happens under the
//! write lock and no interleaving can exceed a key's seat limit.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use r2d2::{Pool, PooledConnection};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{named_params, params, Connection, OpenFlags, OptionalExtension, Row};
use serde_json::json;

use super::memory::{key_tag, Change, LiveSession, Memory, NEVER};
use super::*;
use crate::keys::KeyHash;
use crate::keys::{new_key_id, AccessKey, KEY_TAG, PREFIX_LEN};
use crate::rules::{self, StartDecision};

mod embedded {
    refinery::embed_migrations!("migrations");
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

/// The SQLite implementation of [`Storage`].
pub struct SqliteStore {
    durability: Durability,
    pool: Pool<SqliteConnectionManager>,
    write_lock: Mutex<()>,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
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
    pub(super) fn new_connection(&self) -> Result<Connection> {
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

    fn conn(&self) -> Result<PooledConnection<SqliteConnectionManager>> {
        Ok(self.pool.get()?)
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // A panic inside a write leaves SQLite rolled back (the transaction
        // is dropped), so the guard's data, `()`, cannot be inconsistent.
        self.write_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction and commits if it
    /// returns `Ok`. A domain refusal that must still be recorded (a
    /// rejected start) is returned as `Ok(Err(..))` by the closure.
    fn write<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let _guard = self.lock();
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let value = f(&tx)?;
        tx.commit()?;
        Ok(value)
    }

    pub(super) fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.conn()?;
        f(&conn)
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

// ---------------------------------------------------------------------------
// Row mapping

/// A session's effective lease end on disk: its own `expires_at`, or the
/// lease floor every session got at the last restart, whichever is later.
/// (The floor spares a restart from rewriting every open session.)
///
/// The server writes heartbeat times lazily and only `last_heartbeat` (no
/// index to update), so the lease a heartbeat implies is added here: the
/// last heartbeat on disk plus `lease_span` (timeout + persistence
/// interval, recorded by the server at start-up), an upper bound of the
/// true lease.
const EFFECTIVE_EXPIRY: &str = "MAX(s.expires_at, \
     s.last_heartbeat + IFNULL((SELECT value FROM server_state WHERE name = 'lease_span'), 0), \
     IFNULL((SELECT value FROM server_state WHERE name = 'lease_floor'), 0))";

fn key_columns() -> String {
    format!(
        "k.key_id, k.prefix, k.label, k.max_sessions, k.on_conflict, k.status, \
         k.expires_at, k.created_at, k.updated_at, k.revoked_at, \
         (SELECT COUNT(*) FROM sessions s WHERE s.key_id = k.key_id AND s.ended_at IS NULL \
            AND {EFFECTIVE_EXPIRY} > :now \
            AND (k.expires_at IS NULL OR k.expires_at > :now))"
    )
}

fn opt_ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(Timestamp)
}

fn key_from_row(row: &Row<'_>) -> rusqlite::Result<Key> {
    let policy: String = row.get(4)?;
    let status: String = row.get(5)?;
    Ok(Key {
        key_id: row.get(0)?,
        prefix: row.get(1)?,
        label: row.get(2)?,
        max_sessions: row.get(3)?,
        on_conflict: ConflictPolicy::parse(&policy).unwrap_or(ConflictPolicy::Takeover),
        status: KeyStatus::parse(&status).unwrap_or(KeyStatus::Suspended),
        expires_at: opt_ts(row.get(6)?),
        created_at: Timestamp(row.get(7)?),
        updated_at: Timestamp(row.get(8)?),
        revoked_at: opt_ts(row.get(9)?),
        live_sessions: row.get(10)?,
    })
}

fn session_columns() -> String {
    format!(
        "s.session_id, s.key_id, k.prefix, s.fence, s.device_name, \
         s.fingerprint, s.client_addr, s.started_at, s.last_heartbeat, {EFFECTIVE_EXPIRY}, \
         s.ended_at, s.end_reason, s.superseded_by"
    )
}

fn session_from_row(row: &Row<'_>) -> rusqlite::Result<Session> {
    let reason: Option<String> = row.get(11)?;
    Ok(Session {
        session_id: row.get(0)?,
        key_id: row.get(1)?,
        key_prefix: row.get(2)?,
        fence: row.get(3)?,
        device_name: row.get(4)?,
        fingerprint: row.get(5)?,
        client_addr: row.get(6)?,
        started_at: Timestamp(row.get(7)?),
        last_heartbeat: Timestamp(row.get(8)?),
        expires_at: Timestamp(row.get(9)?),
        ended_at: opt_ts(row.get(10)?),
        end_reason: reason.as_deref().and_then(EndReason::parse),
        superseded_by: row.get(12)?,
    })
}

pub(super) fn key_by_hash(conn: &Connection, hash: &[u8], now: Timestamp) -> Result<Option<Key>> {
    let sql = format!(
        "SELECT {} FROM keys k WHERE k.key_hash = :hash",
        key_columns()
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(named_params! {":hash": hash, ":now": now.0}, key_from_row)
        .optional()?)
}

fn key_by_id(conn: &Connection, key_id: &str, now: Timestamp) -> Result<Option<Key>> {
    let sql = format!("SELECT {} FROM keys k WHERE k.key_id = :id", key_columns());
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(named_params! {":id": key_id, ":now": now.0}, key_from_row)
        .optional()?)
}

/// Resolves a key id, a display prefix with or without `ks_`, or the full
/// access key itself (what an operator has in hand when a customer pastes
/// it): checked, hashed and looked up like a device's, never echoed.
fn resolve_key(conn: &Connection, key_ref: &str, now: Timestamp) -> Result<Key> {
    let key_ref = key_ref.trim();
    if let Some(key) = key_by_id(conn, key_ref, now)? {
        return Ok(key);
    }
    match AccessKey::parse(key_ref) {
        Ok(access) => {
            return key_by_hash(conn, &access.hash(), now)?.ok_or_else(|| {
                Error::KeyNotFound(format!(
                    "{} (a well-formed access key that is not in this database)",
                    access.prefix()
                ))
            })
        }
        Err(crate::keys::KeyFormatError::Checksum) => {
            return Err(Error::KeyNotFound(format!(
                "{} (an access key with a mistyped character: its checksum does not match)",
                crate::keys::redact_secret(key_ref)
            )))
        }
        Err(_) => {}
    }
    let bare = key_ref.strip_prefix(KEY_TAG).unwrap_or(key_ref);
    if bare.len() == PREFIX_LEN && bare.bytes().all(|b| b.is_ascii_alphanumeric()) {
        let prefix = format!("{KEY_TAG}{bare}");
        let sql = format!(
            "SELECT {} FROM keys k WHERE k.prefix = :prefix LIMIT 2",
            key_columns()
        );
        let mut stmt = conn.prepare(&sql)?;
        let found = stmt
            .query_map(
                named_params! {":prefix": prefix, ":now": now.0},
                key_from_row,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        match found.len() {
            1 => return Ok(found.into_iter().next().expect("one key")),
            n if n > 1 => {
                return Err(Error::Conflict(format!(
                    "prefix {prefix} matches more than one key; use the key id"
                )))
            }
            _ => {}
        }
    }
    // Someone may paste the secret itself here: never echo more than its prefix.
    Err(Error::KeyNotFound(crate::keys::redact_secret(key_ref)))
}

fn session_row(conn: &Connection, id: &str) -> Result<Option<Session>> {
    let sql = format!(
        "SELECT {} FROM sessions s JOIN keys k ON k.key_id = s.key_id WHERE s.session_id = ?1",
        session_columns()
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([id], session_from_row)
        .optional()?)
}

fn open_session_rows(conn: &Connection, key_id: &str) -> Result<Vec<Session>> {
    let sql = format!(
        "SELECT {} FROM sessions s JOIN keys k ON k.key_id = s.key_id \
         WHERE s.key_id = ?1 AND s.ended_at IS NULL ORDER BY s.fence",
        session_columns()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt
        .query_map([key_id], session_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Streams every open session to `f` as memory keeps it (start-up), with
/// its key's tag and expiry; the lease is left for the caller to set.
pub(super) fn load_open_sessions(
    conn: &Connection,
    mut f: impl FnMut(String, LiveSession),
) -> Result<usize> {
    let mut stmt = conn.prepare(
        "SELECT s.session_id, k.key_hash, k.expires_at, s.fence, s.last_heartbeat \
         FROM sessions s JOIN keys k ON k.key_id = s.key_id WHERE s.ended_at IS NULL",
    )?;
    let mut rows = stmt.query([])?;
    let mut n = 0;
    while let Some(r) = rows.next()? {
        let hash: Vec<u8> = r.get(1)?;
        let hash = <KeyHash>::try_from(hash.as_slice())
            .map_err(|_| Error::Database("a key hash in the database is not 32 bytes".into()))?;
        let key_expires: Option<i64> = r.get(2)?;
        let last_heartbeat: i64 = r.get(4)?;
        f(
            r.get(0)?,
            LiveSession {
                key_tag: key_tag(&hash),
                key_expires_at: key_expires.unwrap_or(NEVER),
                fence: r.get(3)?,
                last_heartbeat,
                expires_at: last_heartbeat,
                dirty: false,
            },
        );
        n += 1;
    }
    Ok(n)
}

/// Number of open sessions.
pub(super) fn count_open(conn: &Connection) -> Result<usize> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sessions WHERE ended_at IS NULL",
        [],
        |r| r.get(0),
    )?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// The newest event id (0 if none).
pub(super) fn last_event_id(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT IFNULL(MAX(id), 0) FROM events", [], |r| r.get(0))?)
}

/// What memory must learn from the events after `after_id`: sessions that
/// ended, and keys whose expiry may have changed.
pub(super) struct Learned {
    /// Sessions that ended.
    pub ended: Vec<String>,
    /// (key tag, expiry) of keys that changed.
    pub keys: Vec<(u64, i64)>,
    /// The newest event id read.
    pub last_id: i64,
}

/// Reads the events after `after_id` (another process's writes, and our
/// own, which are harmless to apply twice).
pub(super) fn changes_since(conn: &Connection, after_id: i64) -> Result<Learned> {
    let mut stmt = conn.prepare(
        "SELECT e.id, e.type, e.session_id, k.key_hash, k.expires_at, \
         e.detail LIKE '%\"expires_at\"%' FROM events e \
         LEFT JOIN keys k ON k.key_id = e.key_id WHERE e.id > ?1 ORDER BY e.id",
    )?;
    let mut rows = stmt.query([after_id])?;
    let mut learned = Learned {
        ended: Vec::new(),
        keys: Vec::new(),
        last_id: after_id,
    };
    while let Some(r) = rows.next()? {
        learned.last_id = r.get(0)?;
        let kind: String = r.get(1)?;
        match kind.as_str() {
            "session_ended" | "session_superseded" | "session_expired" | "session_revoked" => {
                if let Some(id) = r.get::<_, Option<String>>(2)? {
                    learned.ended.push(id);
                }
            }
            "key_updated" if r.get::<_, Option<bool>>(5)?.unwrap_or(false) => {
                let hash: Option<Vec<u8>> = r.get(3)?;
                if let Some(hash) = hash.and_then(|h| <KeyHash>::try_from(h.as_slice()).ok()) {
                    let expires: Option<i64> = r.get(4)?;
                    learned
                        .keys
                        .push((key_tag(&hash), expires.unwrap_or(NEVER)));
                }
            }
            _ => {}
        }
    }
    Ok(learned)
}

// ---------------------------------------------------------------------------
// Transactions: what every write and read of sessions goes through

/// One unit of work on a connection. With `mem` (the server), the exact
/// heartbeat and lease of each open session come from memory, disk leases
/// get `slack` added (heartbeats reach the disk lazily, so the disk's lease
/// must stay an upper bound of the true one), and what changes is collected
/// in `changes` for memory to apply after the commit.
pub struct Tx<'a> {
    pub(super) c: &'a Connection,
    mem: Option<&'a Memory>,
    slack_secs: u64,
    timeout_secs: u64,
    pub(super) changes: Vec<Change>,
}

impl<'a> Tx<'a> {
    /// Straight on the database (the CLI).
    pub(super) fn direct(c: &'a Connection) -> Self {
        Tx {
            c,
            mem: None,
            slack_secs: 0,
            timeout_secs: 0,
            changes: Vec::new(),
        }
    }

    /// With the server's memory.
    pub(super) fn with_memory(
        c: &'a Connection,
        mem: &'a Memory,
        slack_secs: u64,
        timeout_secs: u64,
    ) -> Self {
        Tx {
            c,
            mem: Some(mem),
            slack_secs,
            timeout_secs,
            changes: Vec::new(),
        }
    }

    /// The exact lease of an open session: memory's, unless a write
    /// earlier in this same batch (not yet applied to memory) extended it
    /// on disk, e.g. a start retry.
    fn overlay(&self, mut s: Session) -> Session {
        if s.ended_at.is_none() {
            if let Some((hb, exp)) = self.mem.and_then(|m| m.lease_of(&s.session_id)) {
                let row_heartbeat = s.last_heartbeat;
                s.last_heartbeat = Timestamp(hb).max(row_heartbeat);
                s.expires_at = Timestamp(exp).max(row_heartbeat.plus_secs(self.timeout_secs));
            }
        }
        s
    }

    fn session(&self, id: &str) -> Result<Option<Session>> {
        Ok(session_row(self.c, id)?.map(|s| self.overlay(s)))
    }

    fn open_sessions_of(&self, key_id: &str) -> Result<Vec<Session>> {
        Ok(open_session_rows(self.c, key_id)?
            .into_iter()
            .map(|s| self.overlay(s))
            .collect())
    }

    /// The lease end written to disk for a lease ending at `exact`.
    fn disk_lease(&self, exact: Timestamp) -> i64 {
        exact.plus_secs(self.slack_secs.saturating_mul(2)).0
    }

    fn record(&self, e: EventRecord<'_>) -> Result<()> {
        self.c
            .prepare_cached(
                "INSERT INTO events (at, type, key_id, session_id, device_name, client_addr, detail) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                e.at.0,
                e.event_type.as_str(),
                e.key_id,
                e.session_id,
                e.device_name,
                e.actor.0,
                e.detail.map(|d| d.to_string()),
            ])?;
        Ok(())
    }

    /// Ends a session that is still open, records the event, returns the
    /// session as it is now. `at` is when it ended (for expiry, the moment
    /// its lease ran out, not the moment the sweep noticed).
    #[allow(clippy::too_many_arguments)]
    fn end_open_session(
        &mut self,
        mut session: Session,
        reason: EndReason,
        at: Timestamp,
        superseded_by: Option<&str>,
        actor: &Actor,
        detail: Option<serde_json::Value>,
    ) -> Result<Session> {
        let changed = self
            .c
            .prepare_cached(
                "UPDATE sessions SET ended_at = ?2, end_reason = ?3, superseded_by = ?4, \
                 last_heartbeat = MAX(last_heartbeat, ?5) \
                 WHERE session_id = ?1 AND ended_at IS NULL",
            )?
            .execute(params![
                session.session_id,
                at.0,
                reason.as_str(),
                superseded_by,
                session.last_heartbeat.0,
            ])?;
        if changed == 1 {
            self.record(EventRecord {
                at,
                event_type: EventType::for_end(reason),
                key_id: Some(&session.key_id),
                session_id: Some(&session.session_id),
                device_name: session.device_name.as_deref(),
                actor,
                detail,
            })?;
            self.changes.push(Change::Ended {
                id: session.session_id.clone(),
            });
        }
        session.ended_at = Some(at);
        session.end_reason = Some(reason);
        session.superseded_by = superseded_by.map(str::to_owned);
        Ok(session)
    }

    /// Records an open session whose lease has run out as expired.
    /// The `expires_at` of a key, if it has one.
    fn key_expiry(&self, key_id: &str) -> Result<Option<i64>> {
        Ok(self
            .c
            .prepare_cached("SELECT expires_at FROM keys WHERE key_id = ?1")?
            .query_row([key_id], |r| r.get(0))
            .optional()?
            .flatten())
    }

    /// Records how a session that is no longer live ended on its own: at
    /// its key's expiry (revoked, cause `key_expired`) if the key expired
    /// while the lease still ran, else at its lease end (expired). Every
    /// path that finds a dead open session (sweep, key changes, starts,
    /// heartbeats) comes here, so they agree on the reason whichever runs
    /// first.
    fn record_expiry(&mut self, session: Session) -> Result<Session> {
        match self
            .key_expiry(&session.key_id)?
            .filter(|k| *k < session.expires_at.0)
        {
            Some(k) => self.end_open_session(
                session,
                EndReason::Revoked,
                Timestamp(k),
                None,
                &Actor::server(),
                Some(json!({ "cause": "key_expired" })),
            ),
            None => {
                let at = session.expires_at;
                self.end_open_session(
                    session,
                    EndReason::Expired,
                    at,
                    None,
                    &Actor::server(),
                    None,
                )
            }
        }
    }

    /// Ends the given live sessions with reason `revoked`.
    fn revoke_sessions(
        &mut self,
        sessions: Vec<Session>,
        now: Timestamp,
        actor: &Actor,
        cause: &str,
    ) -> Result<Vec<Session>> {
        sessions
            .into_iter()
            .map(|s| {
                self.end_open_session(
                    s,
                    EndReason::Revoked,
                    now,
                    None,
                    actor,
                    Some(json!({ "cause": cause })),
                )
            })
            .collect()
    }

    /// Open sessions of a key split into (dead ones, now recorded as
    /// expired; live ones).
    fn settle_open_sessions(
        &mut self,
        key_id: &str,
        now: Timestamp,
    ) -> Result<(Vec<Session>, Vec<Session>)> {
        let (live, dead): (Vec<_>, Vec<_>) = self
            .open_sessions_of(key_id)?
            .into_iter()
            .partition(|s| s.is_live_at(now));
        let expired = dead
            .into_iter()
            .map(|s| self.record_expiry(s))
            .collect::<Result<Vec<_>>>()?;
        Ok((expired, live))
    }

    fn explain_not_live(&self, session: &Session, now: Timestamp) -> Error {
        match rules::end_reason_at(session, now) {
            Some(EndReason::Superseded) => {
                let by = session
                    .superseded_by
                    .as_deref()
                    .and_then(|id| session_row(self.c, id).ok().flatten());
                Error::SessionSuperseded {
                    device_name: by.as_ref().and_then(|s| s.device_name.clone()),
                    started_at: by.map(|s| s.started_at).or(session.ended_at).unwrap_or(now),
                }
            }
            Some(reason) => Error::SessionOver(reason),
            None => Error::Internal("session is live but was explained as ended".into()),
        }
    }

    fn set_server_state(&self, name: &str, value: i64) -> Result<()> {
        self.c.execute(
            "INSERT INTO server_state (name, value) VALUES (?1, ?2) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            params![name, value],
        )?;
        Ok(())
    }

    fn server_state(&self, name: &str) -> Result<Option<i64>> {
        Ok(self
            .c
            .query_row(
                "SELECT value FROM server_state WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The key behind an access key, checked like on every session endpoint.
    fn usable_key(&self, key: &AccessKey, now: Timestamp) -> Result<Key> {
        let found = key_by_hash(self.c, &key.hash(), now)?.ok_or(Error::InvalidKey)?;
        rules::check_key(&found, now)?;
        Ok(found)
    }
}

struct EventRecord<'a> {
    at: Timestamp,
    event_type: EventType,
    key_id: Option<&'a str>,
    session_id: Option<&'a str>,
    device_name: Option<&'a str>,
    actor: &'a Actor,
    detail: Option<serde_json::Value>,
}

const LAST_ALIVE: &str = "last_alive";
const LEASE_FLOOR: &str = "lease_floor";
const LEASE_SPAN: &str = "lease_span";

// ---------------------------------------------------------------------------
// The operations, shared by the CLI's direct store and the server's store

/// Starts (or resumes) a session. The outer error aborts the transaction;
/// the inner one is a refusal to answer after committing (a rejected start
/// is recorded).
pub(super) fn start_op(
    tx: &mut Tx<'_>,
    req: &StartRequest,
    now: Timestamp,
    timing: Timing,
) -> Result<Result<StartOutcome>> {
    let key = key_by_hash(tx.c, &req.key.hash(), now)?.ok_or(Error::InvalidKey);
    let key = match key {
        Ok(k) => k,
        Err(e) => return Ok(Err(e)),
    };
    let requested = match &req.session_id {
        Some(id) => tx.session(id)?,
        None => None,
    };
    let open = tx.open_sessions_of(&key.key_id)?;
    let plan = match rules::plan_start(
        &key,
        requested.as_ref(),
        &open,
        req.fingerprint.as_deref(),
        now,
    ) {
        Ok(plan) => plan,
        Err(refusal @ Error::SeatsFull { .. }) => {
            tx.record(EventRecord {
                at: now,
                event_type: EventType::StartRejected,
                key_id: Some(&key.key_id),
                session_id: req.session_id.as_deref(),
                device_name: req.device_name.as_deref(),
                actor: &req.actor,
                detail: Some(json!({ "reason": "seats_full" })),
            })?;
            return Ok(Err(refusal));
        }
        Err(refusal) => return Ok(Err(refusal)),
    };

    let mut by_id: std::collections::HashMap<String, Session> = open
        .into_iter()
        .map(|s| (s.session_id.clone(), s))
        .collect();
    let expired = plan
        .expire
        .iter()
        .filter_map(|id| by_id.remove(id))
        .map(|s| tx.record_expiry(s))
        .collect::<Result<Vec<_>>>()?;
    let lease = timing.lease_until(now);

    match plan.decision {
        StartDecision::Resume { session_id } => {
            tx.c.execute(
                "UPDATE sessions SET last_heartbeat = ?2, expires_at = MAX(expires_at, ?3) \
                 WHERE session_id = ?1",
                params![session_id, now.0, tx.disk_lease(lease)],
            )?;
            tx.changes.push(Change::Extended {
                id: session_id.clone(),
                at: now.0,
                expires_at: lease.0,
            });
            let mut session = tx
                .session(&session_id)?
                .ok_or_else(|| Error::Internal("resumed session vanished".into()))?;
            session.last_heartbeat = now;
            // With memory, the overlay already gives the exact lease (this
            // write's, or a later one memory holds); on the disk alone the
            // row's effective lease carries slack, so answer the exact one.
            if tx.mem.is_none() {
                session.expires_at = lease;
            }
            Ok(Ok(StartOutcome {
                session,
                resumed: true,
                terminated: vec![],
                expired,
            }))
        }
        StartDecision::Admit { supersede } => {
            let session_id = req
                .session_id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            let fence: i64 =
                tx.c.prepare_cached(
                    "UPDATE keys SET next_fence = next_fence + 1 WHERE key_id = ?1 \
                     RETURNING next_fence - 1",
                )?
                .query_row([&key.key_id], |r| r.get(0))?;
            tx.c.prepare_cached(
                "INSERT INTO sessions (session_id, key_id, fence, device_name, fingerprint, \
                 client_addr, started_at, last_heartbeat, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)",
            )?
            .execute(params![
                session_id,
                key.key_id,
                fence,
                req.device_name,
                req.fingerprint,
                req.actor.0,
                now.0,
                tx.disk_lease(lease)
            ])?;
            let mut terminated = Vec::with_capacity(supersede.len());
            for victim_id in &supersede {
                let Some(victim) = by_id.remove(victim_id) else {
                    continue;
                };
                terminated.push(tx.end_open_session(
                    victim,
                    EndReason::Superseded,
                    now,
                    Some(&session_id),
                    &req.actor,
                    Some(json!({
                        "superseded_by": session_id,
                        "by_device_name": req.device_name,
                    })),
                )?);
            }
            tx.record(EventRecord {
                at: now,
                event_type: EventType::SessionStarted,
                key_id: Some(&key.key_id),
                session_id: Some(&session_id),
                device_name: req.device_name.as_deref(),
                actor: &req.actor,
                detail: Some(json!({ "fence": fence, "terminated": supersede })),
            })?;
            tx.changes.push(Change::Started {
                id: session_id.clone(),
                session: LiveSession {
                    key_tag: key_tag(&req.key.hash()),
                    key_expires_at: key.expires_at.map_or(NEVER, |t| t.0),
                    fence,
                    last_heartbeat: now.0,
                    expires_at: lease.0,
                    dirty: false,
                },
            });
            let session = Session {
                session_id,
                key_id: key.key_id.clone(),
                key_prefix: key.prefix.clone(),
                fence,
                device_name: req.device_name.clone(),
                fingerprint: req.fingerprint.clone(),
                client_addr: Some(req.actor.0.clone()),
                started_at: now,
                last_heartbeat: now,
                expires_at: lease,
                ended_at: None,
                end_reason: None,
                superseded_by: None,
            };
            Ok(Ok(StartOutcome {
                session,
                resumed: false,
                terminated,
                expired,
            }))
        }
    }
}

/// A heartbeat on the database alone (the CLI's store; the server answers
/// heartbeats from memory).
fn heartbeat_op(
    tx: &mut Tx<'_>,
    key: &AccessKey,
    session_id: &str,
    now: Timestamp,
    timing: Timing,
) -> Result<Session> {
    let key = tx.usable_key(key, now)?;
    let lease = timing.lease_until(now);
    let session = tx
        .session(session_id)?
        .filter(|s| s.key_id == key.key_id)
        .ok_or(Error::SessionNotFound)?;
    if !session.is_live_at(now) {
        return Err(tx.explain_not_live(&session, now));
    }
    tx.c.execute(
        "UPDATE sessions SET last_heartbeat = ?2, expires_at = MAX(expires_at, ?3) \
         WHERE session_id = ?1",
        params![session_id, now.0, tx.disk_lease(lease)],
    )?;
    Ok(Session {
        last_heartbeat: now,
        expires_at: lease,
        ..session
    })
}

/// Explains why a session is not live for this key (or that it is).
pub(super) fn explain_op(
    tx: &Tx<'_>,
    key: &AccessKey,
    session_id: &str,
    now: Timestamp,
) -> Result<Session> {
    let key = tx.usable_key(key, now)?;
    let session = tx
        .session(session_id)?
        .filter(|s| s.key_id == key.key_id)
        .ok_or(Error::SessionNotFound)?;
    if session.is_live_at(now) {
        Ok(session)
    } else {
        Err(tx.explain_not_live(&session, now))
    }
}

pub(super) fn end_op(
    tx: &mut Tx<'_>,
    key: &AccessKey,
    session_id: &str,
    now: Timestamp,
    actor: &Actor,
) -> Result<EndOutcome> {
    let key = tx.usable_key(key, now)?;
    let session = tx
        .session(session_id)?
        .filter(|s| s.key_id == key.key_id)
        .ok_or(Error::SessionNotFound)?;
    end_for(tx, session, EndReason::Ended, now, actor)
}

pub(super) fn key_status_op(
    tx: &Tx<'_>,
    key: &AccessKey,
    now: Timestamp,
) -> Result<(Key, Vec<Session>)> {
    let mut key = tx.usable_key(key, now)?;
    let mut live = tx.open_sessions_of(&key.key_id)?;
    live.retain(|s| s.is_live_at(now));
    key.live_sessions = live.len() as u32;
    Ok((key, live))
}

pub(super) fn create_key_op(
    tx: &mut Tx<'_>,
    new: &NewKey,
    access_key: &AccessKey,
    key_id: &str,
    now: Timestamp,
    actor: &Actor,
) -> Result<Key> {
    tx.c.execute(
        "INSERT INTO keys (key_id, key_hash, prefix, label, max_sessions, on_conflict, \
         expires_at, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
        params![
            key_id,
            access_key.hash().as_slice(),
            access_key.prefix(),
            new.label,
            new.max_sessions.unwrap_or(1),
            new.on_conflict.unwrap_or(ConflictPolicy::Takeover).as_str(),
            new.expires_at.map(|t| t.0),
            now.0,
        ],
    )?;
    let key =
        key_by_id(tx.c, key_id, now)?.ok_or_else(|| Error::Internal("new key vanished".into()))?;
    tx.record(EventRecord {
        at: now,
        event_type: EventType::KeyCreated,
        key_id: Some(key_id),
        session_id: None,
        device_name: None,
        actor,
        detail: Some(json!({
            "label": key.label,
            "max_sessions": key.max_sessions,
            "on_conflict": key.on_conflict,
            "expires_at": key.expires_at,
        })),
    })?;
    Ok(key)
}

/// The key as the caller should see it: live count from memory when the
/// server holds it.
fn fresh_key(tx: &Tx<'_>, key_id: &str, now: Timestamp) -> Result<Key> {
    let mut key =
        key_by_id(tx.c, key_id, now)?.ok_or_else(|| Error::Internal("key vanished".into()))?;
    if key.is_expired_at(now) {
        // Its sessions ended when it expired, recorded or not yet.
        key.live_sessions = 0;
    } else if tx.mem.is_some() {
        key.live_sessions = tx
            .open_sessions_of(key_id)?
            .iter()
            .filter(|s| s.is_live_at(now))
            .count() as u32;
    }
    Ok(key)
}

pub(super) fn update_key_op(
    tx: &mut Tx<'_>,
    key_ref: &str,
    patch: &KeyPatch,
    now: Timestamp,
    actor: &Actor,
) -> Result<KeyChange> {
    let before = resolve_key(tx.c, key_ref, now)?;
    if before.status == KeyStatus::Revoked {
        return Err(Error::Conflict(format!(
            "key {} is revoked; revocation is final",
            before.key_id
        )));
    }
    if patch.status == Some(KeyStatus::Revoked) {
        return Err(Error::InvalidRequest(
            "status: use the revoke action to revoke a key".into(),
        ));
    }
    // Record how the key's sessions stood before this change: a new expiry
    // or a resume must neither revive nor re-explain them.
    let mut ended = settle_before_change(tx, &before, now)?;
    let id = &before.key_id;
    let mut changes = serde_json::Map::new();
    if let Some(label) = &patch.label {
        tx.c.execute(
            "UPDATE keys SET label = ?2 WHERE key_id = ?1",
            params![id, label],
        )?;
        changes.insert("label".into(), json!(label));
    }
    if let Some(max) = patch.max_sessions {
        tx.c.execute(
            "UPDATE keys SET max_sessions = ?2 WHERE key_id = ?1",
            params![id, max],
        )?;
        changes.insert("max_sessions".into(), json!(max));
    }
    if let Some(policy) = patch.on_conflict {
        tx.c.execute(
            "UPDATE keys SET on_conflict = ?2 WHERE key_id = ?1",
            params![id, policy.as_str()],
        )?;
        changes.insert("on_conflict".into(), json!(policy));
    }
    if let Some(expires) = patch.expires_at {
        tx.c.execute(
            "UPDATE keys SET expires_at = ?2 WHERE key_id = ?1",
            params![id, expires.map(|t| t.0)],
        )?;
        changes.insert("expires_at".into(), json!(expires));
    }
    if let Some(status) = patch.status {
        tx.c.execute(
            "UPDATE keys SET status = ?2 WHERE key_id = ?1",
            params![id, status.as_str()],
        )?;
        changes.insert("status".into(), json!(status));
    }
    tx.c.execute(
        "UPDATE keys SET updated_at = ?2 WHERE key_id = ?1",
        params![id, now.0],
    )?;
    if let Some(expires) = patch.expires_at {
        let hash: Vec<u8> =
            tx.c.query_row("SELECT key_hash FROM keys WHERE key_id = ?1", [id], |r| {
                r.get(0)
            })?;
        if let Ok(hash) = <KeyHash>::try_from(hash.as_slice()) {
            tx.changes.push(Change::KeyExpiry {
                key_tag: key_tag(&hash),
                expires_at: expires.map_or(NEVER, |t| t.0),
            });
        }
    }
    let key =
        key_by_id(tx.c, id, now)?.ok_or_else(|| Error::Internal("updated key vanished".into()))?;
    tx.record(EventRecord {
        at: now,
        event_type: EventType::KeyUpdated,
        key_id: Some(&key.key_id),
        session_id: None,
        device_name: None,
        actor,
        detail: Some(serde_json::Value::Object(changes)),
    })?;

    // Sessions that no longer fit the key as it now is.
    let (_, live) = tx.settle_open_sessions(&key.key_id, now)?;
    let (cause, victims): (&str, Vec<Session>) = if key.status == KeyStatus::Suspended {
        ("key_suspended", live)
    } else if key.is_expired_at(now) {
        ("key_expired", live)
    } else {
        let excess = rules::excess_after_limit_change(&live, key.max_sessions, now);
        let victims = live
            .into_iter()
            .filter(|s| excess.contains(&s.session_id))
            .collect();
        ("seat_limit_lowered", victims)
    };
    ended.extend(tx.revoke_sessions(victims, now, actor, cause)?);
    let key = fresh_key(tx, &key.key_id, now)?;
    Ok(KeyChange { key, ended })
}

/// Settles a key's open sessions as they stood before a change to it:
/// the dead ones are recorded as they ended under the key as it was (so a
/// new, earlier expiry cannot rewrite how they ended), and if the key is
/// past its expiry the live ones end too, as the sweep would (revoked,
/// cause `key_expired`, by the server). Returns those.
fn settle_before_change(tx: &mut Tx<'_>, key: &Key, now: Timestamp) -> Result<Vec<Session>> {
    let (_, live) = tx.settle_open_sessions(&key.key_id, now)?;
    if !key.is_expired_at(now) {
        return Ok(Vec::new());
    }
    tx.revoke_sessions(live, now, &Actor::server(), "key_expired")
}

pub(super) fn revoke_key_op(
    tx: &mut Tx<'_>,
    key_ref: &str,
    now: Timestamp,
    actor: &Actor,
) -> Result<KeyChange> {
    let before = resolve_key(tx.c, key_ref, now)?;
    if before.status == KeyStatus::Revoked {
        return Ok(KeyChange {
            key: before,
            ended: vec![],
        });
    }
    let mut ended = settle_before_change(tx, &before, now)?;
    tx.c.execute(
        "UPDATE keys SET status = 'revoked', revoked_at = ?2, updated_at = ?2 WHERE key_id = ?1",
        params![before.key_id, now.0],
    )?;
    tx.record(EventRecord {
        at: now,
        event_type: EventType::KeyRevoked,
        key_id: Some(&before.key_id),
        session_id: None,
        device_name: None,
        actor,
        detail: None,
    })?;
    let (_, live) = tx.settle_open_sessions(&before.key_id, now)?;
    ended.extend(tx.revoke_sessions(live, now, actor, "key_revoked")?);
    let key = fresh_key(tx, &before.key_id, now)?;
    Ok(KeyChange { key, ended })
}

pub(super) fn get_key_op(tx: &Tx<'_>, key_ref: &str, now: Timestamp) -> Result<Key> {
    let key = resolve_key(tx.c, key_ref, now)?;
    fresh_key(tx, &key.key_id, now)
}

pub(super) fn list_keys_op(
    tx: &Tx<'_>,
    limit: u32,
    after: Option<&str>,
    now: Timestamp,
) -> Result<KeyPage> {
    let after_row: i64 = match after {
        None => 0,
        Some(id) => {
            tx.c.query_row("SELECT id FROM keys WHERE key_id = ?1", [id], |r| r.get(0))
                .optional()?
                .ok_or_else(|| Error::InvalidRequest(format!("after: no key with id {id}")))?
        }
    };
    let sql = format!(
        "SELECT {} FROM keys k WHERE k.id > :after ORDER BY k.id LIMIT :limit",
        key_columns()
    );
    let mut stmt = tx.c.prepare(&sql)?;
    let mut keys = stmt
        .query_map(
            named_params! {":after": after_row, ":limit": i64::from(limit) + 1, ":now": now.0},
            key_from_row,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let next_after = if keys.len() > limit as usize {
        keys.truncate(limit as usize);
        keys.last().map(|k| k.key_id.clone())
    } else {
        None
    };
    if tx.mem.is_some() {
        for k in &mut keys {
            if k.live_sessions > 0 {
                *k = fresh_key(tx, &k.key_id, now)?;
            }
        }
    }
    Ok(KeyPage { keys, next_after })
}

pub(super) fn search_keys_op(
    tx: &Tx<'_>,
    query: &str,
    limit: u32,
    offset: u64,
    now: Timestamp,
) -> Result<KeySearch> {
    let q = query.trim().to_lowercase();
    let bare = q.strip_prefix("ks_").unwrap_or(&q).to_owned();
    // substr/instr rather than LIKE: nothing in the query is a wildcard.
    const MATCH: &str = "(:q = '' OR instr(lower(IFNULL(k.label, '')), :q) > 0 \
         OR substr(lower(k.prefix), 4, length(:bare)) = :bare \
         OR substr(lower(k.key_id), 1, length(:q)) = :q)";
    let sql = format!(
        "SELECT {} FROM keys k WHERE {MATCH} ORDER BY k.id LIMIT :limit OFFSET :offset",
        key_columns()
    );
    let mut keys =
        tx.c.prepare(&sql)?
            .query_map(
                named_params! {
                    ":q": q, ":bare": bare, ":now": now.0,
                    ":limit": i64::from(limit),
                    ":offset": i64::try_from(offset).unwrap_or(i64::MAX),
                },
                key_from_row,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
    let matched: i64 = tx.c.query_row(
        &format!("SELECT COUNT(*) FROM keys k WHERE {MATCH}"),
        named_params! {":q": q, ":bare": bare},
        |r| r.get(0),
    )?;
    let total: i64 =
        tx.c.query_row("SELECT COUNT(*) FROM keys", [], |r| r.get(0))?;
    if tx.mem.is_some() {
        for k in &mut keys {
            if k.live_sessions > 0 {
                *k = fresh_key(tx, &k.key_id, now)?;
            }
        }
    }
    Ok(KeySearch {
        keys,
        matched: u64::try_from(matched).unwrap_or(0),
        total: u64::try_from(total).unwrap_or(0),
    })
}

/// Keys per status for the metrics gauge; a key past its `expires_at`
/// counts as `expired` whatever its stored status, except revoked.
pub(super) fn keys_by_status_op(
    c: &Connection,
    now: Timestamp,
) -> Result<Vec<(&'static str, u64)>> {
    let mut counts = vec![
        ("active", 0),
        ("suspended", 0),
        ("revoked", 0),
        ("expired", 0),
    ];
    let mut stmt = c.prepare_cached(
        "SELECT CASE WHEN status = 'revoked' THEN 'revoked' \
                     WHEN expires_at IS NOT NULL AND expires_at <= ?1 THEN 'expired' \
                     ELSE status END AS s, COUNT(*) FROM keys GROUP BY s",
    )?;
    let rows = stmt.query_map([now.0], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })?;
    for row in rows {
        let (status, n) = row?;
        if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == status) {
            slot.1 = u64::try_from(n).unwrap_or(0);
        }
    }
    Ok(counts)
}

/// Sessions live at `now` as the database sees them (the CLI's view; the
/// server counts from memory).
pub(super) fn count_live_op(c: &Connection, now: Timestamp) -> Result<u64> {
    let sql = format!(
        "SELECT COUNT(*) FROM sessions s JOIN keys k ON k.key_id = s.key_id \
         WHERE s.ended_at IS NULL AND {EFFECTIVE_EXPIRY} > ?1 \
         AND k.status = 'active' AND (k.expires_at IS NULL OR k.expires_at > ?1)"
    );
    let n: i64 = c.query_row(&sql, [now.0], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

pub(super) fn live_sessions_op(
    tx: &Tx<'_>,
    key_ref: Option<&str>,
    now: Timestamp,
) -> Result<Vec<Session>> {
    let key_id = match key_ref {
        Some(r) => Some(resolve_key(tx.c, r, now)?.key_id),
        None => None,
    };
    let sql = format!(
        "SELECT {} FROM sessions s JOIN keys k ON k.key_id = s.key_id \
         WHERE s.ended_at IS NULL AND {EFFECTIVE_EXPIRY} > :now \
         AND k.status = 'active' AND (k.expires_at IS NULL OR k.expires_at > :now) \
         AND (:key IS NULL OR s.key_id = :key)",
        session_columns()
    );
    let mut stmt = tx.c.prepare(&sql)?;
    let mut rows: Vec<Session> = stmt
        .query_map(
            named_params! {":now": now.0, ":key": key_id},
            session_from_row,
        )?
        .map(|r| r.map(|s| tx.overlay(s)))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.retain(|s| s.is_live_at(now));
    rows.sort_by(|a, b| {
        b.last_heartbeat
            .cmp(&a.last_heartbeat)
            .then_with(|| a.session_id.cmp(&b.session_id))
    });
    Ok(rows)
}

pub(super) fn kick_op(
    tx: &mut Tx<'_>,
    session_id: &str,
    now: Timestamp,
    actor: &Actor,
) -> Result<EndOutcome> {
    let session = tx
        .session(session_id)?
        .ok_or_else(|| Error::AdminSessionNotFound(crate::keys::redact_secret(session_id)))?;
    end_for(tx, session, EndReason::Revoked, now, actor)
}

pub(super) fn events_op(c: &Connection, filter: &EventFilter) -> Result<Vec<Event>> {
    let mut stmt = c.prepare(
        "SELECT e.id, e.at, e.type, e.key_id, k.prefix, e.session_id, e.device_name, \
         e.client_addr, e.detail FROM events e LEFT JOIN keys k ON k.key_id = e.key_id \
         WHERE (:key IS NULL OR e.key_id = :key) AND (:type IS NULL OR e.type = :type) \
         AND (:since IS NULL OR e.at >= :since) AND (:before IS NULL OR e.id < :before) \
         ORDER BY e.id DESC LIMIT :limit",
    )?;
    let rows = stmt
        .query_map(
            named_params! {
                ":key": filter.key_id,
                ":type": filter.event_type.map(EventType::as_str),
                ":since": filter.since.map(|t| t.0),
                ":before": filter.before_id,
                ":limit": filter.limit,
            },
            |row| {
                let kind: String = row.get(2)?;
                let detail: Option<String> = row.get(8)?;
                Ok(Event {
                    id: row.get(0)?,
                    at: Timestamp(row.get(1)?),
                    event_type: EventType::parse(&kind).unwrap_or(EventType::KeyUpdated),
                    key_id: row.get(3)?,
                    key_prefix: row.get(4)?,
                    session_id: row.get(5)?,
                    device_name: row.get(6)?,
                    client_addr: row.get(7)?,
                    detail: detail.and_then(|d| serde_json::from_str(&d).ok()),
                })
            },
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Records sessions that memory found expired: `(id, lease end seen)`.
/// Each is checked again here, since a start retry may have extended it
/// between the sweep's look and this write; one still live at `now` is
/// left alone.
pub(super) fn record_expired_op(
    tx: &mut Tx<'_>,
    due: &[(String, i64)],
    now: Timestamp,
) -> Result<Vec<Session>> {
    let mut out = Vec::with_capacity(due.len());
    for (id, _seen_end) in due {
        if let Some(s) = tx.session(id)? {
            if s.ended_at.is_none() && !s.is_live_at(now) {
                out.push(tx.record_expiry(s)?);
            }
        }
    }
    Ok(out)
}

/// Rows deleted per statement when pruning, so no single write holds the
/// writer for long.
const PRUNE_CHUNK: i64 = 2_000;

/// The rest of a sweep: ends live sessions of keys whose expiry passed,
/// prunes (a chunk of) history older than `history_days`, notes the server
/// alive. Returns (revoked, pruned sessions, pruned events, more to prune).
pub(super) fn sweep_rest_op(
    tx: &mut Tx<'_>,
    now: Timestamp,
    history_days: u32,
    mark_alive: bool,
) -> Result<(Vec<Session>, usize, usize, bool)> {
    let sql = format!(
        "SELECT {} FROM sessions s JOIN keys k ON k.key_id = s.key_id \
         WHERE s.ended_at IS NULL AND k.expires_at IS NOT NULL AND k.expires_at <= ?1 \
         AND k.status != 'revoked'",
        session_columns()
    );
    let of_expired_keys =
        tx.c.prepare_cached(&sql)?
            .query_map([now.0], session_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
    let of_expired_keys: Vec<Session> =
        of_expired_keys.into_iter().map(|s| tx.overlay(s)).collect();
    let revoked = tx.revoke_sessions(of_expired_keys, now, &Actor::server(), "key_expired")?;

    let cutoff = now.minus_secs(u64::from(history_days) * 86_400);
    let pruned_events =
        tx.c.prepare_cached(
            "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE at < ?1 LIMIT ?2)",
        )?
        .execute(params![cutoff.0, PRUNE_CHUNK])?;
    let pruned_sessions =
        tx.c.prepare_cached(
            "DELETE FROM sessions WHERE rowid IN (SELECT rowid FROM sessions \
         WHERE ended_at IS NOT NULL AND ended_at < ?1 LIMIT ?2)",
        )?
        .execute(params![cutoff.0, PRUNE_CHUNK])?;
    if mark_alive {
        tx.set_server_state(LAST_ALIVE, now.0)?;
    }
    let more = pruned_events as i64 == PRUNE_CHUNK || pruned_sessions as i64 == PRUNE_CHUNK;
    Ok((revoked, pruned_sessions, pruned_events, more))
}

/// A whole sweep on the database alone (the CLI's `keyseat sweep`).
pub(super) fn sweep_op(
    tx: &mut Tx<'_>,
    now: Timestamp,
    history_days: u32,
    mark_alive: bool,
) -> Result<SweepReport> {
    let sql = format!(
        "SELECT {} FROM sessions s JOIN keys k ON k.key_id = s.key_id \
         WHERE s.ended_at IS NULL AND {EFFECTIVE_EXPIRY} <= ?1",
        session_columns()
    );
    let due =
        tx.c.prepare(&sql)?
            .query_map([now.0], session_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
    let expired = due
        .into_iter()
        .map(|s| tx.record_expiry(s))
        .collect::<Result<Vec<_>>>()?;
    let mut report = SweepReport {
        expired,
        ..Default::default()
    };
    loop {
        let (revoked, sessions, events, more) = sweep_rest_op(tx, now, history_days, mark_alive)?;
        report.revoked.extend(revoked);
        report.pruned_sessions += sessions;
        report.pruned_events += events;
        if !more {
            return Ok(report);
        }
    }
}

/// Start-up recovery: records sessions that expired while the server was
/// still up, and gives every other open session a lease floor of one full
/// timeout from `ready_at` (one row in `server_state`, not a rewrite of
/// every session).
pub(super) fn resume_op(
    tx: &mut Tx<'_>,
    ready_at: Timestamp,
    timing: Timing,
) -> Result<ResumeReport> {
    // A clean stop swept everything that had expired; after a crash, the
    // few sessions that expired since the last sweep are resumed too:
    // generous, never early.
    let resumed: i64 = tx.c.query_row(
        "SELECT COUNT(*) FROM sessions WHERE ended_at IS NULL",
        [],
        |r| r.get(0),
    )?;
    let floor = rules::lease_after_restart(Timestamp(i64::MIN), ready_at, timing);
    // Not the later of this floor and the last run's: a floor (or a lease,
    // or a heartbeat) later than this one was written while the wall clock
    // was ahead of today's, and must not hold a seat past one timeout from
    // readiness.
    tx.set_server_state(LEASE_FLOOR, floor.0)?;
    tx.c.execute(
        // Only sessions whose heartbeat is later than now: the on-disk
        // lease of every other session is at most its heartbeat plus the
        // span, which the floor's rule already bounds.
        "UPDATE sessions SET expires_at = MIN(expires_at, ?1), last_heartbeat = ?2 \
         WHERE ended_at IS NULL AND last_heartbeat > ?2",
        params![floor.0, ready_at.0],
    )?;
    // Twice the persistence interval: a flush that fails or runs late
    // must not make the disk's lease fall behind the true one.
    let span = Timestamp(0)
        .plus_secs(timing.session_timeout_secs)
        .plus_secs(tx.slack_secs.saturating_mul(2));
    let old_span = tx.server_state(LEASE_SPAN)?.unwrap_or(0);
    tx.set_server_state(LEASE_SPAN, span.0.max(old_span))?;
    tx.set_server_state(LAST_ALIVE, ready_at.0)?;
    Ok(ResumeReport {
        resumed: resumed as usize,
    })
}

/// Writes heartbeat times to disk: `(session id, heartbeat)`. Only
/// `last_heartbeat` changes (no index to update); the lease it implies is
/// derived on read (see `EFFECTIVE_EXPIRY`).
pub(super) fn flush_op(tx: &mut Tx<'_>, beats: &[(String, i64)]) -> Result<usize> {
    let mut stmt = tx.c.prepare_cached(
        "UPDATE sessions SET last_heartbeat = MAX(last_heartbeat, ?2) \
         WHERE session_id = ?1 AND ended_at IS NULL",
    )?;
    let mut n = 0;
    for (id, at) in beats {
        n += stmt.execute(params![id, at])?;
    }
    Ok(n)
}

/// After a gap in the server's progress: every open session's lease on
/// disk ends no earlier than `floor` (memory holds the exact leases).
pub(super) fn raise_lease_floor_op(tx: &mut Tx<'_>, floor: Timestamp) -> Result<()> {
    let old = tx.server_state(LEASE_FLOOR)?.unwrap_or(i64::MIN);
    tx.set_server_state(LEASE_FLOOR, floor.0.max(old))
}

pub(super) fn mark_alive_op(tx: &Tx<'_>, now: Timestamp) -> Result<()> {
    tx.set_server_state(LAST_ALIVE, now.0)
}

/// Ends a session for `reason` if it is live; otherwise says how it ended
/// (recording an unrecorded expiry on the way).
fn end_for(
    tx: &mut Tx<'_>,
    session: Session,
    reason: EndReason,
    now: Timestamp,
    actor: &Actor,
) -> Result<EndOutcome> {
    // A session of a key past its expiry ended then, recorded or not.
    let key_expired = tx.key_expiry(&session.key_id)?.is_some_and(|k| k <= now.0);
    if session.is_live_at(now) && !key_expired {
        let detail = (reason == EndReason::Revoked).then(|| json!({ "cause": "kicked" }));
        let ended = tx.end_open_session(session, reason, now, None, actor, detail)?;
        return Ok(EndOutcome::Ended(Box::new(ended)));
    }
    if session.ended_at.is_none() {
        let ended = if session.is_live_at(now) {
            tx.revoke_sessions(vec![session], now, &Actor::server(), "key_expired")?
                .remove(0)
        } else {
            tx.record_expiry(session)?
        };
        return Ok(EndOutcome::AlreadyEnded(
            ended.end_reason.unwrap_or(EndReason::Expired),
        ));
    }
    Ok(EndOutcome::AlreadyEnded(
        session.end_reason.unwrap_or(EndReason::Expired),
    ))
}

// ---------------------------------------------------------------------------
// The direct store (CLI): each call its own transaction

impl Storage for SqliteStore {
    fn check_health(&self) -> Result<()> {
        self.read(|c| {
            c.query_row("SELECT COUNT(*) FROM server_state", [], |r| {
                r.get::<_, i64>(0)
            })?;
            Ok(())
        })
    }

    fn start_session(
        &self,
        req: &StartRequest,
        now: Timestamp,
        timing: Timing,
    ) -> Result<StartOutcome> {
        self.write(|c| start_op(&mut Tx::direct(c), req, now, timing))?
    }

    fn heartbeat(
        &self,
        key: &AccessKey,
        session_id: &str,
        now: Timestamp,
        timing: Timing,
    ) -> Result<Session> {
        self.write(|c| heartbeat_op(&mut Tx::direct(c), key, session_id, now, timing))
    }

    fn end_session(
        &self,
        key: &AccessKey,
        session_id: &str,
        now: Timestamp,
        actor: &Actor,
    ) -> Result<EndOutcome> {
        self.write(|c| end_op(&mut Tx::direct(c), key, session_id, now, actor))
    }

    fn key_status(&self, key: &AccessKey, now: Timestamp) -> Result<(Key, Vec<Session>)> {
        self.read(|c| key_status_op(&Tx::direct(c), key, now))
    }

    fn create_key(&self, new: &NewKey, now: Timestamp, actor: &Actor) -> Result<CreatedKey> {
        let access_key = AccessKey::generate();
        let key_id = new_key_id();
        let key = self
            .write(|c| create_key_op(&mut Tx::direct(c), new, &access_key, &key_id, now, actor))?;
        Ok(CreatedKey { key, access_key })
    }

    fn list_keys(&self, limit: u32, after: Option<&str>, now: Timestamp) -> Result<KeyPage> {
        self.read(|c| list_keys_op(&Tx::direct(c), limit, after, now))
    }

    fn search_keys(
        &self,
        query: &str,
        limit: u32,
        offset: u64,
        now: Timestamp,
    ) -> Result<KeySearch> {
        self.read(|c| search_keys_op(&Tx::direct(c), query, limit, offset, now))
    }

    fn get_key(&self, key_ref: &str, now: Timestamp) -> Result<Key> {
        self.read(|c| get_key_op(&Tx::direct(c), key_ref, now))
    }

    fn update_key(
        &self,
        key_ref: &str,
        patch: &KeyPatch,
        now: Timestamp,
        actor: &Actor,
    ) -> Result<KeyChange> {
        self.write(|c| update_key_op(&mut Tx::direct(c), key_ref, patch, now, actor))
    }

    fn revoke_key(&self, key_ref: &str, now: Timestamp, actor: &Actor) -> Result<KeyChange> {
        self.write(|c| revoke_key_op(&mut Tx::direct(c), key_ref, now, actor))
    }

    fn live_sessions(&self, key_ref: Option<&str>, now: Timestamp) -> Result<Vec<Session>> {
        self.read(|c| live_sessions_op(&Tx::direct(c), key_ref, now))
    }

    fn metrics_reading(&self, now: Timestamp) -> Result<StateReading> {
        self.read(|c| {
            Ok(StateReading {
                live_sessions: count_live_op(c, now)?,
                keys_by_status: keys_by_status_op(c, now)?,
            })
        })
    }

    fn kick_session(&self, session_id: &str, now: Timestamp, actor: &Actor) -> Result<EndOutcome> {
        self.write(|c| kick_op(&mut Tx::direct(c), session_id, now, actor))
    }

    fn events(&self, filter: &EventFilter) -> Result<Vec<Event>> {
        self.read(|c| events_op(c, filter))
    }

    fn event_counts(
        &self,
        since: Timestamp,
        bucket_secs: u64,
    ) -> Result<Vec<crate::report::EventCount>> {
        self.read(|c| event_counts_op(c, since, bucket_secs))
    }

    fn sharing_input(&self, since: Timestamp) -> Result<crate::report::SharingInput> {
        self.read(|c| sharing_input_op(c, since))
    }

    fn sweep(&self, now: Timestamp, history_days: u32, mark_alive: bool) -> Result<SweepReport> {
        self.write(|c| sweep_op(&mut Tx::direct(c), now, history_days, mark_alive))
    }

    fn resume_after_restart(&self, ready_at: Timestamp, timing: Timing) -> Result<ResumeReport> {
        self.write(|c| resume_op(&mut Tx::direct(c), ready_at, timing))
    }

    fn mark_stopped(&self, now: Timestamp) -> Result<()> {
        self.write(|c| mark_alive_op(&Tx::direct(c), now))?;
        self.read(|c| {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
    }
}

// ---------------------------------------------------------------------------
// Reports (the dashboard's overview and the sharing report)

/// Session events since `since`, counted per type and bucket.
pub(super) fn event_counts_op(
    c: &Connection,
    since: Timestamp,
    bucket_secs: u64,
) -> Result<Vec<crate::report::EventCount>> {
    let bucket_ms = i64::try_from(bucket_secs.max(1))
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000);
    let mut stmt = c.prepare(
        "SELECT type, (at - :since) / :bucket, COUNT(*) FROM events \
         WHERE at >= :since AND type IN ('session_started', 'session_superseded', 'session_expired') \
         GROUP BY 1, 2",
    )?;
    let rows = stmt
        .query_map(
            named_params! {":since": since.0, ":bucket": bucket_ms},
            |row| {
                let kind: String = row.get(0)?;
                let bucket: i64 = row.get(1)?;
                let count: i64 = row.get(2)?;
                Ok((kind, bucket, count))
            },
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows
        .into_iter()
        .filter_map(|(kind, bucket, count)| {
            Some(crate::report::EventCount {
                event_type: EventType::parse(&kind)?,
                bucket: u32::try_from(bucket).ok()?,
                count: u64::try_from(count).ok()?,
            })
        })
        .collect())
}

/// Sessions started, ended or still open since `since`, grouped per key and
/// device; and every takeover since then with both devices.
pub(super) fn sharing_input_op(
    c: &Connection,
    since: Timestamp,
) -> Result<crate::report::SharingInput> {
    use crate::report::{Device, DeviceUse, KeyInfo, SharingInput, Takeover};
    let mut input = SharingInput::default();
    let mut stmt = c.prepare(
        "SELECT s.key_id, s.fingerprint, s.device_name, COUNT(*), \
         k.prefix, k.label, k.max_sessions FROM sessions s JOIN keys k ON k.key_id = s.key_id \
         WHERE s.started_at >= :since OR s.ended_at IS NULL OR s.ended_at >= :since \
         GROUP BY s.key_id, s.fingerprint, s.device_name",
    )?;
    let mut keys = std::collections::BTreeMap::new();
    let mut rows = stmt.query(named_params! {":since": since.0})?;
    while let Some(row) = rows.next()? {
        let key_id: String = row.get(0)?;
        let sessions: i64 = row.get(3)?;
        keys.entry(key_id.clone()).or_insert(KeyInfo {
            key_id: key_id.clone(),
            prefix: row.get(4)?,
            label: row.get(5)?,
            max_sessions: row.get(6)?,
        });
        input.devices.push(DeviceUse {
            key_id,
            device: Device {
                fingerprint: row.get(1)?,
                name: row.get(2)?,
            },
            sessions: u64::try_from(sessions).unwrap_or(0),
        });
    }
    input.keys = keys.into_values().collect();
    let mut stmt = c.prepare(
        "SELECT v.key_id, v.ended_at, v.fingerprint, v.device_name, w.fingerprint, w.device_name \
         FROM sessions v LEFT JOIN sessions w ON w.session_id = v.superseded_by \
         WHERE v.end_reason = 'superseded' AND v.ended_at >= :since",
    )?;
    input.takeovers = stmt
        .query_map(named_params! {":since": since.0}, |row| {
            Ok(Takeover {
                key_id: row.get(0)?,
                at: Timestamp(row.get(1)?),
                from: Device {
                    fingerprint: row.get(2)?,
                    name: row.get(3)?,
                },
                to: Device {
                    fingerprint: row.get(4)?,
                    name: row.get(5)?,
                },
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(input)
}
