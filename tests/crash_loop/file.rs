//! The checks with the server down: the database itself, against
//! everything acknowledged. One check, two ways to read the rows: the
//! SQLite file directly, or the PostgreSQL database the servers used.

use std::collections::{HashMap, HashSet};

use crate::common;
use crate::model::Model;

/// The rows the checks read, the same facts from either engine.
#[derive(Default)]
pub struct Facts {
    /// key id -> (seats, status).
    keys: HashMap<String, (usize, String)>,
    /// session id -> (key id, fence, end reason).
    sessions: HashMap<String, (String, i64, Option<String>)>,
    /// Sessions with a `session_started` event.
    started_events: HashSet<String>,
    /// (id, type, key id, session id), by id.
    events: Vec<(i64, String, Option<String>, Option<String>)>,
}

/// Reads the facts from `db` (a SQLite path or a `postgres://` URL).
pub async fn read_facts(db: &str) -> Facts {
    if db.starts_with("postgres://") || db.starts_with("postgresql://") {
        read_postgres(db).await
    } else {
        read_sqlite(db)
    }
}

/// The SQLite file. Also checks `PRAGMA integrity_check`, which only
/// SQLite has (on PostgreSQL the server itself guarantees page
/// consistency, and there is no equivalent a test can ask for).
fn read_sqlite(db: &str) -> Facts {
    let conn = rusqlite::Connection::open(db).expect("open the database");
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok", "integrity_check");
    let mut f = Facts::default();
    let mut q = conn
        .prepare("SELECT key_id, max_sessions, status FROM keys")
        .unwrap();
    for row in q
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .unwrap()
    {
        let (id, max, status) = row.unwrap();
        f.keys.insert(id, (max as usize, status));
    }
    let mut q = conn
        .prepare("SELECT session_id, key_id, fence, end_reason FROM sessions")
        .unwrap();
    for row in q
        .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))
        .unwrap()
    {
        let (id, rest): (String, _) = row.unwrap();
        f.sessions.insert(id, rest);
    }
    let mut q = conn
        .prepare("SELECT session_id FROM events WHERE type = 'session_started'")
        .unwrap();
    for row in q.query_map([], |r| r.get::<_, String>(0)).unwrap() {
        f.started_events.insert(row.unwrap());
    }
    let mut q = conn
        .prepare("SELECT id, type, key_id, session_id FROM events ORDER BY id")
        .unwrap();
    for e in q
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
    {
        f.events.push(e.unwrap());
    }
    f
}

/// The PostgreSQL database, in one repeatable-read snapshot.
async fn read_postgres(url: &str) -> Facts {
    let mut client = common::postgres::connect(url).await;
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .unwrap();
    let mut f = Facts::default();
    for r in tx
        .query("SELECT key_id, max_sessions, status FROM keys", &[])
        .await
        .unwrap()
    {
        let max: i32 = r.get(1);
        f.keys.insert(r.get(0), (max as usize, r.get(2)));
    }
    for r in tx
        .query(
            "SELECT session_id, key_id, fence, end_reason FROM sessions",
            &[],
        )
        .await
        .unwrap()
    {
        f.sessions.insert(r.get(0), (r.get(1), r.get(2), r.get(3)));
    }
    for r in tx
        .query(
            "SELECT session_id FROM events WHERE type = 'session_started'",
            &[],
        )
        .await
        .unwrap()
    {
        f.started_events.insert(r.get(0));
    }
    for r in tx
        .query(
            "SELECT id, type, key_id, session_id FROM events ORDER BY id",
            &[],
        )
        .await
        .unwrap()
    {
        f.events.push((r.get(0), r.get(1), r.get(2), r.get(3)));
    }
    tx.commit().await.unwrap();
    f
}

/// Checks the database's facts against everything acknowledged; returns
/// the number of acknowledged facts checked.
///
/// The seat invariant replays the audit log in event-id order. On SQLite
/// that is commit order. On PostgreSQL ids are handed out at insert, not
/// commit, so across keys they may interleave differently; but every
/// event of a key is written under that key's row lock, so per key (all
/// this replay looks at) id order is commit order.
pub fn check_facts(f: &Facts, m: &Model) -> usize {
    let mut checked = 0;
    for k in &m.keys {
        let (max, status) = f
            .keys
            .get(&k.key_id)
            .unwrap_or_else(|| panic!("acknowledged key {} is missing", k.key_id));
        assert_eq!(*max, k.max, "seats of {}", k.key_id);
        if k.revoked {
            assert_eq!(status, "revoked", "acknowledged revocation of {}", k.key_id);
            checked += 1;
        }
        checked += 1;
    }

    for (id, s) in &m.sessions {
        let key = &m.keys[s.key];
        let (key_id, fence, reason) = f
            .sessions
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged start of {id} is missing"));
        assert_eq!(key_id, &key.key_id, "key of {id}");
        assert_eq!(*fence, s.fence, "fence of {id}");
        assert!(
            f.started_events.contains(id),
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
    let mut live: HashMap<&str, HashSet<&str>> = HashMap::new();
    for (eid, kind, key, session) in &f.events {
        let (Some(key), Some(session)) = (key, session) else {
            continue;
        };
        let seats = f.keys[key].0;
        let set = live.entry(key).or_default();
        match kind.as_str() {
            "session_started" => {
                assert!(set.insert(session), "event {eid}: {session} started twice");
                assert!(
                    set.len() <= seats,
                    "event {eid}: key {key} has {} live sessions on {seats} seats",
                    set.len(),
                );
            }
            "session_ended" | "session_superseded" | "session_expired" | "session_revoked" => {
                assert!(
                    set.remove(session.as_str()),
                    "event {eid}: {kind} for {session}, which was not live"
                );
            }
            _ => {}
        }
    }
    // Open rows and the replayed history agree.
    for (id, (key_id, _, reason)) in &f.sessions {
        let open_in_history = live
            .get(key_id.as_str())
            .is_some_and(|s| s.contains(id.as_str()));
        assert_eq!(
            reason.is_none(),
            open_in_history,
            "session {id}: row and audit log disagree on whether it is open"
        );
    }
    checked
}
