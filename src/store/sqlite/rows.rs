//! The SQL shape of keys and sessions: the columns read, their mapping to
//! the model, and the lookups every operation starts from. Kept apart so
//! that the lease a row implies on disk (`EFFECTIVE_EXPIRY`) is written
//! once, and every query that asks "is it live?" asks it the same way.

use rusqlite::{named_params, Connection, OptionalExtension, Row};

use crate::clock::Timestamp;
use crate::error::Result;
use crate::model::{ConflictPolicy, EndReason, Key, KeyStatus, Session};
use crate::store::key_ref::{ambiguous_prefix, KeyRef};

/// A session's effective lease end on disk: its own `expires_at`, or the
/// lease floor every session got at the last restart, whichever is later.
/// (The floor spares a restart from rewriting every open session.)
///
/// The server writes heartbeat times lazily and only `last_heartbeat` (no
/// index to update), so the lease a heartbeat implies is added here: the
/// last heartbeat on disk plus `lease_span` (timeout + persistence
/// interval, recorded by the server at start-up), an upper bound of the
/// true lease.
pub(in crate::store) const EFFECTIVE_EXPIRY: &str = "MAX(s.expires_at, \
     s.last_heartbeat + IFNULL((SELECT value FROM server_state WHERE name = 'lease_span'), 0), \
     IFNULL((SELECT value FROM server_state WHERE name = 'lease_floor'), 0))";

/// The columns [`key_from_row`] reads, with the live count at `:now`.
pub(in crate::store) fn key_columns() -> String {
    format!(
        "k.key_id, k.prefix, k.label, k.max_sessions, k.on_conflict, k.status, \
         k.expires_at, k.created_at, k.updated_at, k.revoked_at, \
         (SELECT COUNT(*) FROM sessions s WHERE s.key_id = k.key_id AND s.ended_at IS NULL \
            AND {EFFECTIVE_EXPIRY} > :now \
            AND (k.expires_at IS NULL OR k.expires_at > :now)), \
         k.max_borrow_hours"
    )
}

fn opt_ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(Timestamp)
}

/// A key from the columns of [`key_columns`].
pub(in crate::store) fn key_from_row(row: &Row<'_>) -> rusqlite::Result<Key> {
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
        max_borrow_hours: row.get(11)?,
    })
}

/// The columns [`session_from_row`] reads, the lease as on disk.
pub(in crate::store) fn session_columns() -> String {
    format!(
        "s.session_id, s.key_id, k.prefix, s.fence, s.device_name, \
         s.fingerprint, s.client_addr, s.started_at, s.last_heartbeat, {EFFECTIVE_EXPIRY}, \
         s.ended_at, s.end_reason, s.superseded_by, s.borrowed_until"
    )
}

/// A session from the columns of [`session_columns`].
pub(in crate::store) fn session_from_row(row: &Row<'_>) -> rusqlite::Result<Session> {
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
        borrowed_until: opt_ts(row.get(13)?),
    })
}

/// The key with this secret's hash.
pub(in crate::store) fn key_by_hash(
    conn: &Connection,
    hash: &[u8],
    now: Timestamp,
) -> Result<Option<Key>> {
    let sql = format!(
        "SELECT {} FROM keys k WHERE k.key_hash = :hash",
        key_columns()
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(named_params! {":hash": hash, ":now": now.0}, key_from_row)
        .optional()?)
}

/// The key with this id.
pub(in crate::store) fn key_by_id(
    conn: &Connection,
    key_id: &str,
    now: Timestamp,
) -> Result<Option<Key>> {
    let sql = format!("SELECT {} FROM keys k WHERE k.key_id = :id", key_columns());
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(named_params! {":id": key_id, ":now": now.0}, key_from_row)
        .optional()?)
}

/// Resolves an operator's reference to a key (see [`KeyRef`]).
pub(in crate::store) fn resolve_key(
    conn: &Connection,
    key_ref: &str,
    now: Timestamp,
) -> Result<Key> {
    if let Some(key) = key_by_id(conn, key_ref.trim(), now)? {
        return Ok(key);
    }
    match KeyRef::read(key_ref) {
        KeyRef::Hash { hash, missing } => key_by_hash(conn, &hash, now)?.ok_or(missing),
        KeyRef::Prefix { prefix, missing } => {
            let sql = format!(
                "SELECT {} FROM keys k WHERE k.prefix = :prefix LIMIT 2",
                key_columns()
            );
            let mut stmt = conn.prepare(&sql)?;
            let mut found = stmt
                .query_map(
                    named_params! {":prefix": prefix, ":now": now.0},
                    key_from_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            match found.len() {
                1 => Ok(found.remove(0)),
                0 => Err(missing),
                _ => Err(ambiguous_prefix(&prefix)),
            }
        }
        KeyRef::Missing(missing) => Err(missing),
    }
}

/// A session by id, as on disk.
pub(in crate::store) fn session_row(conn: &Connection, id: &str) -> Result<Option<Session>> {
    let sql = format!(
        "SELECT {} FROM sessions s JOIN keys k ON k.key_id = s.key_id WHERE s.session_id = ?1",
        session_columns()
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([id], session_from_row)
        .optional()?)
}

/// A key's sessions not recorded as ended, as on disk, oldest fence first.
pub(in crate::store) fn open_session_rows(conn: &Connection, key_id: &str) -> Result<Vec<Session>> {
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
