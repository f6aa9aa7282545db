//! Concurrent starts never leave a key with more live sessions than seats.
//!
//! How the check decides: besides the final state (status and heartbeats),
//! the audit log is replayed in commit order (event ids increase with each
//! committed write). Each `session_started` adds a live session and each
//! end event removes one; the running count must never exceed the seat
//! limit at any point in that order, which is exactly "at any instant" for
//! a store that commits starts one at a time.

mod common;

use std::collections::HashSet;

use common::TestServer;
use serde_json::{json, Value};

async fn race(s: &TestServer, key: &str, n: usize) -> Vec<(u16, Value)> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let client = s.client.clone();
        let url = format!("{}/api/session/start", s.url);
        let body = json!({"access_key": key, "device": {"name": format!("device-{i}")}});
        tasks.push(tokio::spawn(async move {
            let resp = client.post(url).json(&body).send().await.unwrap();
            common::split(resp).await
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        results.push((status.as_u16(), body));
    }
    results
}

/// Replays the key's events in commit order; returns the highest number of
/// sessions live at once.
async fn max_live_in_history(s: &TestServer, key_id: &str) -> usize {
    let (_, body) = s
        .admin(
            "GET",
            &format!("/api/admin/events?key_id={key_id}&limit=1000"),
            None,
        )
        .await;
    let mut events = body["events"].as_array().unwrap().clone();
    events.reverse(); // oldest first
    let mut live = HashSet::new();
    let mut max = 0;
    for e in events {
        let id = e["session_id"].as_str().unwrap_or_default().to_owned();
        match e["type"].as_str().unwrap() {
            "session_started" => {
                assert!(live.insert(id), "started twice");
            }
            "session_ended" | "session_superseded" | "session_expired" | "session_revoked" => {
                assert!(live.remove(&id), "ended a session that was not live: {id}");
            }
            _ => {}
        }
        max = max.max(live.len());
    }
    max
}

async fn check_race(seats: usize) {
    let s = TestServer::start().await;
    let (key, created) = s.create_key(json!({"max_sessions": seats})).await;
    let results = race(&s, &key, 50).await;
    let mut winners = Vec::new();
    let mut fences = HashSet::new();
    for (status, body) in &results {
        assert_eq!(*status, 200, "{body}");
        winners.push(body["session_id"].as_str().unwrap().to_owned());
        assert!(
            fences.insert(body["fence"].as_i64().unwrap()),
            "fences are unique"
        );
    }
    let (_, status) = s.status(&key).await;
    let live: Vec<&str> = status["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(live.len(), seats, "exactly the seat limit is live");
    let mut superseded = 0;
    for id in &winners {
        let (code, body) = s.heartbeat(&key, id).await;
        if live.contains(&id.as_str()) {
            assert_eq!(code, 200);
        } else {
            assert_eq!(code, 409, "{body}");
            assert_eq!(body["error"]["code"], "session_superseded");
            superseded += 1;
        }
    }
    assert_eq!(superseded, 50 - seats);
    let max = max_live_in_history(&s, created["key_id"].as_str().unwrap()).await;
    assert!(
        max <= seats,
        "history shows {max} live sessions at once on {seats} seats"
    );
}

/// 50 simultaneous starts on a one-seat key leave exactly one live
/// session; every other start's session reads session_superseded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_simultaneous_starts_on_one_seat() {
    check_race(1).await;
}

/// The same on a three-seat key: never more than three live.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_simultaneous_starts_on_three_seats() {
    check_race(3).await;
}

/// With policy reject, of 50 simultaneous starts exactly the seat limit
/// win and the rest get seats_full.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_simultaneous_starts_with_reject() {
    let s = TestServer::start().await;
    let (key, created) = s
        .create_key(json!({"max_sessions": 3, "on_conflict": "reject"}))
        .await;
    let results = race(&s, &key, 50).await;
    let ok = results.iter().filter(|(c, _)| *c == 200).count();
    let full = results
        .iter()
        .filter(|(c, b)| *c == 409 && b["error"]["code"] == "seats_full")
        .count();
    assert_eq!((ok, full), (3, 47));
    assert_eq!(s.events_of("start_rejected").await.len(), 47);
    assert!(max_live_in_history(&s, created["key_id"].as_str().unwrap()).await <= 3);
}
