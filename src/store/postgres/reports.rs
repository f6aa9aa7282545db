//! Read-only queries for operators on PostgreSQL: the audit log, the
//! metrics gauges, the overview chart and the sharing report, the same
//! questions `store/sqlite/reports.rs` asks of one file.

use deadpool_postgres::Transaction;

use super::rows::effective_expiry;
use crate::clock::Timestamp;
use crate::error::Result;
use crate::model::{Event, EventType};
use crate::report::{Device, DeviceUse, EventCount, KeyInfo, SharingInput, Takeover};
use crate::store::EventFilter;

/// Keys per status for the metrics gauge (a key past its `expires_at`
/// counts as `expired` whatever its stored status, except revoked).
pub(super) async fn keys_by_status(
    tx: &Transaction<'_>,
    now: Timestamp,
) -> Result<Vec<(&'static str, u64)>> {
    let mut counts = vec![
        ("active", 0),
        ("suspended", 0),
        ("revoked", 0),
        ("expired", 0),
    ];
    let rows = tx
        .query(
            "SELECT CASE WHEN status = 'revoked' THEN 'revoked' \
                         WHEN expires_at IS NOT NULL AND expires_at <= $1 THEN 'expired' \
                         ELSE status END AS s, COUNT(*) FROM keys GROUP BY 1",
            &[&now.0],
        )
        .await?;
    for row in rows {
        let status: String = row.get(0);
        let n: i64 = row.get(1);
        if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == status) {
            slot.1 = u64::try_from(n).unwrap_or(0);
        }
    }
    Ok(counts)
}

/// Sessions live at `now`.
pub(super) async fn count_live(tx: &Transaction<'_>, now: Timestamp) -> Result<u64> {
    let sql = format!(
        "SELECT COUNT(*) FROM sessions s JOIN keys k ON k.key_id = s.key_id \
         WHERE s.ended_at IS NULL AND {} > $1 \
         AND k.status = 'active' AND (k.expires_at IS NULL OR k.expires_at > $1)",
        effective_expiry()
    );
    let n: i64 = tx.query_one(&sql, &[&now.0]).await?.get(0);
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The audit log, newest first, as filtered.
pub(super) async fn events(tx: &Transaction<'_>, filter: &EventFilter) -> Result<Vec<Event>> {
    let rows = tx
        .query(
            "SELECT e.id, e.at, e.type, e.key_id, k.prefix, e.session_id, e.device_name, \
             e.client_addr, e.detail FROM events e LEFT JOIN keys k ON k.key_id = e.key_id \
             WHERE ($1::TEXT IS NULL OR e.key_id = $1) AND ($2::TEXT IS NULL OR e.type = $2) \
             AND ($3::BIGINT IS NULL OR e.at >= $3) AND ($4::BIGINT IS NULL OR e.id < $4) \
             ORDER BY e.id DESC LIMIT $5",
            &[
                &filter.key_id,
                &filter.event_type.map(EventType::as_str),
                &filter.since.map(|t| t.0),
                &filter.before_id,
                &i64::from(filter.limit),
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let kind: String = row.get(2);
            let detail: Option<String> = row.get(8);
            Event {
                id: row.get(0),
                at: Timestamp(row.get(1)),
                event_type: EventType::parse(&kind).unwrap_or(EventType::KeyUpdated),
                key_id: row.get(3),
                key_prefix: row.get(4),
                session_id: row.get(5),
                device_name: row.get(6),
                client_addr: row.get(7),
                detail: detail.and_then(|d| serde_json::from_str(&d).ok()),
            }
        })
        .collect())
}

/// Session events since `since`, counted per type and bucket.
pub(super) async fn event_counts(
    tx: &Transaction<'_>,
    since: Timestamp,
    bucket_secs: u64,
) -> Result<Vec<EventCount>> {
    let bucket_ms = i64::try_from(bucket_secs.max(1))
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000);
    let rows = tx
        .query(
            "SELECT type, (at - $1) / $2, COUNT(*) FROM events \
             WHERE at >= $1 AND type IN ('session_started', 'session_superseded', 'session_expired') \
             GROUP BY 1, 2",
            &[&since.0, &bucket_ms],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|row| {
            let kind: String = row.get(0);
            Some(EventCount {
                event_type: EventType::parse(&kind)?,
                bucket: u32::try_from(row.get::<_, i64>(1)).ok()?,
                count: u64::try_from(row.get::<_, i64>(2)).ok()?,
            })
        })
        .collect())
}

/// Sessions started, ended or still open since `since`, per key and
/// device; and every takeover since then with both devices.
pub(super) async fn sharing_input(tx: &Transaction<'_>, since: Timestamp) -> Result<SharingInput> {
    let mut input = SharingInput::default();
    let rows = tx
        .query(
            "SELECT s.key_id, s.fingerprint, s.device_name, COUNT(*), \
             k.prefix, k.label, k.max_sessions FROM sessions s JOIN keys k ON k.key_id = s.key_id \
             WHERE s.started_at >= $1 OR s.ended_at IS NULL OR s.ended_at >= $1 \
             GROUP BY s.key_id, s.fingerprint, s.device_name, k.prefix, k.label, k.max_sessions",
            &[&since.0],
        )
        .await?;
    let mut keys = std::collections::BTreeMap::new();
    for row in rows {
        let key_id: String = row.get(0);
        keys.entry(key_id.clone()).or_insert(KeyInfo {
            key_id: key_id.clone(),
            prefix: row.get(4),
            label: row.get(5),
            max_sessions: u32::try_from(row.get::<_, i32>(6)).unwrap_or(1),
        });
        input.devices.push(DeviceUse {
            key_id,
            device: Device {
                fingerprint: row.get(1),
                name: row.get(2),
            },
            sessions: u64::try_from(row.get::<_, i64>(3)).unwrap_or(0),
        });
    }
    input.keys = keys.into_values().collect();
    input.takeovers = tx
        .query(
            "SELECT v.key_id, v.ended_at, v.fingerprint, v.device_name, w.fingerprint, w.device_name \
             FROM sessions v LEFT JOIN sessions w ON w.session_id = v.superseded_by \
             WHERE v.end_reason = 'superseded' AND v.ended_at >= $1",
            &[&since.0],
        )
        .await?
        .iter()
        .map(|row| Takeover {
            key_id: row.get(0),
            at: Timestamp(row.get(1)),
            from: Device {
                fingerprint: row.get(2),
                name: row.get(3),
            },
            to: Device {
                fingerprint: row.get(4),
                name: row.get(5),
            },
        })
        .collect();
    Ok(input)
}
