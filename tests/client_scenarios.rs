//! The shared client scenarios of docs/clients.md that the Rust client's
//! other test files (client.rs, signing.rs, borrowing.rs, tls/) do not
//! already cover, each a test of the scenario's name, against a real
//! server in-process on port 0 with short intervals. Heartbeats are seen
//! through a relay in front of the server that records them and can strip
//! `wait_seconds` (a server that answers at once) or answer 429.
#![cfg(feature = "client")]

mod common;

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use keyseat::client::{Client, ClientError, LostReason, SessionEvent, SessionState};
use keyseat::clock::{Clock, SystemClock};
use keyseat::config::Settings;
use keyseat::model::{Actor, ConflictPolicy, KeyStatus};
use keyseat::server::Server;
use keyseat::store::{KeyPatch, NewKey};
use serde_json::Value;

/// A server with the system clock on its own runtime (the blocking client
/// runs on the test's thread).
struct Bg {
    rt: tokio::runtime::Runtime,
    server: Option<Server>,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Bg {
    fn start(interval: u64, timeout: u64) -> Bg {
        let dir = tempfile::tempdir().unwrap();
        let mut settings: Settings = common::test_settings(&dir);
        settings.heartbeat_interval_seconds = interval;
        settings.session_timeout_seconds = timeout;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            Server::start(settings, listener, Arc::new(SystemClock))
                .await
                .unwrap()
        });
        Bg {
            rt,
            addr: server.addr(),
            server: Some(server),
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn store(&self) -> Arc<dyn keyseat::store::Storage> {
        self.server.as_ref().unwrap().store()
    }

    /// A new key: its access key and key id.
    fn key(&self, new: NewKey) -> (String, String) {
        let created = self
            .store()
            .create_key(&new, SystemClock.now(), &Actor::cli())
            .unwrap();
        (
            created.access_key.expose_secret().to_owned(),
            created.key.key_id,
        )
    }

    fn live(&self) -> Vec<keyseat::model::Session> {
        self.store().live_sessions(None, SystemClock.now()).unwrap()
    }

    fn public_key(&self) -> String {
        let keys = self.store().signing_keys().unwrap();
        keyseat::signing::listed(&keys, SystemClock.now(), 30)[0]
            .jwk()
            .x
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            let _ = self.rt.block_on(s.stop());
        }
    }
}

/// A relay in front of the server: records each heartbeat's body and when
/// it came; with `strip` removes `wait_seconds` before forwarding; answers
/// the first `refuse` heartbeats 429 with `Retry-After: 1`.
struct Relay {
    url: String,
    beats: Arc<Mutex<Vec<(Instant, Value)>>>,
}

impl Relay {
    fn start(upstream: String, strip: bool, refuse: usize) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let beats = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(AtomicUsize::new(0));
        let seen = beats.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (up, seen, refused) = (upstream.clone(), seen.clone(), refused.clone());
                std::thread::spawn(move || {
                    relay_one(conn, &up, strip, &seen, &|| {
                        refused.fetch_add(1, Ordering::SeqCst) < refuse
                    })
                });
            }
        });
        Relay { url, beats }
    }

    fn beats(&self) -> Vec<(Instant, Value)> {
        self.beats.lock().unwrap().clone()
    }
}

fn relay_one(
    conn: TcpStream,
    upstream: &str,
    strip: bool,
    beats: &Mutex<Vec<(Instant, Value)>>,
    refuse: &dyn Fn() -> bool,
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut writer = conn;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    loop {
        let Some((path, mut body)) = common::http1::read_request(&mut reader) else {
            return;
        };
        let path = path.as_str();
        let mut extra = String::new();
        let (status, bytes) = if path == "/api/session/heartbeat" && refuse() {
            beats.lock().unwrap().push((Instant::now(), Value::Null));
            extra.push_str("retry-after: 1\r\n");
            let busy =
                r#"{"error":{"code":"rate_limited","message":"too many requests; retry in 1 s"}}"#;
            (429, busy.as_bytes().to_vec())
        } else {
            if path == "/api/session/heartbeat" {
                let mut json: Value = serde_json::from_slice(&body).unwrap();
                beats.lock().unwrap().push((Instant::now(), json.clone()));
                if strip
                    && json
                        .as_object_mut()
                        .unwrap()
                        .remove("wait_seconds")
                        .is_some()
                {
                    body = json.to_string().into_bytes();
                }
            }
            let mut resp = agent
                .post(&format!("{upstream}{path}"))
                .header("content-type", "application/json")
                .send(&body[..])
                .unwrap();
            (
                resp.status().as_u16(),
                resp.body_mut().read_to_vec().unwrap(),
            )
        };
        let head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n",
            bytes.len()
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&bytes).is_err() {
            return;
        }
    }
}

/// The gaps between consecutive recorded heartbeats.
fn gaps(beats: &[(Instant, Value)]) -> Vec<Duration> {
    beats.windows(2).map(|w| w[1].0 - w[0].0).collect()
}

/// A start takes the seat; heartbeats keep it past the timeout, moving
/// `last_heartbeat`; `end()` frees it. (Ending twice cannot be written in
/// Rust: `end` takes the session by value.)
#[test]
fn start_heartbeat_end() {
    let bg = Bg::start(1, 2);
    let (key, _) = bg.key(NewKey::default());
    let session = Client::new(&bg.url(), &key).unwrap().start().unwrap();
    assert_eq!(session.state(), SessionState::Active);
    let first = bg.live()[0].last_heartbeat;
    std::thread::sleep(Duration::from_millis(3_000));
    let live = bg.live();
    assert_eq!(live.len(), 1, "kept past the 2 s timeout");
    assert_eq!(live[0].session_id, session.id());
    assert!(live[0].last_heartbeat > first, "last_heartbeat moved");
    assert!(session.is_usable());
    assert_eq!(session.end(), Ok(true));
    assert!(bg.live().is_empty());
}

/// An admin kick reaches the app as *revoked*; a key suspended under a
/// live session as *key refused*.
#[test]
fn an_admin_kick_is_told_as_revoked() {
    let bg = Bg::start(1, 3);
    let (key, key_id) = bg.key(NewKey::default());
    let client = Client::new(&bg.url(), &key).unwrap();
    let session = client.start().unwrap();
    let (tx, rx) = mpsc::channel();
    session.on_lost(move |r| tx.send(r).unwrap());
    bg.store()
        .kick_session(session.id(), SystemClock.now(), &Actor::cli())
        .unwrap();
    let reason = rx.recv_timeout(Duration::from_secs(3)).expect("told");
    assert_eq!(reason, LostReason::Revoked);
    assert_eq!(reason.to_string(), "revoked by an administrator");
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "once");
    assert_eq!(session.end(), Ok(false));

    let session = client.start().unwrap();
    let patch = KeyPatch {
        status: Some(KeyStatus::Suspended),
        ..Default::default()
    };
    bg.store()
        .update_key(&key_id, &patch, SystemClock.now(), &Actor::cli())
        .unwrap();
    // Suspending ends the live session (`revoked`) or its next heartbeat
    // meets the suspended key: either way the app is told.
    match session.wait_lost(Some(Duration::from_secs(3))) {
        Some(LostReason::KeyRefused { code, .. }) => assert_eq!(code, "key_suspended"),
        Some(LostReason::Revoked) => {}
        other => panic!("{other:?}"),
    }
}

/// A bad URL, public key, CA file, device name or number of hours is a typed error naming it, never a crash.
#[test]
fn bad_inputs_are_typed_errors() {
    let bg = Bg::start(1, 3);
    let (key, _) = bg.key(NewKey::default());
    for url in ["ftp://x", "localhost:8080", "http://", ""] {
        assert!(
            matches!(Client::new(url, &key), Err(ClientError::Config(_))),
            "{url}"
        );
    }
    let client = || Client::new(&bg.url(), &key).unwrap();
    for pin in ["not a key!", "AAAA", ""] {
        assert!(
            matches!(client().public_key(pin), Err(ClientError::Config(_))),
            "{pin}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "not pem").unwrap();
    for ca in [dir.path().join("missing.pem"), not_pem] {
        match client().ca_file(&ca) {
            Err(ClientError::Config(why)) => assert!(
                why.contains(&ca.display().to_string()),
                "names the file: {why}"
            ),
            other => panic!("{other:?}"),
        }
    }
    // The server's own refusals of bad values: typed, with the code.
    let refused = |e: ClientError| match e {
        ClientError::Refused { status, code, .. } => (status, code),
        other => panic!("{other:?}"),
    };
    let tab = client().device_name("tab\there").start().unwrap_err();
    assert_eq!(refused(tab), (400, "invalid_request".into()));
    assert_eq!(
        refused(client().borrow(0).unwrap_err()),
        (400, "invalid_request".into())
    );
}

/// Unknown key, seats full, a revoked key and no server at all each give
/// their own typed error with the contract's code.
#[test]
fn refusals_carry_the_contracts_codes() {
    let bg = Bg::start(1, 3);
    let refused = |e: ClientError| match e {
        ClientError::Refused { status, code, .. } => (status, code),
        other => panic!("{other:?}"),
    };
    let unknown = keyseat::keys::AccessKey::generate();
    let err = Client::new(&bg.url(), unknown.expose_secret())
        .unwrap()
        .start()
        .unwrap_err();
    assert_eq!(refused(err), (401, "invalid_key".into()));

    let (reject, _) = bg.key(NewKey {
        on_conflict: Some(ConflictPolicy::Reject),
        ..Default::default()
    });
    let holder = Client::new(&bg.url(), &reject).unwrap().start().unwrap();
    let late = Client::new(&bg.url(), &reject)
        .unwrap()
        .start()
        .unwrap_err();
    assert_eq!(refused(late), (409, "seats_full".into()));
    assert!(holder.is_usable());
    assert_eq!(holder.end(), Ok(true));

    let (revoked, key_id) = bg.key(NewKey::default());
    bg.store()
        .revoke_key(&key_id, SystemClock.now(), &Actor::cli())
        .unwrap();
    let err = Client::new(&bg.url(), &revoked)
        .unwrap()
        .start()
        .unwrap_err();
    assert_eq!(refused(err), (403, "key_revoked".into()));

    // Nothing listening: unreachable after the configured attempts.
    let closed = Client::new("http://127.0.0.1:9", unknown.expose_secret())
        .unwrap()
        .start_attempts(1)
        .start()
        .unwrap_err();
    assert!(matches!(closed, ClientError::Unreachable(_)), "{closed:?}");
}

/// The client's and the session's printed forms show only the key's
/// prefix.
#[test]
fn the_access_key_is_never_shown_whole() {
    let bg = Bg::start(1, 3);
    let (key, _) = bg.key(NewKey::default());
    let client = Client::new(&bg.url(), &key).unwrap();
    let session = client.start().unwrap();
    for shown in [format!("{client:?}"), format!("{session:?}")] {
        assert!(!shown.contains(&key[11..]), "{shown}");
    }
    assert!(format!("{client:?}").contains(&format!("{}…", &key[..11])));
    assert_eq!(session.end(), Ok(true));
}

/// With the pinned public key every answer of the real server verifies
/// (start, heartbeats, end); its refusals are signed too (a refusal, not
/// *untrusted*); a second pinned key is accepted beside it.
#[test]
fn a_verified_session_starts_heartbeats_and_ends() {
    let bg = Bg::start(1, 3);
    let (key, _) = bg.key(NewKey::default());
    let other = keyseat::signing::KeyRecord::generate(keyseat::clock::Timestamp(0))
        .jwk()
        .x;
    let pinned = |key: &str| {
        Client::new(&bg.url(), key)
            .unwrap()
            .public_key(&other)
            .unwrap()
            .public_key(&bg.public_key())
            .unwrap()
    };
    let (tx, rx) = mpsc::channel();
    let session = pinned(&key)
        .on_event(move |e| {
            let _ = tx.send(e.clone());
        })
        .start()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2_500));
    assert!(rx.try_recv().is_err(), "no heartbeat failed");
    assert_eq!(session.state(), SessionState::Active);
    assert_eq!(session.end(), Ok(true));
    let unknown = keyseat::keys::AccessKey::generate();
    let err = pinned(unknown.expose_secret()).start().unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused { code, .. } if code == "invalid_key"),
        "{err:?}"
    );
}

/// Held heartbeats ask for `wait_seconds` and follow each other at once.
#[test]
fn held_heartbeats_follow_each_other_and_carry_wait_seconds() {
    let bg = Bg::start(2, 10);
    let relay = Relay::start(bg.url(), false, 0);
    let (key, _) = bg.key(NewKey::default());
    // A 3 s call budget leaves room in the 10 s lease for 1 s holds.
    let session = Client::new(&relay.url, &key)
        .unwrap()
        .timeout(Duration::from_secs(3))
        .unwrap()
        .start()
        .unwrap();
    std::thread::sleep(Duration::from_millis(4_200));
    assert_eq!(session.end(), Ok(true));
    let beats = relay.beats();
    assert!(beats.len() >= 3, "{beats:?}");
    assert!(
        beats.iter().all(|(_, b)| b["wait_seconds"] == 1),
        "{beats:?}"
    );
    // A held one answered after its 1 s: the next follows at once.
    for gap in gaps(&beats) {
        assert!(gap < Duration::from_millis(1_500), "{gap:?}");
    }
}

/// A server that ignores `wait_seconds` (answers at once) gets one
/// heartbeat per interval, never a tight loop.
#[test]
fn a_server_answering_at_once_gets_one_heartbeat_per_interval() {
    let bg = Bg::start(1, 4);
    let relay = Relay::start(bg.url(), true, 0);
    let (key, _) = bg.key(NewKey::default());
    let session = Client::new(&relay.url, &key).unwrap().start().unwrap();
    std::thread::sleep(Duration::from_millis(3_500));
    assert_eq!(session.end(), Ok(true));
    let beats = relay.beats();
    assert!((2..=5).contains(&beats.len()), "{}", beats.len());
    for gap in gaps(&beats[1..]) {
        assert!(gap >= Duration::from_millis(900), "{gap:?}");
    }
}

/// With waiting heartbeats off, plain heartbeats an interval apart.
#[test]
fn waiting_heartbeats_off_sends_plain_ones_an_interval_apart() {
    let bg = Bg::start(1, 4);
    let relay = Relay::start(bg.url(), false, 0);
    let (key, _) = bg.key(NewKey::default());
    let session = Client::new(&relay.url, &key)
        .unwrap()
        .waiting_heartbeats(false)
        .start()
        .unwrap();
    std::thread::sleep(Duration::from_millis(3_300));
    assert_eq!(session.end(), Ok(true));
    let beats = relay.beats();
    assert!((2..=4).contains(&beats.len()), "{}", beats.len());
    assert!(beats.iter().all(|(_, b)| b.get("wait_seconds").is_none()));
    for gap in gaps(&beats) {
        assert!(gap >= Duration::from_millis(900), "{gap:?}");
    }
}

/// A 429 with `Retry-After` is transient: retried no sooner than it says,
/// within the lease, then recovered.
#[test]
fn a_429_is_retried_after_its_retry_after_within_the_lease() {
    let bg = Bg::start(1, 6);
    let relay = Relay::start(bg.url(), false, 2);
    let (key, _) = bg.key(NewKey::default());
    let (tx, rx) = mpsc::channel();
    let session = Client::new(&relay.url, &key)
        .unwrap()
        .on_event(move |e| {
            let _ = tx.send(e.clone());
        })
        .start()
        .unwrap();
    let mut failed = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(8)).expect("an event") {
            SessionEvent::HeartbeatFailed { error, .. } => failed.push(error),
            SessionEvent::Recovered { failed_attempts } => {
                assert_eq!(failed_attempts, 2);
                break;
            }
            SessionEvent::Lost(r) => panic!("lost: {r}"),
        }
    }
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(failed[0].contains("429"), "{failed:?}");
    let beats = relay.beats();
    for gap in gaps(&beats[..3]) {
        assert!(gap >= Duration::from_millis(990), "{gap:?}");
    }
    assert_eq!(session.state(), SessionState::Active);
    assert_eq!(session.end(), Ok(true));
}

/// Not a shared scenario but the Rust client's own promise: a panic in
/// the app's hooks is the app's bug and stops nothing. The event hook
/// panics on every event, yet the lost hook is still told, and a second
/// session of the same client heartbeats on through a panicking hook.
#[test]
fn an_apps_panicking_hook_stops_nothing() {
    let bg = Bg::start(1, 3);
    let (key, _) = bg.key(NewKey::default());
    let client = Client::new(&bg.url(), &key)
        .unwrap()
        .on_event(|event| panic!("the app's hook is broken: {event:?}"));
    let session = client.start().unwrap();
    let (tx, rx) = mpsc::channel();
    session.on_lost(move |r| {
        tx.send(r).unwrap();
        panic!("and so is its lost hook");
    });
    bg.store()
        .kick_session(session.id(), SystemClock.now(), &Actor::cli())
        .unwrap();
    let reason = rx.recv_timeout(Duration::from_secs(3)).expect("told");
    assert_eq!(reason, LostReason::Revoked);
    assert_eq!(session.state(), SessionState::Lost(LostReason::Revoked));
    assert_eq!(session.end(), Ok(false));
}
