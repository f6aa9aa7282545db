//! The operations on keys on PostgreSQL: create, change, revoke, and the
//! reads of them, as `store/sqlite/keys.rs` does on one file. A change
//! locks the key's row (so it takes turns with starts on other servers),
//! settles the key's sessions as they stood, applies the patch, then ends
//! the sessions the rules say no longer fit.

use serde_json::json;

use super::rows::{self, key_columns, key_from_row, resolve_key};
use super::work::{EventRecord, Work};
use crate::error::{Error, Result};
use crate::keys::AccessKey;
use crate::model::{Actor, EventType, Key, Session};
use crate::rules;
use crate::store::{records, KeyChange, KeyPage, KeyPatch, KeySearch, NewKey};

/// Stores a new key with its hashed secret.
pub(super) async fn create(
    work: &Work<'_>,
    new: &NewKey,
    access_key: &AccessKey,
    key_id: &str,
    actor: &Actor,
) -> Result<Key> {
    let (max_sessions, on_conflict) = rules::new_key_terms(new.max_sessions, new.on_conflict);
    let hash = access_key.hash();
    let hash: &[u8] = &hash;
    let max_sessions = i32::try_from(max_sessions).unwrap_or(i32::MAX);
    work.tx
        .execute(
            "INSERT INTO keys (key_id, key_hash, prefix, label, max_sessions, on_conflict, \
             expires_at, created_at, updated_at, max_borrow_hours) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)",
            &[
                &key_id,
                &hash,
                &access_key.prefix(),
                &new.label,
                &max_sessions,
                &on_conflict.as_str(),
                &new.expires_at.map(|t| t.0),
                &work.now.0,
                &borrow_hours_sql(new.max_borrow_hours.unwrap_or(0)),
            ],
        )
        .await?;
    let key = rows::key_by_id(work.tx, key_id, work.now, false)
        .await?
        .ok_or_else(|| Error::Internal("new key vanished".into()))?;
    work.record(EventRecord {
        event_type: EventType::KeyCreated,
        key_id: Some(key_id),
        session_id: None,
        device_name: None,
        actor,
        detail: Some(records::key_created_detail(&key)),
    })
    .await?;
    Ok(key)
}

/// The key as the caller should see it, seats in use counted by the rules.
async fn fresh_key(work: &Work<'_>, key_id: &str) -> Result<Key> {
    let mut key = rows::key_by_id(work.tx, key_id, work.now, false)
        .await?
        .ok_or_else(|| Error::Internal("key vanished".into()))?;
    let open = rows::sessions_where(
        work.tx,
        "s.key_id = $2 AND s.ended_at IS NULL",
        work.now,
        &[&key_id],
    )
    .await?;
    key.live_sessions = rules::seats_in_use(&key, &open, work.now);
    Ok(key)
}

/// Applies a patch to a key, then ends the sessions that no longer fit.
pub(super) async fn update(
    work: &Work<'_>,
    key_ref: &str,
    patch: &KeyPatch,
    actor: &Actor,
) -> Result<KeyChange> {
    let before = resolve_key(work.tx, key_ref, work.now).await?;
    rules::check_key_change(&before, patch.status)?;
    let mut ended = settle_before_change(work, &before).await?;
    let id = &before.key_id;
    let mut changes = serde_json::Map::new();
    if let Some(label) = &patch.label {
        work.tx
            .execute("UPDATE keys SET label = $2 WHERE key_id = $1", &[id, label])
            .await?;
        changes.insert("label".into(), json!(label));
    }
    if let Some(max) = patch.max_sessions {
        let max_sql = i32::try_from(max).unwrap_or(i32::MAX);
        work.tx
            .execute(
                "UPDATE keys SET max_sessions = $2 WHERE key_id = $1",
                &[id, &max_sql],
            )
            .await?;
        changes.insert("max_sessions".into(), json!(max));
    }
    if let Some(hours) = patch.max_borrow_hours {
        work.tx
            .execute(
                "UPDATE keys SET max_borrow_hours = $2 WHERE key_id = $1",
                &[id, &borrow_hours_sql(hours)],
            )
            .await?;
        changes.insert("max_borrow_hours".into(), json!(hours));
    }
    if let Some(policy) = patch.on_conflict {
        work.tx
            .execute(
                "UPDATE keys SET on_conflict = $2 WHERE key_id = $1",
                &[id, &policy.as_str()],
            )
            .await?;
        changes.insert("on_conflict".into(), json!(policy));
    }
    if let Some(expires) = patch.expires_at {
        work.tx
            .execute(
                "UPDATE keys SET expires_at = $2 WHERE key_id = $1",
                &[id, &expires.map(|t| t.0)],
            )
            .await?;
        changes.insert("expires_at".into(), json!(expires));
    }
    if let Some(status) = patch.status {
        work.tx
            .execute(
                "UPDATE keys SET status = $2 WHERE key_id = $1",
                &[id, &status.as_str()],
            )
            .await?;
        changes.insert("status".into(), json!(status));
    }
    work.tx
        .execute(
            "UPDATE keys SET updated_at = $2 WHERE key_id = $1",
            &[id, &work.now.0],
        )
        .await?;
    let key = rows::key_by_id(work.tx, id, work.now, false)
        .await?
        .ok_or_else(|| Error::Internal("updated key vanished".into()))?;
    work.record(EventRecord {
        event_type: EventType::KeyUpdated,
        key_id: Some(&key.key_id),
        session_id: None,
        device_name: None,
        actor,
        detail: Some(serde_json::Value::Object(changes)),
    })
    .await?;
    ended.extend(end_what_no_longer_fits(work, &key, actor).await?);
    let key = fresh_key(work, &key.key_id).await?;
    Ok(KeyChange { key, ended })
}

/// Settles a key's open sessions as they stood before a change to it (see
/// the SQLite engine's twin for why).
async fn settle_before_change(work: &Work<'_>, key: &Key) -> Result<Vec<Session>> {
    let (_, live) = work.settle_open_sessions(&key.key_id).await?;
    match rules::ended_before_change(key, &live, work.now) {
        Some(revocation) => {
            work.apply_revocation(live, &revocation, &Actor::server())
                .await
        }
        None => Ok(Vec::new()),
    }
}

/// Ends the live sessions that no longer fit `key` as a change left it.
async fn end_what_no_longer_fits(
    work: &Work<'_>,
    key: &Key,
    actor: &Actor,
) -> Result<Vec<Session>> {
    let (_, live) = work.settle_open_sessions(&key.key_id).await?;
    let revocation = rules::ended_by_change(key, &live, work.now);
    work.apply_revocation(live, &revocation, actor).await
}

/// Revokes a key for good and ends its live sessions.
pub(super) async fn revoke(work: &Work<'_>, key_ref: &str, actor: &Actor) -> Result<KeyChange> {
    let before = resolve_key(work.tx, key_ref, work.now).await?;
    if !rules::revoke_needed(&before) {
        return Ok(KeyChange {
            key: before,
            ended: vec![],
        });
    }
    let mut ended = settle_before_change(work, &before).await?;
    work.tx
        .execute(
            "UPDATE keys SET status = 'revoked', revoked_at = $2, updated_at = $2 WHERE key_id = $1",
            &[&before.key_id, &work.now.0],
        )
        .await?;
    work.record(EventRecord {
        event_type: EventType::KeyRevoked,
        key_id: Some(&before.key_id),
        session_id: None,
        device_name: None,
        actor,
        detail: None,
    })
    .await?;
    let revoked = rows::key_by_id(work.tx, &before.key_id, work.now, false)
        .await?
        .ok_or_else(|| Error::Internal("revoked key vanished".into()))?;
    ended.extend(end_what_no_longer_fits(work, &revoked, actor).await?);
    let key = fresh_key(work, &before.key_id).await?;
    Ok(KeyChange { key, ended })
}

/// One key by id, prefix or access key.
pub(super) async fn get(work: &Work<'_>, key_ref: &str) -> Result<Key> {
    let key = resolve_key(work.tx, key_ref, work.now).await?;
    fresh_key(work, &key.key_id).await
}

/// A page of keys in creation order.
pub(super) async fn list(work: &Work<'_>, limit: u32, after: Option<&str>) -> Result<KeyPage> {
    let after_row: i64 = match after {
        None => 0,
        Some(id) => work
            .tx
            .query_opt("SELECT id FROM keys WHERE key_id = $1", &[&id])
            .await?
            .map(|r| r.get(0))
            .ok_or_else(|| Error::InvalidRequest(format!("after: no key with id {id}")))?,
    };
    let sql = format!(
        "SELECT {} FROM keys k WHERE k.id > $2 ORDER BY k.id LIMIT $3",
        key_columns()
    );
    let mut keys: Vec<Key> = work
        .tx
        .query(&sql, &[&work.now.0, &after_row, &(i64::from(limit) + 1)])
        .await?
        .iter()
        .map(key_from_row)
        .collect();
    let next_after = if keys.len() > limit as usize {
        keys.truncate(limit as usize);
        keys.last().map(|k| k.key_id.clone())
    } else {
        None
    };
    Ok(KeyPage { keys, next_after })
}

/// A page of the keys matching a search (the same match as on SQLite).
pub(super) async fn search(
    work: &Work<'_>,
    query: &str,
    limit: u32,
    offset: u64,
) -> Result<KeySearch> {
    let q = query.trim().to_lowercase();
    let bare = q.strip_prefix("ks_").unwrap_or(&q).to_owned();
    // strpos/substr rather than LIKE: nothing in the query is a wildcard.
    const MATCH: &str = "($2 = '' OR strpos(lower(COALESCE(k.label, '')), $2) > 0 \
         OR substr(lower(k.prefix), 4, length($3)) = $3 \
         OR substr(lower(k.key_id), 1, length($2)) = $2)";
    let sql = format!(
        "SELECT {} FROM keys k WHERE {MATCH} ORDER BY k.id LIMIT $4 OFFSET $5",
        key_columns()
    );
    let offset = i64::try_from(offset).unwrap_or(i64::MAX);
    let keys = work
        .tx
        .query(&sql, &[&work.now.0, &q, &bare, &i64::from(limit), &offset])
        .await?
        .iter()
        .map(key_from_row)
        .collect();
    let matched: i64 = work
        .tx
        .query_one(
            &format!("SELECT COUNT(*) FROM keys k WHERE $1::BIGINT IS NOT NULL AND {MATCH}"),
            &[&work.now.0, &q, &bare],
        )
        .await?
        .get(0);
    let total: i64 = work
        .tx
        .query_one("SELECT COUNT(*) FROM keys", &[])
        .await?
        .get(0);
    Ok(KeySearch {
        keys,
        matched: u64::try_from(matched).unwrap_or(0),
        total: u64::try_from(total).unwrap_or(0),
    })
}

/// `max_borrow_hours` as its INTEGER column (the input allows 0..=8760).
fn borrow_hours_sql(hours: u32) -> i32 {
    i32::try_from(hours).unwrap_or(i32::MAX)
}
