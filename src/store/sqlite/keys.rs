//! The operations on keys: create, change, revoke, and the reads of them.
//! A change first settles the key's sessions as they stood (so it can
//! neither revive nor re-explain them), then applies the patch, then ends
//! the sessions the rules say no longer fit.

use rusqlite::{named_params, params, OptionalExtension};
use serde_json::json;

use super::rows::{key_by_id, key_columns, key_from_row, resolve_key};
use super::unit_of_work::{EventRecord, UnitOfWork};
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::keys::key_tag;
use crate::keys::{AccessKey, KeyHash};
use crate::model::{Actor, EventType, Key, Session};
use crate::rules;
use crate::store::memory::{Change, NEVER};
use crate::store::{records, KeyChange, KeyPage, KeyPatch, KeySearch, NewKey};

/// Stores a new key with its hashed secret.
pub(in crate::store) fn create(
    work: &mut UnitOfWork<'_>,
    new: &NewKey,
    access_key: &AccessKey,
    key_id: &str,
    now: Timestamp,
    actor: &Actor,
) -> Result<Key> {
    let (max_sessions, on_conflict) = rules::new_key_terms(new.max_sessions, new.on_conflict);
    work.conn.execute(
        "INSERT INTO keys (key_id, key_hash, prefix, label, max_sessions, on_conflict, \
         expires_at, created_at, updated_at, max_borrow_hours) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)",
        params![
            key_id,
            access_key.hash().as_slice(),
            access_key.prefix(),
            new.label,
            max_sessions,
            on_conflict.as_str(),
            new.expires_at.map(|t| t.0),
            now.0,
            new.max_borrow_hours.unwrap_or(0),
        ],
    )?;
    let key = key_by_id(work.conn, key_id, now)?
        .ok_or_else(|| Error::Internal("new key vanished".into()))?;
    work.record(EventRecord {
        at: now,
        event_type: EventType::KeyCreated,
        key_id: Some(key_id),
        session_id: None,
        device_name: None,
        actor,
        detail: Some(records::key_created_detail(&key)),
    })?;
    Ok(key)
}

/// The key as the caller should see it: seats in use counted by the rules
/// over the sessions as the unit of work sees them (with memory's exact
/// leases when the server holds them).
fn fresh_key(work: &UnitOfWork<'_>, key_id: &str, now: Timestamp) -> Result<Key> {
    let mut key =
        key_by_id(work.conn, key_id, now)?.ok_or_else(|| Error::Internal("key vanished".into()))?;
    key.live_sessions = rules::seats_in_use(&key, &work.open_sessions_of(key_id)?, now);
    Ok(key)
}

/// Applies a patch to a key, then ends the sessions that no longer fit.
pub(in crate::store) fn update(
    work: &mut UnitOfWork<'_>,
    key_ref: &str,
    patch: &KeyPatch,
    now: Timestamp,
    actor: &Actor,
) -> Result<KeyChange> {
    let before = resolve_key(work.conn, key_ref, now)?;
    rules::check_key_change(&before, patch.status)?;
    // Record how the key's sessions stood before this change: a new expiry
    // or a resume must neither revive nor re-explain them.
    let mut ended = settle_before_change(work, &before, now)?;
    let id = &before.key_id;
    let mut changes = serde_json::Map::new();
    if let Some(label) = &patch.label {
        work.conn.execute(
            "UPDATE keys SET label = ?2 WHERE key_id = ?1",
            params![id, label],
        )?;
        changes.insert("label".into(), json!(label));
    }
    if let Some(max) = patch.max_sessions {
        work.conn.execute(
            "UPDATE keys SET max_sessions = ?2 WHERE key_id = ?1",
            params![id, max],
        )?;
        changes.insert("max_sessions".into(), json!(max));
    }
    if let Some(hours) = patch.max_borrow_hours {
        work.conn.execute(
            "UPDATE keys SET max_borrow_hours = ?2 WHERE key_id = ?1",
            params![id, hours],
        )?;
        changes.insert("max_borrow_hours".into(), json!(hours));
    }
    if let Some(policy) = patch.on_conflict {
        work.conn.execute(
            "UPDATE keys SET on_conflict = ?2 WHERE key_id = ?1",
            params![id, policy.as_str()],
        )?;
        changes.insert("on_conflict".into(), json!(policy));
    }
    if let Some(expires) = patch.expires_at {
        work.conn.execute(
            "UPDATE keys SET expires_at = ?2 WHERE key_id = ?1",
            params![id, expires.map(|t| t.0)],
        )?;
        changes.insert("expires_at".into(), json!(expires));
    }
    if let Some(status) = patch.status {
        work.conn.execute(
            "UPDATE keys SET status = ?2 WHERE key_id = ?1",
            params![id, status.as_str()],
        )?;
        changes.insert("status".into(), json!(status));
    }
    work.conn.execute(
        "UPDATE keys SET updated_at = ?2 WHERE key_id = ?1",
        params![id, now.0],
    )?;
    if let Some(expires) = patch.expires_at {
        let hash: Vec<u8> =
            work.conn
                .query_row("SELECT key_hash FROM keys WHERE key_id = ?1", [id], |r| {
                    r.get(0)
                })?;
        if let Ok(hash) = <KeyHash>::try_from(hash.as_slice()) {
            work.memory_changes.push(Change::KeyExpiry {
                key_tag: key_tag(&hash),
                expires_at: expires.map_or(NEVER, |t| t.0),
            });
        }
    }
    let key = key_by_id(work.conn, id, now)?
        .ok_or_else(|| Error::Internal("updated key vanished".into()))?;
    work.record(EventRecord {
        at: now,
        event_type: EventType::KeyUpdated,
        key_id: Some(&key.key_id),
        session_id: None,
        device_name: None,
        actor,
        detail: Some(serde_json::Value::Object(changes)),
    })?;

    ended.extend(end_what_no_longer_fits(work, &key, now, actor)?);
    let key = fresh_key(work, &key.key_id, now)?;
    Ok(KeyChange { key, ended })
}

/// Settles a key's open sessions as they stood before a change to it:
/// the dead ones are recorded as they ended under the key as it was (so a
/// new, earlier expiry cannot rewrite how they ended), and if the key is
/// past its expiry the live ones end too, as the sweep would (revoked,
/// cause `key_expired`, by the server). Returns those.
fn settle_before_change(
    work: &mut UnitOfWork<'_>,
    key: &Key,
    now: Timestamp,
) -> Result<Vec<Session>> {
    let (_, live) = work.settle_open_sessions(&key.key_id, now)?;
    match rules::ended_before_change(key, &live, now) {
        Some(revocation) => work.apply_revocation(live, &revocation, &Actor::server()),
        None => Ok(Vec::new()),
    }
}

/// Ends the live sessions that no longer fit `key` as a change left it
/// ([`rules::ended_by_change`]).
fn end_what_no_longer_fits(
    work: &mut UnitOfWork<'_>,
    key: &Key,
    now: Timestamp,
    actor: &Actor,
) -> Result<Vec<Session>> {
    let (_, live) = work.settle_open_sessions(&key.key_id, now)?;
    let revocation = rules::ended_by_change(key, &live, now);
    work.apply_revocation(live, &revocation, actor)
}

/// Revokes a key for good and ends its live sessions.
pub(in crate::store) fn revoke(
    work: &mut UnitOfWork<'_>,
    key_ref: &str,
    now: Timestamp,
    actor: &Actor,
) -> Result<KeyChange> {
    let before = resolve_key(work.conn, key_ref, now)?;
    if !rules::revoke_needed(&before) {
        return Ok(KeyChange {
            key: before,
            ended: vec![],
        });
    }
    let mut ended = settle_before_change(work, &before, now)?;
    work.conn.execute(
        "UPDATE keys SET status = 'revoked', revoked_at = ?2, updated_at = ?2 WHERE key_id = ?1",
        params![before.key_id, now.0],
    )?;
    work.record(EventRecord {
        at: now,
        event_type: EventType::KeyRevoked,
        key_id: Some(&before.key_id),
        session_id: None,
        device_name: None,
        actor,
        detail: None,
    })?;
    let revoked = key_by_id(work.conn, &before.key_id, now)?
        .ok_or_else(|| Error::Internal("revoked key vanished".into()))?;
    ended.extend(end_what_no_longer_fits(work, &revoked, now, actor)?);
    let key = fresh_key(work, &before.key_id, now)?;
    Ok(KeyChange { key, ended })
}

/// One key by id, prefix or access key.
pub(in crate::store) fn get(work: &UnitOfWork<'_>, key_ref: &str, now: Timestamp) -> Result<Key> {
    let key = resolve_key(work.conn, key_ref, now)?;
    fresh_key(work, &key.key_id, now)
}

/// A page of keys in creation order.
pub(in crate::store) fn list(
    work: &UnitOfWork<'_>,
    limit: u32,
    after: Option<&str>,
    now: Timestamp,
) -> Result<KeyPage> {
    let after_row: i64 = match after {
        None => 0,
        Some(id) => work
            .conn
            .query_row("SELECT id FROM keys WHERE key_id = ?1", [id], |r| r.get(0))
            .optional()?
            .ok_or_else(|| Error::InvalidRequest(format!("after: no key with id {id}")))?,
    };
    let sql = format!(
        "SELECT {} FROM keys k WHERE k.id > :after ORDER BY k.id LIMIT :limit",
        key_columns()
    );
    let mut stmt = work.conn.prepare(&sql)?;
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
    if work.mem.is_some() {
        for k in &mut keys {
            if k.live_sessions > 0 {
                *k = fresh_key(work, &k.key_id, now)?;
            }
        }
    }
    Ok(KeyPage { keys, next_after })
}

/// A page of the keys matching a search.
pub(in crate::store) fn search(
    work: &UnitOfWork<'_>,
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
    let mut keys = work
        .conn
        .prepare(&sql)?
        .query_map(
            named_params! {
                ":q": q, ":bare": bare, ":now": now.0,
                ":limit": i64::from(limit),
                ":offset": i64::try_from(offset).unwrap_or(i64::MAX),
            },
            key_from_row,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let matched: i64 = work.conn.query_row(
        &format!("SELECT COUNT(*) FROM keys k WHERE {MATCH}"),
        named_params! {":q": q, ":bare": bare},
        |r| r.get(0),
    )?;
    let total: i64 = work
        .conn
        .query_row("SELECT COUNT(*) FROM keys", [], |r| r.get(0))?;
    if work.mem.is_some() {
        for k in &mut keys {
            if k.live_sessions > 0 {
                *k = fresh_key(work, &k.key_id, now)?;
            }
        }
    }
    Ok(KeySearch {
        keys,
        matched: u64::try_from(matched).unwrap_or(0),
        total: u64::try_from(total).unwrap_or(0),
    })
}
