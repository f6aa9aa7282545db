//! The signing keys on PostgreSQL (see [`crate::signing`]), shared by
//! every server on the database. Making the first key and rotating lock
//! the `signing_keys` row of `server_state` first, so two servers starting
//! at once (or two rotations) take turns and agree on one current key.

use super::work::Work;
use crate::clock::Timestamp;
use crate::error::Result;
use crate::signing::KeyRecord;

/// Every stored key, oldest first.
pub(super) async fn all(tx: &deadpool_postgres::Transaction<'_>) -> Result<Vec<KeyRecord>> {
    let rows = tx
        .query(
            "SELECT private_key, public_key, created_at, retired_at FROM signing_keys \
             ORDER BY created_at, kid",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let secret = zeroize::Zeroizing::new(r.get::<_, Vec<u8>>(0));
            KeyRecord::from_parts(
                &secret,
                &r.get::<_, Vec<u8>>(1),
                Timestamp(r.get(2)),
                r.get::<_, Option<i64>>(3).map(Timestamp),
            )
        })
        .collect()
}

async fn lock(work: &Work<'_>) -> Result<()> {
    work.tx
        .execute(
            "SELECT value FROM server_state WHERE name = 'signing_keys' FOR UPDATE",
            &[],
        )
        .await?;
    Ok(())
}

async fn insert(work: &Work<'_>, key: &KeyRecord) -> Result<()> {
    let secret = zeroize::Zeroizing::new(
        key.secret
            .as_deref()
            .map(|s| s.to_vec())
            .unwrap_or_default(),
    );
    let (secret, public): (&[u8], &[u8]) = (&secret, &key.public);
    work.tx
        .execute(
            "INSERT INTO signing_keys (kid, private_key, public_key, created_at) \
             VALUES ($1, $2, $3, $4)",
            &[&key.kid, &secret, &public, &key.created_at.0],
        )
        .await?;
    Ok(())
}

/// Stores a first key unless a current one exists.
pub(super) async fn ensure(work: &Work<'_>) -> Result<Vec<KeyRecord>> {
    lock(work).await?;
    let current: i64 = work
        .tx
        .query_one(
            "SELECT COUNT(*) FROM signing_keys WHERE retired_at IS NULL",
            &[],
        )
        .await?
        .get(0);
    if current == 0 {
        insert(work, &KeyRecord::generate(work.now)).await?;
    }
    all(work.tx).await
}

/// Makes a new current key, retiring the current one and deleting keys
/// retired before `forget_before`.
pub(super) async fn rotate(work: &Work<'_>, forget_before: Timestamp) -> Result<KeyRecord> {
    lock(work).await?;
    work.tx
        .execute(
            "DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < $1",
            &[&forget_before.0],
        )
        .await?;
    work.tx
        .execute(
            "UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL",
            &[&work.now.0],
        )
        .await?;
    let key = KeyRecord::generate(work.now);
    insert(work, &key).await?;
    Ok(key.public_only())
}
