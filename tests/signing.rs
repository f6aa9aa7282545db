//! Signed answers (docs/api.md, "Signed answers"): every session answer to
//! a request with a nonce is signed by a published key over its exact
//! bytes, errors included; the key survives restarts and is shared by
//! servers on one database; a rotation reaches a running server; and a
//! client that pins the key refuses an impostor, a replayed answer and a
//! changed byte, telling the app why.
#![cfg(feature = "client")]

mod common;

use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestServer;
use keyseat::client::{Client, ClientError, LostReason, SessionEvent};
use keyseat::signing::{self, Forgery, PinnedKey};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// An answer as it came: status, signature header, body bytes.
struct Raw {
    status: StatusCode,
    signature: Option<String>,
    body: Vec<u8>,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

async fn post_raw(s: &TestServer, path: &str, body: Value) -> Raw {
    let resp = s
        .client
        .post(format!("{}{path}", s.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let signature = resp
        .headers()
        .get("keyseat-signature")
        .map(|v| v.to_str().unwrap().to_owned());
    Raw {
        status,
        signature,
        body: resp.bytes().await.unwrap().to_vec(),
    }
}

/// The server's published keys, pinned.
async fn published(s: &TestServer) -> (Vec<PinnedKey>, Value) {
    let (status, set) = s.get("/api/signing-keys").await;
    assert_eq!(status, StatusCode::OK, "{set}");
    let keys = set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| PinnedKey::parse(k["x"].as_str().unwrap()).unwrap())
        .collect();
    (keys, set)
}

fn prefix(key: &str) -> String {
    key[..11].to_owned()
}

#[tokio::test]
async fn every_session_answer_to_a_request_with_a_nonce_is_signed() {
    let s = TestServer::start().await;
    let (key, _) = s.create_key(json!({"max_sessions": 1})).await;
    let (pinned, set) = published(&s).await;
    let jwk = &set["keys"][0];
    assert_eq!(
        (
            jwk["kty"].as_str(),
            jwk["crv"].as_str(),
            jwk["use"].as_str()
        ),
        (Some("OKP"), Some("Ed25519"), Some("sig"))
    );
    let x: [u8; 32] = base64_decode(jwk["x"].as_str().unwrap())
        .try_into()
        .unwrap();
    assert_eq!(
        jwk["kid"],
        signing::kid_of(&x),
        "kid is the RFC 7638 thumbprint"
    );

    let start = post_raw(
        &s,
        "/api/session/start",
        json!({"access_key": key, "device": {"name": "A"}, "nonce": "start-nonce-1"}),
    )
    .await;
    assert_eq!(start.status, StatusCode::OK);
    let check = |raw: &Raw, nonce: &str, key_prefix: &str| {
        signing::verify(
            &pinned,
            raw.status.as_u16(),
            raw.signature.as_deref(),
            &raw.body,
            nonce,
            Some(key_prefix),
        )
    };
    assert_eq!(check(&start, "start-nonce-1", &prefix(&key)), Ok(()));
    let body = start.json();
    assert_eq!(body["nonce"], "start-nonce-1");
    assert_eq!(body["key_prefix"], prefix(&key));
    assert!(body["server_time"].as_str().unwrap().ends_with('Z'));
    let id = body["session_id"].as_str().unwrap().to_owned();

    for (path, nonce) in [
        ("/api/session/heartbeat", "beat-nonce-1"),
        ("/api/session/status", "status-nonce"),
        ("/api/session/end", "end-nonce-01"),
    ] {
        let raw = post_raw(
            &s,
            path,
            json!({"access_key": key, "session_id": id, "nonce": nonce}),
        )
        .await;
        assert_eq!(raw.status, StatusCode::OK, "{path}");
        assert_eq!(check(&raw, nonce, &prefix(&key)), Ok(()), "{path}");
    }

    // Errors too, with the stamp inside `error`: a session that is over,
    // an unknown key, a malformed key (no prefix to echo).
    let over = post_raw(
        &s,
        "/api/session/heartbeat",
        json!({"access_key": key, "session_id": id, "nonce": "after-the-end"}),
    )
    .await;
    assert_eq!(over.status, StatusCode::GONE);
    assert_eq!(check(&over, "after-the-end", &prefix(&key)), Ok(()));
    assert_eq!(over.json()["error"]["nonce"], "after-the-end");
    let stranger = keyseat::keys::AccessKey::generate();
    let unknown = post_raw(
        &s,
        "/api/session/status",
        json!({"access_key": stranger.expose_secret(), "nonce": "unknown-key"}),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(check(&unknown, "unknown-key", &stranger.prefix()), Ok(()));
    let malformed = post_raw(
        &s,
        "/api/session/status",
        json!({"access_key": "not a key", "nonce": "malformed-key"}),
    )
    .await;
    assert_eq!(malformed.status, StatusCode::UNAUTHORIZED);
    assert!(malformed.json()["error"]["key_prefix"].is_null());
    assert_eq!(
        check(&malformed, "malformed-key", "ks_whatever"),
        Err(Forgery::WrongKey),
        "an answer for no key is no answer for this one"
    );

    // An answer meant for another request or key does not pass.
    assert_eq!(
        check(&start, "another-nonce", &prefix(&key)),
        Err(Forgery::WrongNonce)
    );
    assert_eq!(
        check(&start, "start-nonce-1", "ks_00000000"),
        Err(Forgery::WrongKey)
    );
}

#[tokio::test]
async fn without_a_nonce_nothing_is_signed_and_a_bad_nonce_is_refused() {
    let s = TestServer::start().await;
    let (key, _) = s.create_key(json!({})).await;
    let plain = post_raw(&s, "/api/session/status", json!({"access_key": key})).await;
    assert_eq!(plain.status, StatusCode::OK);
    assert!(plain.signature.is_none());
    assert!(plain.json().get("nonce").is_none());
    for bad in [json!("short"), json!("with spaces in it"), json!(12345678)] {
        let raw = post_raw(
            &s,
            "/api/session/status",
            json!({"access_key": key, "nonce": bad}),
        )
        .await;
        let body = raw.json();
        common::assert_error(raw.status, &body, 400, "invalid_request");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("nonce"),
            "{body}"
        );
    }
    // Outside the session API nothing is sealed.
    let (status, health) = s.get("/health").await;
    assert_eq!(status, StatusCode::OK);
    assert!(health.get("nonce").is_none());
}

#[tokio::test]
async fn the_signing_key_survives_a_restart() {
    let s = TestServer::start().await;
    let (_, before) = published(&s).await;
    let s = s.restart_after(5).await;
    let (_, after) = published(&s).await;
    assert_eq!(before, after);
}

#[tokio::test]
async fn servers_on_one_database_share_the_signing_key() {
    if !common::on_postgres() {
        return; // one server per SQLite file; the PostgreSQL run covers it
    }
    let a = TestServer::start().await;
    let b = a.beside().await;
    let (_, on_a) = published(&a).await;
    let (_, on_b) = published(&b).await;
    assert_eq!(on_a, on_b);
    // Two stores making the first key at the same moment agree on one.
    let dir = tempfile::tempdir().unwrap();
    let url = keyseat::config::PostgresUrl::parse(&common::test_database(dir.path()).await)
        .expect("a PostgreSQL URL");
    let open = || {
        keyseat::store::PostgresStore::open(
            &url,
            keyseat::store::OpenMode::CreateAndMigrate,
            Default::default(),
        )
        .unwrap()
    };
    let (one, two) = (Arc::new(open()), Arc::new(open()));
    let now = a.now();
    let handles: Vec<_> = [one, two]
        .into_iter()
        .map(|store| {
            std::thread::spawn(move || {
                use keyseat::store::Storage;
                store.ensure_signing_key(now).unwrap()
            })
        })
        .collect();
    let kids: Vec<Vec<String>> = handles
        .into_iter()
        .map(|h| h.join().unwrap().into_iter().map(|k| k.kid).collect())
        .collect();
    assert_eq!(kids[0].len(), 1, "{kids:?}");
    assert_eq!(kids[0], kids[1]);
}

#[tokio::test]
async fn a_rotation_reaches_the_running_server_and_the_old_key_stays_listed() {
    let s = TestServer::start().await;
    let (key, _) = s.create_key(json!({})).await;
    let (_, before) = published(&s).await;
    let old_kid = before["keys"][0]["kid"].as_str().unwrap().to_owned();
    let store = s.store();
    let now = s.now();
    let new = tokio::task::spawn_blocking(move || {
        store.rotate_signing_key(now, keyseat::clock::Timestamp(now.0 - 30 * 86_400_000))
    })
    .await
    .unwrap()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (pinned, set) = published(&s).await;
        if set["keys"][0]["kid"] == new.kid.as_str() {
            assert_eq!(set["keys"][1]["kid"], old_kid.as_str(), "{set}");
            let raw = post_raw(
                &s,
                "/api/session/status",
                json!({"access_key": key, "nonce": "after-rotation"}),
            )
            .await;
            let (kid, _) = signing::parse_header(raw.signature.as_deref().unwrap()).unwrap();
            assert_eq!(kid, new.kid);
            assert_eq!(
                signing::verify(
                    &pinned,
                    raw.status.as_u16(),
                    raw.signature.as_deref(),
                    &raw.body,
                    "after-rotation",
                    Some(&prefix(&key))
                ),
                Ok(())
            );
            break;
        }
        assert!(Instant::now() < deadline, "the rotation never arrived");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What an impostor answers.
#[derive(Clone)]
enum Answer {
    /// This body, unsigned, with 200.
    Plain(Vec<u8>),
    /// This status, signature and body exactly (a replay).
    Replay(u16, Option<String>, Vec<u8>),
}

/// A fake server on port 0 answering every request the same way; or, while
/// `forward` is set, passing requests to `upstream`.
struct Impostor {
    url: String,
    forward: Arc<AtomicBool>,
    /// While forwarding: the status every answer is relabelled with (0:
    /// kept).
    relabel: Arc<AtomicU16>,
    answer: Arc<Mutex<Answer>>,
}

impl Impostor {
    fn start(answer: Answer, upstream: Option<String>) -> Impostor {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let forward = Arc::new(AtomicBool::new(upstream.is_some()));
        let answer = Arc::new(Mutex::new(answer));
        let relabel = Arc::new(AtomicU16::new(0));
        let (fw, rl, an) = (forward.clone(), relabel.clone(), answer.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (fw, rl, an, upstream) = (fw.clone(), rl.clone(), an.clone(), upstream.clone());
                std::thread::spawn(move || serve_one(conn, &fw, &rl, &an, upstream.as_deref()));
            }
        });
        Impostor {
            url,
            forward,
            relabel,
            answer,
        }
    }
}

fn serve_one(
    conn: std::net::TcpStream,
    forward: &AtomicBool,
    relabel: &AtomicU16,
    answer: &Mutex<Answer>,
    upstream: Option<&str>,
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut writer = conn;
    loop {
        let Some((path, body)) = common::http1::read_request(&mut reader) else {
            return;
        };
        let (status, signature, bytes) = match (forward.load(Ordering::SeqCst), upstream) {
            (true, Some(up)) => {
                let (status, signature, bytes) = http_post(&format!("{up}{path}"), &body);
                match relabel.load(Ordering::SeqCst) {
                    0 => (status, signature, bytes),
                    other => (other, signature, bytes),
                }
            }
            _ => match answer.lock().unwrap().clone() {
                Answer::Plain(b) => (200, None, b),
                Answer::Replay(status, signature, b) => (status, signature, b),
            },
        };
        let mut head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            bytes.len()
        );
        if let Some(sig) = signature {
            head.push_str(&format!("keyseat-signature: {sig}\r\n"));
        }
        head.push_str("\r\n");
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&bytes).is_err() {
            return;
        }
    }
}

/// A plausible unsigned answer to every session call.
fn fake_start() -> Vec<u8> {
    json!({
        "session_id": "fake-session-1", "fence": 1,
        "started_at": "2026-01-01T00:00:00Z", "expires_at": "2099-01-01T00:00:00Z",
        "last_heartbeat": "2026-01-01T00:00:00Z",
        "heartbeat_interval_seconds": 1, "session_timeout_seconds": 3,
        "previous_session_terminated": false, "terminated_sessions": [],
        "resumed": false, "ended": true
    })
    .to_string()
    .into_bytes()
}

/// A real server with short timing on its own thread's runtime, the key
/// an app pins, and an access key.
fn real_server() -> (TestServerThread, String, String) {
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let s = TestServer::start_with(|s| {
                s.heartbeat_interval_seconds = 1;
                s.session_timeout_seconds = 3;
            })
            .await;
            let (key, _) = s.create_key(json!({})).await;
            let (_, set) = published(&s).await;
            let x = set["keys"][0]["x"].as_str().unwrap().to_owned();
            tx.send((s.url.clone(), x, key)).unwrap();
            let _ = stop_rx.await;
        });
    });
    let (url, x, key) = rx.recv().unwrap();
    (
        TestServerThread {
            url,
            stop: Some(stop_tx),
            handle: Some(handle),
        },
        x,
        key,
    )
}

struct TestServerThread {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Drop for TestServerThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn untrusted(result: Result<keyseat::client::Session, ClientError>) -> String {
    match result {
        Err(ClientError::Untrusted(why)) => why,
        Err(other) => panic!("expected an untrusted answer, got {other:?}"),
        Ok(_) => panic!("the client believed an impostor"),
    }
}

#[test]
fn an_impostor_is_refused() {
    let (real, public_key, key) = real_server();
    let client = |url: &str| {
        Client::new(url, &key)
            .unwrap()
            .public_key(&public_key)
            .unwrap()
            .start_attempts(1)
    };
    // The real server passes.
    let session = client(&real.url)
        .start()
        .expect("the real server is trusted");
    assert!(session.is_usable());
    drop(session);

    // 1. Answers 200 to everything, unsigned.
    let impostor = Impostor::start(Answer::Plain(fake_start()), None);
    let why = untrusted(client(&impostor.url).start());
    assert!(why.contains("not signed"), "{why}");
    // Without a pinned key the same impostor is believed: why to pin.
    assert!(Client::new(&impostor.url, &key).unwrap().start().is_ok());

    // 2. Replays a genuine signed answer (to another request's nonce).
    let (_, signature, body) = http_post(
        &format!("{}/api/session/start", real.url),
        json!({"access_key": key, "nonce": "captured-by-an-attacker"})
            .to_string()
            .as_bytes(),
    );
    *impostor.answer.lock().unwrap() = Answer::Replay(200, signature.clone(), body.clone());
    let why = untrusted(client(&impostor.url).start());
    assert!(why.contains("nonce"), "{why}");

    // 3. Flips one byte of a genuine signed body.
    let mut flipped = body.clone();
    let at = flipped.iter().position(|b| *b == b'1').expect("a digit");
    flipped[at] = b'2';
    *impostor.answer.lock().unwrap() = Answer::Replay(200, signature, flipped);
    let why = untrusted(client(&impostor.url).start());
    assert!(why.contains("does not match its body"), "{why}");

    // 4. Signed by another key.
    let other = keyseat::signing::KeySet::new(
        &[keyseat::signing::KeyRecord::generate(
            keyseat::clock::Timestamp(0),
        )],
        keyseat::clock::Timestamp(0),
        30,
    )
    .unwrap();
    let body = fake_start();
    *impostor.answer.lock().unwrap() = Answer::Replay(200, Some(other.sign(&body)), body);
    let why = untrusted(client(&impostor.url).start());
    assert!(why.contains("not pinned"), "{why}");
}

#[test]
fn a_session_whose_answers_turn_forged_is_lost_as_untrusted_after_the_lease() {
    let (real, public_key, key) = real_server();
    let proxy = Impostor::start(Answer::Plain(fake_start()), Some(real.url.clone()));
    let (tx, rx) = std::sync::mpsc::channel();
    let session = Client::new(&proxy.url, &key)
        .unwrap()
        .public_key(&public_key)
        .unwrap()
        .on_event(move |e| {
            let _ = tx.send(e.clone());
        })
        .start()
        .expect("through the honest proxy");
    // From now on something else answers, with 200 and no signature.
    proxy.forward.store(false, Ordering::SeqCst);
    let switched = Instant::now();
    let reason = loop {
        match rx.recv_timeout(Duration::from_secs(8)).expect("an event") {
            SessionEvent::HeartbeatFailed { error, .. } => {
                assert!(error.contains("signature check"), "{error}");
                assert!(session.is_usable(), "usable while the lease lasts");
            }
            SessionEvent::Lost(reason) => break reason,
            SessionEvent::Recovered { .. } => panic!("a forged answer counted as recovery"),
        }
    };
    let after = switched.elapsed();
    assert!(matches!(reason, LostReason::Untrusted { .. }), "{reason:?}");
    assert!(reason.to_string().starts_with("untrusted"), "{reason}");
    assert!(
        after <= Duration::from_secs(5),
        "lost {after:?} after the switch"
    );
}

/// The signature covers the body, not the HTTP status: a genuine 409
/// `session_superseded` relabelled 200 on the way is not believed as a
/// renewed lease (the device is never told it kept a seat it lost).
#[test]
fn a_genuine_refusal_relabelled_200_is_not_a_renewal() {
    let (real, public_key, key) = real_server();
    let proxy = Impostor::start(Answer::Plain(fake_start()), Some(real.url.clone()));
    let (tx, rx) = std::sync::mpsc::channel();
    let session = Client::new(&proxy.url, &key)
        .unwrap()
        .public_key(&public_key)
        .unwrap()
        .on_event(move |e| {
            let _ = tx.send(e.clone());
        })
        .start()
        .unwrap();
    proxy.relabel.store(200, Ordering::SeqCst);
    // Device B takes the seat on the real server.
    let _b = Client::new(&real.url, &key)
        .unwrap()
        .device_name("B")
        .start()
        .unwrap();
    let reason = loop {
        match rx.recv_timeout(Duration::from_secs(8)).expect("an event") {
            SessionEvent::HeartbeatFailed { error, .. } => {
                assert!(error.contains("status does not match"), "{error}");
            }
            SessionEvent::Lost(reason) => break reason,
            SessionEvent::Recovered { .. } => panic!("a relabelled refusal renewed the lease"),
        }
    };
    assert!(matches!(reason, LostReason::Untrusted { .. }), "{reason:?}");
    assert!(!session.is_usable());
}

#[test]
fn the_reference_client_exits_9_on_untrusted_answers() {
    let (_real, public_key, key) = real_server();
    let impostor = Impostor::start(Answer::Plain(fake_start()), None);
    let out = common::keyseat_command()
        .args([
            "client",
            "--server",
            &impostor.url,
            "--public-key",
            &public_key,
        ])
        .env("KEYSEAT_KEY", &key)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(9), "{stderr}");
    assert!(stderr.contains("not trusted"), "{stderr}");
    let bad = common::keyseat_command()
        .args(["client", "--server", &impostor.url, "--public-key", "nope"])
        .env("KEYSEAT_KEY", &key)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--public-key"));
}

/// POSTs JSON bytes: status, signature header, body, whatever the status.
fn http_post(url: &str, body: &[u8]) -> (u16, Option<String>, Vec<u8>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .post(url)
        .header("content-type", "application/json")
        .send(body)
        .unwrap();
    let signature = resp
        .headers()
        .get("keyseat-signature")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = resp.body_mut().read_to_vec().unwrap();
    (resp.status().as_u16(), signature, bytes)
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .unwrap()
}
