//! The checks with the server down: the file itself, against everything
//! acknowledged.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::model::Model;

/// Checks the file against everything acknowledged; returns the number of
/// acknowledged facts checked.
pub fn check_file(db: &Path, m: &Model) -> usize {
    let conn = rusqlite::Connection::open(db).expect("open the database");
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok", "integrity_check");

    let mut checked = 0;
    let mut max_of: HashMap<String, usize> = HashMap::new();
    {
        let mut q = conn
            .prepare("SELECT key_id, max_sessions, status FROM keys")
            .unwrap();
        let rows = q
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .unwrap();
        let mut status_of = HashMap::new();
        for row in rows {
            let (id, max, status) = row.unwrap();
            max_of.insert(id.clone(), max as usize);
            status_of.insert(id, status);
        }
        for k in &m.keys {
            let status = status_of
                .get(&k.key_id)
                .unwrap_or_else(|| panic!("acknowledged key {} is missing", k.key_id));
            assert_eq!(max_of[&k.key_id], k.max, "seats of {}", k.key_id);
            if k.revoked {
                assert_eq!(status, "revoked", "acknowledged revocation of {}", k.key_id);
                checked += 1;
            }
            checked += 1;
        }
    }

    let mut rows: HashMap<String, (String, i64, Option<String>)> = HashMap::new();
    {
        let mut q = conn
            .prepare("SELECT session_id, key_id, fence, end_reason FROM sessions")
            .unwrap();
        for row in q
            .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))
            .unwrap()
        {
            let (id, rest): (String, _) = row.unwrap();
            rows.insert(id, rest);
        }
    }
    let mut started_events = HashSet::new();
    {
        let mut q = conn
            .prepare("SELECT session_id FROM events WHERE type = 'session_started'")
            .unwrap();
        for row in q.query_map([], |r| r.get::<_, String>(0)).unwrap() {
            started_events.insert(row.unwrap());
        }
    }
    for (id, s) in &m.sessions {
        let key = &m.keys[s.key];
        let (key_id, fence, reason) = rows
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged start of {id} is missing"));
        assert_eq!(key_id, &key.key_id, "key of {id}");
        assert_eq!(*fence, s.fence, "fence of {id}");
        assert!(
            started_events.contains(id),
            "no session_started event for {id}"
        );
        checked += 1;
        if let Some(told) = &s.ended {
            assert_eq!(
                reason.as_deref(),
                Some(told.as_str()),
                "{id} was acknowledged as ended ({told})"
            );
            checked += 1;
        }
        if key.revoked {
            assert!(reason.is_some(), "{id} is open on revoked key {key_id}");
        }
    }

    // The seat invariant over the whole history, in commit order.
    let mut live: HashMap<String, HashSet<String>> = HashMap::new();
    let mut q = conn
        .prepare("SELECT id, type, key_id, session_id FROM events ORDER BY id")
        .unwrap();
    let events = q
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })
        .unwrap();
    for e in events {
        let (eid, kind, key, session) = e.unwrap();
        let (Some(key), Some(session)) = (key, session) else {
            continue;
        };
        let set = live.entry(key.clone()).or_default();
        match kind.as_str() {
            "session_started" => {
                assert!(
                    set.insert(session.clone()),
                    "event {eid}: {session} started twice"
                );
                assert!(
                    set.len() <= max_of[&key],
                    "event {eid}: key {key} has {} live sessions on {} seats",
                    set.len(),
                    max_of[&key]
                );
            }
            "session_ended" | "session_superseded" | "session_expired" | "session_revoked" => {
                assert!(
                    set.remove(&session),
                    "event {eid}: {kind} for {session}, which was not live"
                );
            }
            _ => {}
        }
    }
    // Open rows and the replayed history agree.
    for (id, (key_id, _, reason)) in &rows {
        let open_in_history = live.get(key_id).is_some_and(|s| s.contains(id));
        assert_eq!(
            reason.is_none(),
            open_in_history,
            "session {id}: row and audit log disagree on whether it is open"
        );
    }
    checked
}
