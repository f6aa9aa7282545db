//! Read-only queries for operators: the audit log, the metrics gauges,
//! the dashboard's overview chart and the sharing report. None of them
//! decides anything; they count and list what the other operations wrote.

use rusqlite::{named_params, Connection};

use super::rows::EFFECTIVE_EXPIRY;
use crate::clock::Timestamp;
use crate::error::Result;
use crate::model::{Event, EventType};
use crate::store::EventFilter;

/// Keys per status for the metrics gauge; a key past its `expires_at`
/// counts as `expired` whatever its stored status, except revoked.
pub(in crate::store) fn keys_by_status(
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
pub(in crate::store) fn count_live(c: &Connection, now: Timestamp) -> Result<u64> {
    let sql = format!(
        "SELECT COUNT(*) FROM sessions s JOIN keys k ON k.key_id = s.key_id \
         WHERE s.ended_at IS NULL AND {EFFECTIVE_EXPIRY} > ?1 \
         AND k.status = 'active' AND (k.expires_at IS NULL OR k.expires_at > ?1)"
    );
    let n: i64 = c.query_row(&sql, [now.0], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The audit log, newest first, as filtered.
pub(in crate::store) fn events(c: &Connection, filter: &EventFilter) -> Result<Vec<Event>> {
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

/// Session events since `since`, counted per type and bucket.
pub(in crate::store) fn event_counts(
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
pub(in crate::store) fn sharing_input(
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
