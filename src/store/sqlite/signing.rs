//! The signing keys on SQLite (see [`crate::signing`]): read, the first
//! one made, a rotation. The file has one writer at a time, so "make one if
//! there is none" needs no lock of its own.

use rusqlite::params;

use super::unit_of_work::UnitOfWork;
use crate::clock::Timestamp;
use crate::error::Result;
use crate::signing::KeyRecord;

/// Every stored key.
pub(in crate::store) fn all(work: &UnitOfWork<'_>) -> Result<Vec<KeyRecord>> {
    let mut stmt = work.conn.prepare_cached(
        "SELECT private_key, public_key, created_at, retired_at FROM signing_keys \
         ORDER BY created_at, kid",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, Option<i64>>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (secret, public, created, retired) = row?;
        out.push(KeyRecord::from_parts(
            &zeroize::Zeroizing::new(secret),
            &public,
            Timestamp(created),
            retired.map(Timestamp),
        )?);
    }
    Ok(out)
}

fn insert(work: &UnitOfWork<'_>, key: &KeyRecord) -> Result<()> {
    let secret = key.secret.as_deref().map(|s| s.to_vec());
    work.conn.execute(
        "INSERT INTO signing_keys (kid, private_key, public_key, created_at, retired_at) \
         VALUES (?1, ?2, ?3, ?4, NULL)",
        params![
            key.kid,
            zeroize::Zeroizing::new(secret.unwrap_or_default()).as_slice(),
            key.public.as_slice(),
            key.created_at.0
        ],
    )?;
    Ok(())
}

/// Stores a first key made at `now` unless a current one exists.
pub(in crate::store) fn ensure(work: &UnitOfWork<'_>, now: Timestamp) -> Result<Vec<KeyRecord>> {
    let current: i64 = work.conn.query_row(
        "SELECT COUNT(*) FROM signing_keys WHERE retired_at IS NULL",
        [],
        |r| r.get(0),
    )?;
    if current == 0 {
        insert(work, &KeyRecord::generate(now))?;
    }
    all(work)
}

/// Makes a new current key: the current one is retired at `now`, keys
/// retired before `forget_before` are deleted.
pub(in crate::store) fn rotate(
    work: &UnitOfWork<'_>,
    now: Timestamp,
    forget_before: Timestamp,
) -> Result<KeyRecord> {
    work.conn.execute(
        "DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < ?1",
        params![forget_before.0],
    )?;
    work.conn.execute(
        "UPDATE signing_keys SET retired_at = ?1 WHERE retired_at IS NULL",
        params![now.0],
    )?;
    let key = KeyRecord::generate(now);
    insert(work, &key)?;
    Ok(key.public_only())
}
