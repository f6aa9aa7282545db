//! The server's in-memory store and the database file it shares with the
//! CLI: durable writes are on disk when answered, heartbeat times reach the
//! disk within the persistence interval, and changes made by another
//! process (the CLI) take effect in the running server within a second.

mod common;

use std::time::{Duration, Instant};

use common::{assert_error, TestServer};
use keyseat::model::Actor;
use keyseat::store::{KeyPatch, OpenMode, SqliteStore, Storage};
use serde_json::json;

/// The CLI's view of the file: a separate connection, like another process.
fn cli_store(s: &TestServer) -> SqliteStore {
    SqliteStore::open(&s.db_path(), OpenMode::Existing).unwrap()
}

/// Polls until `f` holds, returning how long it took.
async fn within(limit: Duration, mut f: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if f().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A start is on disk when it is answered, and so are its supersede and
/// events (group commit acknowledges only after the commit).
#[tokio::test]
async fn starts_are_durable_when_answered() {
    let s = TestServer::start().await;
    let (key, _) = s.create_key(json!({})).await;
    let a = s.started(&key, "A").await;
    let b = s.started(&key, "B").await;
    let cli = cli_store(&s);
    let live = cli.live_sessions(None, s.now()).unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].session_id, b);
    let events = cli
        .events(&keyseat::store::EventFilter {
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert!(events
        .iter()
        .any(|e| e.session_id.as_deref() == Some(a.as_str())
            && e.event_type == keyseat::model::EventType::SessionSuperseded));
}

/// A kick made by another process reaches the running server within a
/// second: the device's next heartbeat hears session_revoked.
#[tokio::test]
async fn cli_kick_takes_effect_within_a_second() {
    let s = TestServer::start().await;
    let (key, _) = s.create_key(json!({})).await;
    let id = s.started(&key, "A").await;
    assert_eq!(s.heartbeat(&key, &id).await.0, 200);
    cli_store(&s)
        .kick_session(&id, s.now(), &Actor::cli())
        .unwrap();
    let took = within(Duration::from_secs(2), async || {
        s.heartbeat(&key, &id).await.0 == 410
    })
    .await;
    eprintln!("CLI kick reached the server after {took:?}");
    let (status, body) = s.heartbeat(&key, &id).await;
    assert_error(status, &body, 410, "session_revoked");
}

/// Suspending a key from the CLI refuses its heartbeats within a second;
/// resuming makes new sessions work again.
#[tokio::test]
async fn cli_key_changes_take_effect_within_a_second() {
    let s = TestServer::start().await;
    let (key, created) = s.create_key(json!({})).await;
    let key_id = created["key_id"].as_str().unwrap().to_owned();
    let id = s.started(&key, "A").await;
    assert_eq!(s.heartbeat(&key, &id).await.0, 200);
    let cli = cli_store(&s);
    let suspend = KeyPatch {
        status: Some(keyseat::model::KeyStatus::Suspended),
        ..Default::default()
    };
    cli.update_key(&key_id, &suspend, s.now(), &Actor::cli())
        .unwrap();
    within(Duration::from_secs(2), async || {
        s.heartbeat(&key, &id).await.0 == 403
    })
    .await;
    let (status, body) = s.heartbeat(&key, &id).await;
    assert_error(status, &body, 403, "key_suspended");

    let resume = KeyPatch {
        status: Some(keyseat::model::KeyStatus::Active),
        ..Default::default()
    };
    cli.update_key(&key_id, &resume, s.now(), &Actor::cli())
        .unwrap();
    within(Duration::from_secs(2), async || {
        s.start_session(&key, "B").await.0 == 200
    })
    .await;
    let b = s.started(&key, "C").await;
    assert_eq!(s.heartbeat(&key, &b).await.0, 200);
}

/// Heartbeat times reach the disk within the persistence interval, so the
/// CLI's `sessions list` is never staler than that.
#[tokio::test]
async fn heartbeat_times_reach_the_disk() {
    let s = TestServer::start_with(|c| c.heartbeat_persist_seconds = 1).await;
    let (key, _) = s.create_key(json!({})).await;
    let id = s.started(&key, "A").await;
    s.clock.advance_secs(20);
    assert_eq!(s.heartbeat(&key, &id).await.0, 200);
    let beat_at = s.now();
    let cli = cli_store(&s);
    let took = within(Duration::from_secs(3), async || {
        cli.live_sessions(None, s.now())
            .unwrap()
            .first()
            .is_some_and(|x| x.last_heartbeat == beat_at)
    })
    .await;
    eprintln!("heartbeat time on disk after {took:?} (persistence interval 1 s)");
}

/// The disk's lease stays an upper bound of the true one: a CLI sweep run
/// while the server holds a heartbeat not yet on disk never expires the
/// live session.
#[tokio::test]
async fn cli_sweep_never_expires_a_live_session() {
    let s = TestServer::start().await; // persistence interval 60 s
    let (key, _) = s.create_key(json!({})).await;
    let id = s.started(&key, "A").await;
    s.clock.advance_secs(50);
    assert_eq!(s.heartbeat(&key, &id).await.0, 200);
    tokio::time::sleep(Duration::from_millis(600)).await; // flushed: disk has t=50
    s.clock.advance_secs(25);
    assert_eq!(s.heartbeat(&key, &id).await.0, 200); // t=75, in memory only
    s.clock.advance_secs(50);
    // t=125: dead by the disk's heartbeat (50 + 60), live by the true one
    // (75 + 60). The disk's lease carries the persistence slack.
    let report = cli_store(&s).sweep(s.now(), 30, false).unwrap();
    assert!(report.expired.is_empty(), "{:?}", report.expired);
    assert_eq!(s.heartbeat(&key, &id).await.0, 200);
}

/// After a clean stop the disk has every heartbeat time.
#[tokio::test]
async fn a_clean_stop_flushes_heartbeats() {
    let mut s = TestServer::start().await;
    let (key, _) = s.create_key(json!({})).await;
    let id = s.started(&key, "A").await;
    s.clock.advance_secs(7);
    s.heartbeat(&key, &id).await;
    let beat_at = s.now();
    s.stop().await;
    let cli = cli_store(&s);
    let live = cli.live_sessions(None, beat_at).unwrap();
    assert_eq!(live[0].last_heartbeat, beat_at);
}

/// A key's expiry changed while its sessions are live (through the API,
/// or from the CLI) applies to their heartbeats exactly at the new time;
/// once it has passed, the sessions are over for good (contract: revoked,
/// "its key was ... expired"), even if the expiry is lifted afterwards.
#[tokio::test]
async fn key_expiry_changes_reach_live_sessions() {
    let s = TestServer::start().await;
    let (key, created) = s.create_key(json!({})).await;
    let key_id = created["key_id"].as_str().unwrap().to_owned();
    let id = s.started(&key, "A").await;
    let soon = s.now().plus_secs(10).to_rfc3339();
    s.admin(
        "PATCH",
        &format!("/api/admin/keys/{key_id}"),
        Some(json!({ "expires_at": soon })),
    )
    .await;
    s.clock.advance_secs(9);
    assert_eq!(s.heartbeat(&key, &id).await.0, 200);

    // From the CLI, before it passes: move the expiry later; the running
    // server learns it, so the old expiry passes without effect.
    let later = KeyPatch {
        expires_at: Some(Some(s.now().plus_secs(20))),
        ..Default::default()
    };
    cli_store(&s)
        .update_key(&key_id, &later, s.now(), &Actor::cli())
        .unwrap();
    s.clock.advance_secs(2);
    within(Duration::from_secs(2), async || {
        s.heartbeat(&key, &id).await.0 == 200
    })
    .await;

    // The new one does, exactly.
    s.clock.advance_secs(18);
    let (status, body) = s.heartbeat(&key, &id).await;
    assert_error(status, &body, 403, "key_expired");

    // Lifting a passed expiry does not bring the session back.
    let lifted = KeyPatch {
        expires_at: Some(None),
        ..Default::default()
    };
    cli_store(&s)
        .update_key(&key_id, &lifted, s.now(), &Actor::cli())
        .unwrap();
    within(Duration::from_secs(2), async || {
        s.heartbeat(&key, &id).await.0 == 410
    })
    .await;
    let (status, body) = s.heartbeat(&key, &id).await;
    assert_error(status, &body, 410, "session_revoked");
    assert_eq!(
        s.start_session(&key, "A").await.0,
        200,
        "the key works again"
    );
}

/// A clock that has seen one gap (a freeze from `from` to `to`) and is slow
/// to hand it over, as a thread preempted right after taking it would be.
struct SlowGapClock {
    now: keyseat::clock::ManualClock,
    gap: std::sync::Mutex<Option<keyseat::clock::Gap>>,
    seen: std::sync::atomic::AtomicU64,
}

impl keyseat::clock::Clock for SlowGapClock {
    fn now(&self) -> keyseat::clock::Timestamp {
        self.now.now()
    }
    fn take_gap(&self) -> Option<keyseat::clock::Gap> {
        let gap = self.gap.lock().unwrap().take();
        if gap.is_some() {
            std::thread::sleep(Duration::from_millis(300));
        }
        gap
    }
    fn gaps_seen(&self) -> u64 {
        self.seen.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// After a freeze, no decision runs on the leases the freeze has not yet
/// extended: while one request applies the gap, another waits for it, and
/// both sessions live when the freeze began keep their seats.
#[test]
fn no_decision_runs_between_taking_a_gap_and_applying_it() {
    use keyseat::clock::{Gap, ManualClock};
    use keyseat::rules::Timing;
    use keyseat::store::{LiveOptions, LiveStore, NewKey, StartRequest};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let t0 = keyseat::clock::Timestamp(1_800_000_000_000);
    let clock = Arc::new(SlowGapClock {
        now: ManualClock::new(t0),
        gap: std::sync::Mutex::new(None),
        seen: std::sync::atomic::AtomicU64::new(0),
    });
    let timing = Timing {
        heartbeat_interval_secs: 1,
        session_timeout_secs: 3,
    };
    let opts = LiveOptions {
        timing,
        persist_secs: 1,
        durability: Default::default(),
    };
    let (store, _) = LiveStore::open(&dir.path().join("k.db"), opts, clock.clone(), t0).unwrap();
    let store = Arc::new(store);
    let created = store
        .create_key(
            &NewKey {
                max_sessions: Some(2),
                ..Default::default()
            },
            t0,
            &Actor::cli(),
        )
        .unwrap();
    let mut ids = Vec::new();
    for device in ["a", "b"] {
        let req = StartRequest {
            key: created.access_key.clone(),
            session_id: None,
            device_name: Some(device.into()),
            fingerprint: None,
            actor: Actor::cli(),
            borrow_hours: None,
        };
        ids.push(
            store
                .start_session(&req, t0, timing)
                .unwrap()
                .session
                .session_id,
        );
    }
    // Frozen from 1 s to 7 s: both leases (3 s) ran out during the freeze.
    *clock.gap.lock().unwrap() = Some(Gap {
        from: keyseat::clock::Timestamp(t0.0 + 1_000),
        to: keyseat::clock::Timestamp(t0.0 + 7_000),
    });
    let after = keyseat::clock::Timestamp(t0.0 + 7_000);
    clock.now.set(after);
    clock.seen.store(1, std::sync::atomic::Ordering::SeqCst);

    let beats: Vec<_> = ids
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            let (store, key) = (store.clone(), created.access_key.clone());
            std::thread::spawn(move || {
                // The second one arrives while the first holds the gap.
                std::thread::sleep(Duration::from_millis(50 * i as u64));
                match store.heartbeat_fast(&key, &id) {
                    Some(answer) => answer.map(|_| ()),
                    None => store.heartbeat(&key, &id, after, timing).map(|_| ()),
                }
            })
        })
        .collect();
    for (i, beat) in beats.into_iter().enumerate() {
        let answer = beat.join().unwrap();
        assert!(answer.is_ok(), "session {i} after the freeze: {answer:?}");
    }
}
