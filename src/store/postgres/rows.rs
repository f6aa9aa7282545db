//! The SQL shape of keys and sessions on PostgreSQL: the columns read,
//! their mapping to the model, the database's clock, and the lookups every
//! operation starts from. The columns come in the same order as on SQLite
//! (`store/sqlite/rows.rs`), so the two read alike.
//!
//! Every query that asks "is it live?" takes the lease time as `$1` and
//! asks it through [`effective_expiry`].

use deadpool_postgres::Transaction;
use tokio_postgres::Row;

use crate::clock::Timestamp;
use crate::error::Result;
use crate::keys::KeyHash;
use crate::model::{ConflictPolicy, EndReason, Key, KeyStatus, Session};
use crate::store::key_ref::{ambiguous_prefix, KeyRef};

/// The database's clock in Unix milliseconds: the only clock that decides
/// liveness when several servers share the database (theirs may differ).
pub(super) const DB_NOW: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

/// How long no server may have marked itself alive (by the database's
/// clock) before the service counts as out: servers mark about once a
/// second, so a few seconds without a mark is an outage, not jitter.
pub(super) const OUTAGE_MS: i64 = 5_000;

/// Whether the service is out, as the database sees it: no server has
/// marked itself alive for [`OUTAGE_MS`], or none has since the database
/// itself last started (it was stopped or crashed, for however short a
/// time, and no server has been back since).
pub(super) fn service_out() -> String {
    format!(
        "(COALESCE((SELECT MAX(alive_at) FROM server_marks), 0) \
           < GREATEST({DB_NOW} - {OUTAGE_MS}, \
                      (EXTRACT(EPOCH FROM pg_postmaster_start_time()) * 1000)::BIGINT))"
    )
}

/// A session's lease end as every query sees it, with the lease time in
/// `$1`: its own `expires_at`, or the floor every open session got after
/// the last outage, whichever is later. And while the service is out
/// ([`service_out`]), every open session is live:
/// the first server back raises the floor, so that a session is never
/// found dead for time during which no server could hear it (the restart
/// rule, applied to an outage of the database or of every server).
pub(super) fn effective_expiry() -> String {
    effective_expiry_at("$1::BIGINT")
}

/// [`effective_expiry`] with the lease time given by an SQL expression.
pub(super) fn effective_expiry_at(now: &str) -> String {
    format!(
        "GREATEST(s.expires_at, \
           COALESCE((SELECT value FROM server_state WHERE name = 'lease_floor'), 0), \
           CASE WHEN {out} THEN {now} + 1 ELSE 0 END)",
        out = service_out()
    )
}

/// The columns [`key_from_row`] reads, with the live count at `$1`.
pub(super) fn key_columns() -> String {
    format!(
        "k.key_id, k.prefix, k.label, k.max_sessions, k.on_conflict, k.status, \
         k.expires_at, k.created_at, k.updated_at, k.revoked_at, \
         (SELECT COUNT(*) FROM sessions s WHERE s.key_id = k.key_id AND s.ended_at IS NULL \
            AND {} > $1 AND (k.expires_at IS NULL OR k.expires_at > $1)), \
         k.max_borrow_hours",
        effective_expiry()
    )
}

/// A key from the columns of [`key_columns`].
pub(super) fn key_from_row(row: &Row) -> Key {
    let policy: String = row.get(4);
    let status: String = row.get(5);
    Key {
        key_id: row.get(0),
        prefix: row.get(1),
        label: row.get(2),
        max_sessions: u32::try_from(row.get::<_, i32>(3)).unwrap_or(1),
        on_conflict: ConflictPolicy::parse(&policy).unwrap_or(ConflictPolicy::Takeover),
        status: KeyStatus::parse(&status).unwrap_or(KeyStatus::Suspended),
        expires_at: row.get::<_, Option<i64>>(6).map(Timestamp),
        created_at: Timestamp(row.get(7)),
        updated_at: Timestamp(row.get(8)),
        revoked_at: row.get::<_, Option<i64>>(9).map(Timestamp),
        live_sessions: u32::try_from(row.get::<_, i64>(10)).unwrap_or(u32::MAX),
        max_borrow_hours: u32::try_from(row.get::<_, i32>(11)).unwrap_or(0),
    }
}

/// The columns [`session_from_row`] reads, the lease at `$1`.
pub(super) fn session_columns() -> String {
    format!(
        "s.session_id, s.key_id, k.prefix, s.fence, s.device_name, \
         s.fingerprint, s.client_addr, s.started_at, s.last_heartbeat, {}, \
         s.ended_at, s.end_reason, s.superseded_by, s.borrowed_until",
        effective_expiry()
    )
}

/// A session from the columns of [`session_columns`].
pub(super) fn session_from_row(row: &Row) -> Session {
    let reason: Option<String> = row.get(11);
    Session {
        session_id: row.get(0),
        key_id: row.get(1),
        key_prefix: row.get(2),
        fence: row.get(3),
        device_name: row.get(4),
        fingerprint: row.get(5),
        client_addr: row.get(6),
        started_at: Timestamp(row.get(7)),
        last_heartbeat: Timestamp(row.get(8)),
        expires_at: Timestamp(row.get(9)),
        ended_at: row.get::<_, Option<i64>>(10).map(Timestamp),
        end_reason: reason.as_deref().and_then(EndReason::parse),
        superseded_by: row.get(12),
        borrowed_until: row.get::<_, Option<i64>>(13).map(Timestamp),
    }
}

/// Keys matching `filter` (SQL on `k`, parameters from `$2`).
async fn keys_where(
    tx: &Transaction<'_>,
    filter: &str,
    now: Timestamp,
    args: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    lock: bool,
) -> Result<Vec<Key>> {
    let sql = format!(
        "SELECT {} FROM keys k WHERE {filter}{}",
        key_columns(),
        if lock { " FOR UPDATE OF k" } else { "" }
    );
    let stmt = tx.prepare_cached(&sql).await?;
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&now.0];
    params.extend_from_slice(args);
    Ok(tx
        .query(&stmt, &params)
        .await?
        .iter()
        .map(key_from_row)
        .collect())
}

/// The key with this secret's hash; with `lock`, its row is locked for
/// the transaction (starts and changes of one key take turns on it).
pub(super) async fn key_by_hash(
    tx: &Transaction<'_>,
    hash: &KeyHash,
    now: Timestamp,
    lock: bool,
) -> Result<Option<Key>> {
    let hash: &[u8] = hash;
    Ok(keys_where(tx, "k.key_hash = $2", now, &[&hash], lock)
        .await?
        .pop())
}

/// The key with this id (locked with `lock`).
pub(super) async fn key_by_id(
    tx: &Transaction<'_>,
    key_id: &str,
    now: Timestamp,
    lock: bool,
) -> Result<Option<Key>> {
    Ok(keys_where(tx, "k.key_id = $2", now, &[&key_id], lock)
        .await?
        .pop())
}

/// Resolves an operator's reference to a key (see [`KeyRef`]), locked.
pub(super) async fn resolve_key(
    tx: &Transaction<'_>,
    key_ref: &str,
    now: Timestamp,
) -> Result<Key> {
    if let Some(key) = key_by_id(tx, key_ref.trim(), now, true).await? {
        return Ok(key);
    }
    match KeyRef::read(key_ref) {
        KeyRef::Hash { hash, missing } => key_by_hash(tx, &hash, now, true).await?.ok_or(missing),
        KeyRef::Prefix { prefix, missing } => {
            let mut found = keys_where(tx, "k.prefix = $2 LIMIT 2", now, &[&prefix], false).await?;
            match found.len() {
                1 => Ok(key_by_id(tx, &found.remove(0).key_id, now, true)
                    .await?
                    .ok_or(missing)?),
                0 => Err(missing),
                _ => Err(ambiguous_prefix(&prefix)),
            }
        }
        KeyRef::Missing(missing) => Err(missing),
    }
}

/// Sessions matching `filter` (SQL on `s` and `k`, parameters from `$2`).
pub(super) async fn sessions_where(
    tx: &Transaction<'_>,
    filter: &str,
    now: Timestamp,
    args: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<Session>> {
    let sql = format!(
        "SELECT {} FROM sessions s JOIN keys k ON k.key_id = s.key_id WHERE {filter}",
        session_columns()
    );
    let stmt = tx.prepare_cached(&sql).await?;
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&now.0];
    params.extend_from_slice(args);
    Ok(tx
        .query(&stmt, &params)
        .await?
        .iter()
        .map(session_from_row)
        .collect())
}

/// A session by id.
pub(super) async fn session_row(
    tx: &Transaction<'_>,
    id: &str,
    now: Timestamp,
) -> Result<Option<Session>> {
    Ok(sessions_where(tx, "s.session_id = $2", now, &[&id])
        .await?
        .pop())
}

/// A session by id, its row locked.
pub(super) async fn lock_session(
    tx: &Transaction<'_>,
    id: &str,
    now: Timestamp,
) -> Result<Option<Session>> {
    Ok(
        sessions_where(tx, "s.session_id = $2 FOR UPDATE OF s", now, &[&id])
            .await?
            .pop(),
    )
}

/// A key's sessions not recorded as ended, oldest fence first, their rows
/// locked: a heartbeat on one of them waits for this transaction, then
/// sees what it decided.
pub(super) async fn lock_open_sessions(
    tx: &Transaction<'_>,
    key_id: &str,
    now: Timestamp,
) -> Result<Vec<Session>> {
    sessions_where(
        tx,
        "s.key_id = $2 AND s.ended_at IS NULL ORDER BY s.fence FOR UPDATE OF s",
        now,
        &[&key_id],
    )
    .await
}
