//! What the server's memory reads from the disk: every open session at
//! start-up, and, when another process wrote the file, the changes it
//! logged. Reading them from the audit log rather than rescanning sessions
//! keeps a reconcile proportional to what changed.

use rusqlite::Connection;

use crate::error::{Error, Result};
use crate::keys::key_tag;
use crate::keys::KeyHash;
use crate::store::memory::{LiveSession, NEVER};

/// Streams every open session to `f` as memory keeps it (start-up), with
/// its key's tag and expiry; the lease is left for the caller to set.
pub(in crate::store) fn load_open_sessions(
    conn: &Connection,
    mut f: impl FnMut(String, LiveSession),
) -> Result<usize> {
    let mut stmt = conn.prepare(
        "SELECT s.session_id, k.key_hash, k.expires_at, s.fence, s.last_heartbeat, \
         s.borrowed_until FROM sessions s JOIN keys k ON k.key_id = s.key_id WHERE s.ended_at IS NULL",
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
                borrowed_until: r.get::<_, Option<i64>>(5)?.unwrap_or(0),
                dirty: false,
            },
        );
        n += 1;
    }
    Ok(n)
}

/// Number of open sessions.
pub(in crate::store) fn count_open(conn: &Connection) -> Result<usize> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sessions WHERE ended_at IS NULL",
        [],
        |r| r.get(0),
    )?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// The newest event id (0 if none).
pub(in crate::store) fn last_event_id(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT IFNULL(MAX(id), 0) FROM events", [], |r| r.get(0))?)
}

/// What memory must learn from the events after `after_id`: sessions that
/// ended, and keys whose expiry may have changed.
pub(in crate::store) struct LoggedChanges {
    /// Sessions that ended.
    pub ended: Vec<String>,
    /// (key tag, expiry) of keys that changed.
    pub keys: Vec<(u64, i64)>,
    /// The newest event id read.
    pub last_id: i64,
}

/// Reads the events after `after_id` (another process's writes, and our
/// own, which are harmless to apply twice).
pub(in crate::store) fn logged_changes_since(
    conn: &Connection,
    after_id: i64,
) -> Result<LoggedChanges> {
    let mut stmt = conn.prepare(
        "SELECT e.id, e.type, e.session_id, k.key_hash, k.expires_at, \
         e.detail LIKE '%\"expires_at\"%' FROM events e \
         LEFT JOIN keys k ON k.key_id = e.key_id WHERE e.id > ?1 ORDER BY e.id",
    )?;
    let mut rows = stmt.query([after_id])?;
    let mut logged = LoggedChanges {
        ended: Vec::new(),
        keys: Vec::new(),
        last_id: after_id,
    };
    while let Some(r) = rows.next()? {
        logged.last_id = r.get(0)?;
        let kind: String = r.get(1)?;
        match kind.as_str() {
            "session_ended" | "session_superseded" | "session_expired" | "session_revoked" => {
                if let Some(id) = r.get::<_, Option<String>>(2)? {
                    logged.ended.push(id);
                }
            }
            "key_updated" if r.get::<_, Option<bool>>(5)?.unwrap_or(false) => {
                let hash: Option<Vec<u8>> = r.get(3)?;
                if let Some(hash) = hash.and_then(|h| <KeyHash>::try_from(h.as_slice()).ok()) {
                    let expires: Option<i64> = r.get(4)?;
                    logged.keys.push((key_tag(&hash), expires.unwrap_or(NEVER)));
                }
            }
            _ => {}
        }
    }
    Ok(logged)
}
