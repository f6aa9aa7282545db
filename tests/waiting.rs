//! The waiting heartbeat (docs/api.md, "Waiting heartbeat"): a heartbeat
//! with `wait_seconds` is held until the wait is over (200), or answered
//! at once with the end's answer when its session ends, by whatever path.
//! Runs on both engines; on PostgreSQL an end on another server wakes it.

mod common;

use std::time::{Duration, Instant};

use common::{assert_error, split, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Long enough that an answer before it can only be a wake.
const HELD: u64 = 25;

/// Sends a held heartbeat; the answer and how long it took.
fn held(
    s: &TestServer,
    key: &str,
    id: &str,
    wait: u64,
) -> tokio::task::JoinHandle<(StatusCode, Value, Duration)> {
    let (url, client) = (s.url.clone(), s.client.clone());
    let body = json!({"access_key": key, "session_id": id, "wait_seconds": wait});
    tokio::spawn(async move {
        let sent = Instant::now();
        let resp = client
            .post(format!("{url}/api/session/heartbeat"))
            .json(&body)
            .send()
            .await
            .expect("an answer");
        let (status, body) = split(resp).await;
        (status, body, sent.elapsed())
    })
}

/// Waits until `n` heartbeats are held on `s` (the request has arrived).
async fn until_held(s: &TestServer, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.held_now() < n {
        assert!(Instant::now() < deadline, "no heartbeat held");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The server's `/metrics` text.
async fn metrics(s: &TestServer) -> String {
    let resp = s.client.get(format!("{}/metrics", s.url)).send().await;
    resp.unwrap().text().await.unwrap()
}

/// The ways a session ends while its heartbeat is held.
#[derive(Debug, Clone, Copy)]
enum EndBy {
    Takeover,
    End,
    Kick,
    Revoke,
    Suspend,
    SeatReduction,
    KeyExpirySetInThePast,
    KeyExpiryFoundBySweep,
}

impl EndBy {
    /// The key's terms it needs.
    fn terms(self) -> Value {
        match self {
            EndBy::SeatReduction => json!({"max_sessions": 2}),
            _ => json!({}),
        }
    }

    /// What the held heartbeat must answer.
    fn answer(self) -> (u16, &'static str) {
        match self {
            EndBy::Takeover => (409, "session_superseded"),
            EndBy::End => (410, "session_ended"),
            EndBy::Kick | EndBy::SeatReduction => (410, "session_revoked"),
            EndBy::Revoke => (403, "key_revoked"),
            EndBy::Suspend => (403, "key_suspended"),
            EndBy::KeyExpirySetInThePast | EndBy::KeyExpiryFoundBySweep => (403, "key_expired"),
        }
    }

    async fn end(self, s: &TestServer, key: &str, key_id: &str, id: &str) {
        let key_path = format!("/api/admin/keys/{key_id}");
        match self {
            EndBy::Takeover => {
                s.started(key, "B").await;
            }
            EndBy::End => {
                s.end(key, id).await;
            }
            EndBy::Kick => {
                s.admin("DELETE", &format!("/api/admin/sessions/{id}"), None)
                    .await;
            }
            EndBy::Revoke => {
                s.admin("POST", &format!("{key_path}/revoke"), None).await;
            }
            EndBy::Suspend => {
                let body = json!({"status": "suspended"});
                s.admin("PATCH", &key_path, Some(body)).await;
            }
            EndBy::SeatReduction => {
                // A newer session keeps the one seat left.
                s.clock.advance_secs(1);
                s.started(key, "B").await;
                s.admin("PATCH", &key_path, Some(json!({"max_sessions": 1})))
                    .await;
            }
            EndBy::KeyExpirySetInThePast => {
                let past = s.now().minus_secs(1).to_rfc3339();
                s.admin("PATCH", &key_path, Some(json!({"expires_at": past})))
                    .await;
            }
            EndBy::KeyExpiryFoundBySweep => {
                let soon = s.now().plus_secs(1).to_rfc3339();
                s.admin("PATCH", &key_path, Some(json!({"expires_at": soon})))
                    .await;
                s.clock.advance_secs(2);
                let (store, now) = (s.store(), s.now());
                keyseat::store::blocking(move || store.sweep(now, 30, false))
                    .await
                    .unwrap();
            }
        }
    }
}

/// Each way a session can end wakes its held heartbeat with the answer a
/// heartbeat would get then, at once.
#[tokio::test]
async fn every_end_wakes_a_held_heartbeat_with_its_answer() {
    let s = TestServer::start().await;
    use EndBy::*;
    for by in [
        Takeover,
        End,
        Kick,
        Revoke,
        Suspend,
        SeatReduction,
        KeyExpirySetInThePast,
        KeyExpiryFoundBySweep,
    ] {
        let (key, key_json) = s.create_key(by.terms()).await;
        let id = s.started(&key, "A").await;
        let before = s.held_now();
        let answer = held(&s, &key, &id, HELD);
        until_held(&s, before + 1).await;
        by.end(&s, &key, key_json["key_id"].as_str().unwrap(), &id)
            .await;
        let (got, body, took) = answer.await.unwrap();
        assert!(
            took < Duration::from_secs(5),
            "{by:?}: answered after {took:?}"
        );
        let (status, code) = by.answer();
        let e = assert_error(got, &body, status, code);
        if code == "session_superseded" {
            assert_eq!(e["superseded_by"]["device_name"], "B", "{by:?}: {body}");
        }
        eprintln!("{by:?}: {got} {code} after {} ms", took.as_millis());
    }
    assert_eq!(s.held_now(), 0);
    // The metrics say how many were told at once, and by what.
    let text = metrics(&s).await;
    assert!(text.contains("keyseat_heartbeats_held 0"), "{text}");
    for code in ["session_superseded", "session_revoked", "key_expired"] {
        let line = format!("keyseat_held_heartbeats_answered_early_total{{code=\"{code}\"}}");
        assert!(text.contains(&line), "{line} in\n{text}");
    }
}

/// A wait that nothing interrupts answers 200 after `wait_seconds`, with
/// the lease renewed when the request arrived; more than the interval is
/// refused.
#[tokio::test]
async fn a_wait_runs_its_time_and_is_bounded_by_the_interval() {
    let s = TestServer::start().await;
    let (key, _) = s.create_key(json!({})).await;
    let id = s.started(&key, "A").await;
    s.clock.advance_secs(10);
    let (status, body, took) = held(&s, &key, &id, 1).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(took >= Duration::from_millis(990), "{took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    let expires = keyseat::clock::Timestamp::parse_rfc3339(body["expires_at"].as_str().unwrap());
    assert_eq!(expires, Some(s.now().plus_secs(60)));
    let (status, body) = s
        .post(
            "/api/session/heartbeat",
            json!({"access_key": key, "session_id": id, "wait_seconds": 31}),
        )
        .await;
    let e = assert_error(status, &body, 400, "invalid_request");
    assert!(
        e["message"].as_str().unwrap().contains("wait_seconds"),
        "{e}"
    );
    for bad in [json!(-1), json!("5"), json!(1.5)] {
        let (status, body) = s
            .post(
                "/api/session/heartbeat",
                json!({"access_key": key, "session_id": id, "wait_seconds": bad}),
            )
            .await;
        assert_error(status, &body, 400, "invalid_request");
    }
    // A session that is already over is answered at once, not held.
    s.end(&key, &id).await;
    let (status, body, took) = held(&s, &key, &id, HELD).await.unwrap();
    assert_error(status, &body, 410, "session_ended");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

/// A client that goes away mid-wait frees its waiter; a stopping server
/// answers held heartbeats at once with 200.
#[tokio::test]
async fn a_client_gone_frees_its_waiter_and_a_stop_answers_at_once() {
    let mut s = TestServer::start().await;
    let (key, _) = s.create_key(json!({})).await;
    let id = s.started(&key, "A").await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let gone = impatient
        .post(format!("{}/api/session/heartbeat", s.url))
        .json(&json!({"access_key": key, "session_id": id, "wait_seconds": HELD}))
        .send()
        .await;
    assert!(gone.is_err(), "the client gave up first");
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.held_now() > 0 {
        assert!(Instant::now() < deadline, "the waiter outlived its client");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let answer = held(&s, &key, &id, HELD);
    until_held(&s, 1).await;
    let stopping = Instant::now();
    s.stop().await;
    let (status, body, _) = answer.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(stopping.elapsed() < Duration::from_secs(5));
}

/// On PostgreSQL, an end on another server wakes the heartbeat held here.
#[tokio::test]
async fn an_end_on_another_server_wakes_a_held_heartbeat() {
    if !common::on_postgres() {
        return; // one server per SQLite file
    }
    let s = TestServer::start().await;
    let other = s.beside().await;
    let (key, _) = s.create_key(json!({})).await;
    let id = s.started(&key, "A").await;
    let answer = held(&s, &key, &id, HELD);
    until_held(&s, 1).await;
    // No pause for the listener to be ready: one that connects after the
    // end makes every held heartbeat look again.
    other.started(&key, "B").await;
    let (status, body, took) = answer.await.unwrap();
    let e = assert_error(status, &body, 409, "session_superseded");
    assert_eq!(e["superseded_by"]["device_name"], "B");
    assert!(took < Duration::from_secs(5), "{took:?}");
    eprintln!("woken across servers after {} ms", took.as_millis());
}

/// A held answer is finished outside the middleware (it would otherwise
/// keep every layer's future alive for the whole wait), yet it gets what
/// every layer gives an answer: signed over its bytes when asked with a
/// nonce (both the 200 after the wait and an end's 409), dated, counted
/// in the request metrics with its real status.
#[tokio::test]
async fn a_held_answer_is_signed_dated_and_counted_like_any_other() {
    use keyseat::signing::{self, PinnedKey};
    let s = TestServer::start().await;
    let (status, set) = s.get("/api/signing-keys").await;
    assert_eq!(status, 200, "{set}");
    let pinned: Vec<PinnedKey> = set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| PinnedKey::parse(k["x"].as_str().unwrap()).unwrap())
        .collect();
    let (key, _) = s.create_key(json!({})).await;
    let id = s.started(&key, "A").await;
    let signed_held = |nonce: &'static str, wait: u64| {
        let (url, client) = (s.url.clone(), s.client.clone());
        let body =
            json!({"access_key": key, "session_id": id, "wait_seconds": wait, "nonce": nonce});
        tokio::spawn(async move {
            let resp = client
                .post(format!("{url}/api/session/heartbeat"))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_owned())
            };
            let (signature, date) = (header("keyseat-signature"), header("date"));
            (
                status,
                signature,
                date,
                resp.bytes().await.unwrap().to_vec(),
            )
        })
    };
    let prefix = &key[..11];

    let (status, signature, date, body) = signed_held("held-nonce-01", 1).await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(date.is_some(), "a held answer carries a Date");
    let verified = signing::verify(
        &pinned,
        status,
        signature.as_deref(),
        &body,
        "held-nonce-01",
        Some(prefix),
    );
    assert_eq!(verified, Ok(()));

    let answer = signed_held("held-nonce-02", HELD);
    until_held(&s, 1).await;
    s.started(&key, "B").await;
    let (status, signature, _, body) = answer.await.unwrap();
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&body));
    let verified = signing::verify(
        &pinned,
        status,
        signature.as_deref(),
        &body,
        "held-nonce-02",
        Some(prefix),
    );
    assert_eq!(verified, Ok(()));

    let text = metrics(&s).await;
    let counted = |status: u16| {
        text.lines().any(|l| {
            l.starts_with("keyseat_http_requests_total")
                && l.contains("/api/session/heartbeat")
                && l.contains(&format!("status=\"{status}\""))
        })
    };
    assert!(counted(200) && counted(409), "{text}");
    assert!(
        text.contains("keyseat_heartbeats_total{code=\"session_superseded\"}"),
        "{text}"
    );
}
