//! The device side against a real server: the client library's promises
//! (supersede reaches the app quickly and names the other device; restarts
//! and short outages are survived; a server gone for good is reported as
//! unreachable after the lease and not before; end and drop are prompt),
//! `keyseat check`, and the reference client's exit codes.
#![cfg(feature = "client")]

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyseat::client::{Client, LostReason, SessionEvent, SessionState};
use keyseat::clock::{Clock, ManualClock, SystemClock};
use keyseat::config::Settings;
use keyseat::model::Actor;
use keyseat::server::Server;
use keyseat::store::NewKey;

/// A server on its own runtime, so tests can use the blocking client.
struct Bg {
    rt: tokio::runtime::Runtime,
    server: Option<Server>,
    settings: Settings,
    clock: Arc<dyn Clock>,
    addr: SocketAddr,
    _dir: Arc<tempfile::TempDir>,
}

impl Bg {
    fn start(tweak: impl FnOnce(&mut Settings)) -> Bg {
        Self::start_with_clock(tweak, Arc::new(SystemClock))
    }

    fn start_with_clock(tweak: impl FnOnce(&mut Settings), clock: Arc<dyn Clock>) -> Bg {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let mut settings = common::test_settings(&dir);
        settings.heartbeat_interval_seconds = 1;
        settings.session_timeout_seconds = 3;
        tweak(&mut settings);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut bg = Bg {
            rt,
            server: None,
            settings,
            clock,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            _dir: dir,
        };
        bg.launch();
        bg
    }

    fn launch(&mut self) {
        let (settings, clock, addr) = (self.settings.clone(), self.clock.clone(), self.addr);
        let server = self.rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
            Server::start(settings, listener, clock).await.unwrap()
        });
        self.addr = server.addr();
        self.server = Some(server);
    }

    fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            self.rt.block_on(s.stop()).unwrap();
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn key(&self, new: NewKey) -> String {
        let store = self.server.as_ref().unwrap().store();
        let created = store
            .create_key(&new, self.clock.now(), &Actor::cli())
            .unwrap();
        created.access_key.expose_secret().to_owned()
    }

    /// The public key an app pins (`signing-key show --pin`).
    fn public_key(&self) -> String {
        let store = self.server.as_ref().unwrap().store();
        let keys = store.signing_keys().unwrap();
        keyseat::signing::listed(&keys, self.clock.now(), 30)[0]
            .jwk()
            .x
    }

    fn live_sessions(&self) -> usize {
        let store = self.server.as_ref().unwrap().store();
        store.live_sessions(None, self.clock.now()).unwrap().len()
    }
}

/// A takeover reaches device A's app within one heartbeat interval, with
/// device B's name, through on_lost, wait_lost and state.
#[test]
fn takeover_is_told_with_the_other_device() {
    let bg = Bg::start(|_| {});
    let key = bg.key(NewKey::default());
    let a = Client::new(&bg.url(), &key)
        .unwrap()
        .device_name("Device A")
        .start()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    a.on_lost(move |reason| tx.send(reason).unwrap());

    let b = Client::new(&bg.url(), &key)
        .unwrap()
        .device_name("Device B")
        .start()
        .unwrap();
    let superseded_at = Instant::now();
    assert!(b.info().previous_session_terminated);
    assert_eq!(
        b.info().terminated[0].device_name.as_deref(),
        Some("Device A")
    );
    assert_eq!(b.fence(), a.fence() + 1);

    let reason = rx.recv_timeout(Duration::from_secs(3)).expect("A is told");
    let delay = superseded_at.elapsed();
    eprintln!("supersede detected after {delay:?} (interval 1 s)");
    assert!(delay <= Duration::from_millis(1500), "took {delay:?}");
    assert!(
        matches!(&reason, LostReason::Superseded { by_device: Some(d), .. } if d == "Device B")
    );
    assert_eq!(a.wait_lost(Some(Duration::ZERO)), Some(reason.clone()));
    assert_eq!(a.state(), SessionState::Lost(reason));
    assert!(!a.is_usable());
    assert!(b.is_usable());
    // Ending a superseded session is harmless and reports it was not live.
    assert_eq!(a.end(), Ok(false));
    assert_eq!(b.end(), Ok(true));
}

/// The server stopped for less than the timeout and started again on the
/// same file and port: the session carries on, with failures and the
/// recovery reported as events.
#[test]
fn a_restart_is_survived() {
    let mut bg = Bg::start(|s| s.session_timeout_seconds = 4);
    let key = bg.key(NewKey::default());
    let (tx, rx) = mpsc::channel();
    let session = Client::new(&bg.url(), &key)
        .unwrap()
        .on_event(move |e| {
            let _ = tx.send(e.clone());
        })
        .start()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let outage = Instant::now();
    bg.stop();
    // Wait until the client has noticed.
    match rx.recv_timeout(Duration::from_secs(3)).unwrap() {
        SessionEvent::HeartbeatFailed { lease_left, .. } => assert!(lease_left > Duration::ZERO),
        other => panic!("expected a failed heartbeat, got {other:?}"),
    }
    assert!(matches!(session.state(), SessionState::Retrying { .. }));
    assert!(session.is_usable(), "usable while the lease lasts");
    std::thread::sleep(Duration::from_millis(800));
    bg.launch();
    let recovered = loop {
        match rx.recv_timeout(Duration::from_secs(4)).expect("recovers") {
            SessionEvent::Recovered { failed_attempts } => break failed_attempts,
            SessionEvent::Lost(r) => panic!("lost during a short outage: {r}"),
            SessionEvent::HeartbeatFailed { .. } => {}
        }
    };
    eprintln!(
        "outage of ~1.2 s survived; recovered {:?} after the stop, after {recovered} failed attempt(s)",
        outage.elapsed()
    );
    assert_eq!(session.state(), SessionState::Active);
    assert_eq!(bg.live_sessions(), 1);
    assert_eq!(session.end(), Ok(true));
}

/// The server gone for good: the session is lost as `unreachable` once the
/// lease the server last granted runs out, and not before.
#[test]
fn a_server_gone_for_good_is_lost_after_the_lease_not_before() {
    let mut bg = Bg::start(|s| s.session_timeout_seconds = 3);
    let key = bg.key(NewKey::default());
    let (tx, rx) = mpsc::channel();
    let session = Client::new(&bg.url(), &key)
        .unwrap()
        .on_event(move |e| {
            let _ = tx.send((Instant::now(), e.clone()));
        })
        .start()
        .unwrap();
    // The last lease granted is at most one interval old when we stop.
    let stopped = Instant::now();
    bg.stop();
    let lost_at = loop {
        let (at, event) = rx.recv_timeout(Duration::from_secs(6)).expect("reported");
        if let SessionEvent::Lost(reason) = event {
            assert!(
                matches!(reason, LostReason::Unreachable { .. }),
                "{reason:?}"
            );
            break at;
        }
        assert!(session.is_usable(), "usable until the lease runs out");
    };
    let after = lost_at - stopped;
    eprintln!("server gone: lost as unreachable {after:?} after the stop (timeout 3 s)");
    // The lease was granted at most 1 s (one interval) before the stop.
    assert!(after >= Duration::from_secs(2), "too early: {after:?}");
    assert!(after <= Duration::from_millis(3_700), "too late: {after:?}");
    assert!(matches!(
        session.state(),
        SessionState::Lost(LostReason::Unreachable { .. })
    ));
}

/// end() returns at once while a heartbeat is held (30 s interval) and is
/// not a loss; dropping a session ends it on the server within a bounded
/// time.
#[test]
fn end_is_prompt_while_a_heartbeat_is_held() {
    let bg = Bg::start(|s| {
        s.heartbeat_interval_seconds = 30;
        s.session_timeout_seconds = 60;
    });
    let key = bg.key(NewKey {
        max_sessions: Some(2),
        ..Default::default()
    });
    let client = Client::new(&bg.url(), &key).unwrap();
    let a = client.start().unwrap();
    let b = client.start().unwrap();
    assert_eq!(bg.live_sessions(), 2);
    let (tx, lost) = mpsc::channel();
    a.on_lost(move |reason| tx.send(reason).unwrap());
    // Let A's first heartbeat be held by the server.
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(a.end(), Ok(true));
    let end_took = t.elapsed();
    let t = Instant::now();
    drop(b);
    let drop_took = t.elapsed();
    eprintln!("end() took {end_took:?}, drop took {drop_took:?}");
    assert!(end_took < Duration::from_secs(1));
    assert!(drop_took < Duration::from_secs(1));
    assert_eq!(bg.live_sessions(), 0);
    assert!(lost.try_recv().is_err(), "ending is not a loss");
}

/// With the default 30 s interval, a takeover reaches device A's app
/// within 100 ms: its heartbeat is held by the server and answered the
/// moment B takes the seat (the old path would take up to 30 s).
#[test]
fn takeover_is_told_within_100_ms_with_a_30_s_interval() {
    let bg = Bg::start(|s| {
        s.heartbeat_interval_seconds = 30;
        s.session_timeout_seconds = 60;
    });
    let key = bg.key(NewKey::default());
    let a = Client::new(&bg.url(), &key)
        .unwrap()
        .device_name("A")
        .start()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    a.on_lost(move |reason| {
        let _ = tx.send((reason, Instant::now()));
    });
    // Let A's first held heartbeat reach the server.
    std::thread::sleep(Duration::from_millis(300));
    let took_over = Instant::now();
    let b = Client::new(&bg.url(), &key)
        .unwrap()
        .device_name("B")
        .start()
        .unwrap();
    let (reason, told) = rx.recv_timeout(Duration::from_secs(5)).expect("A is told");
    assert!(matches!(reason, LostReason::Superseded { by_device: Some(ref d), .. } if d == "B"));
    let delay = told.saturating_duration_since(took_over);
    assert!(delay < Duration::from_millis(100), "told after {delay:?}");
    eprintln!(
        "takeover told to A {} ms after B's start was sent",
        delay.as_millis()
    );
    b.end().unwrap();
}

fn keyseat_bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keyseat"));
    for (k, _) in std::env::vars() {
        if k.starts_with("KEYSEAT_") {
            c.env_remove(k);
        }
    }
    c
}

/// `keyseat check` passes on a correct server (7/7 with expiry) and fails,
/// naming the check and exiting non-zero, on a key with two seats.
#[test]
fn check_passes_on_a_correct_server_and_names_a_failure() {
    let bg = Bg::start(|s| {
        s.heartbeat_interval_seconds = 1;
        s.session_timeout_seconds = 2;
    });
    let key = bg.key(NewKey::default());
    let out = keyseat_bin()
        .args([
            "check",
            "--server",
            &bg.url(),
            "--key",
            &key,
            "--with-expiry",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("8/8 checks passed"), "{text}");
    for name in [
        "health",
        "signatures",
        "start",
        "heartbeat",
        "status",
        "one-device-at-a-time",
        "end",
        "expiry",
    ] {
        assert!(text.contains(&format!("PASS {name}:")), "{name} in {text}");
    }
    assert_eq!(bg.live_sessions(), 0, "check ends every session it opened");

    let two_seats = bg.key(NewKey {
        max_sessions: Some(2),
        ..Default::default()
    });
    let out = keyseat_bin()
        .args(["check", "--server", &bg.url(), "--key", &two_seats])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(text.contains("FAIL one-device-at-a-time:"), "{text}");
    assert!(text.contains("6/7 checks passed"), "{text}");
    assert_eq!(bg.live_sessions(), 0, "check ends every session it opened");

    // With the server's public key pinned every check is verified; with
    // another key the signatures check says which key to pin.
    let public = bg.public_key();
    let out = keyseat_bin()
        .args([
            "check",
            "--server",
            &bg.url(),
            "--key",
            &key,
            "--public-key",
            &public,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("PASS signatures: answers are signed by the pinned key"),
        "{text}"
    );
    let other = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    let out = keyseat_bin()
        .args([
            "check",
            "--server",
            &bg.url(),
            "--key",
            &key,
            "--public-key",
            other,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains("FAIL signatures: the pinned key") && text.contains(&public),
        "{text}"
    );
    assert!(
        text.contains("FAIL start:") && text.contains("not pinned"),
        "{text}"
    );
    assert_eq!(bg.live_sessions(), 0, "check ends every session it opened");

    let out = keyseat_bin()
        .args(["check", "--server", "http://127.0.0.1:9", "--key", &key])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains("FAIL health:") && text.contains("0/7 checks passed"),
        "{text}"
    );
}

/// The key can stay out of `ps`: `check` (like `client`) takes it from
/// KEYSEAT_KEY or from standard input (`--key -`); with none of the three
/// it says how to give one and exits 2.
#[test]
fn the_key_can_come_from_the_environment_or_standard_input() {
    let bg = Bg::start(|_| {});
    let key = bg.key(NewKey::default());
    let out = keyseat_bin()
        .args(["check", "--server", &bg.url()])
        .env("KEYSEAT_KEY", &key)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("7/7 checks passed"), "{text}");

    let mut child = keyseat_bin()
        .args(["check", "--server", &bg.url(), "--key", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "{key}").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");

    for command in ["check", "client"] {
        let out = keyseat_bin()
            .args([command, "--server", &bg.url()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{command}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("KEYSEAT_KEY"), "{command}: {err}");
    }
}

fn spawn_client(url: &str, key: &str, device: &str) -> std::process::Child {
    keyseat_bin()
        .args([
            "client",
            "--server",
            url,
            "--key",
            key,
            "--device-name",
            device,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_exit(child: &mut std::process::Child, limit: Duration) -> (i32, String) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = String::new();
            use std::io::Read;
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            return (status.code().unwrap_or(-1), out);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("client did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_live(bg: &Bg, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while bg.live_sessions() != n {
        assert!(
            Instant::now() < deadline,
            "never reached {n} live session(s)"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `keyseat client`'s exit codes (docs/clients.md's table): 0 on SIGTERM
/// (session ended), 3 superseded, 5 revoked, 6 key refused, 7 unreachable,
/// 8 seats full here; 4 in `reference_client_exits_4_when_expired`, 9 in
/// signing.rs, 10 in borrowing.rs, 11 in tls/; the table itself against
/// the code in clients_scenarios.rs.
#[test]
fn the_cli_exit_codes_are_the_documented_ones() {
    let bg = Bg::start(|_| {});
    let url = bg.url();
    let key = bg.key(NewKey::default());

    // Superseded: A is told B's name and exits 3.
    let mut a = spawn_client(&url, &key, "Device A");
    wait_live(&bg, 1);
    let mut b = spawn_client(&url, &key, "Device B");
    let (code, out) = wait_exit(&mut a, Duration::from_secs(5));
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("lost: superseded: device \"Device B\""),
        "{out}"
    );

    // SIGTERM: B ends its session and exits 0.
    wait_live(&bg, 1);
    let pid = b.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let (code, out) = wait_exit(&mut b, Duration::from_secs(5));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning: previous session on another device was disconnected: \"Device A\""),
        "{out}"
    );
    assert!(out.contains("ended by user"), "{out}");
    assert_eq!(bg.live_sessions(), 0);

    // Revoked: an admin kicks the session.
    let mut c = spawn_client(&url, &key, "Device C");
    wait_live(&bg, 1);
    let store = bg.server.as_ref().unwrap().store();
    let live = store.live_sessions(None, bg.clock.now()).unwrap();
    store
        .kick_session(&live[0].session_id, bg.clock.now(), &Actor::cli())
        .unwrap();
    let (code, out) = wait_exit(&mut c, Duration::from_secs(5));
    assert_eq!(code, 5, "{out}");

    // Key refused (typo, caught locally), unreachable, seats full.
    let (code, _) = wait_exit(
        &mut spawn_client(&url, "ks_typo", "x"),
        Duration::from_secs(5),
    );
    assert_eq!(code, 6);
    let (code, _) = wait_exit(
        &mut spawn_client("http://127.0.0.1:9", &key, "x"),
        Duration::from_secs(15),
    );
    assert_eq!(code, 7);
    let reject = bg.key(NewKey {
        on_conflict: Some(keyseat::model::ConflictPolicy::Reject),
        ..Default::default()
    });
    let mut holder = spawn_client(&url, &reject, "holder");
    wait_live(&bg, 1);
    let (code, out) = wait_exit(
        &mut spawn_client(&url, &reject, "late"),
        Duration::from_secs(5),
    );
    assert_eq!(code, 8, "{out}");
    let _ = holder.kill();
    let _ = holder.wait();
}

/// A SIGTERM that comes while the session is starting still ends it: the
/// client catches signals from before its start, so it ends the session it
/// gets instead of dying with the seat taken until the lease runs out.
/// The start's answer is held back (a proxy that forwards nothing until
/// the signal is sent), so the signal surely arrives mid-start.
#[test]
fn a_sigterm_while_starting_ends_the_session() {
    let bg = Bg::start(|_| {});
    let key = bg.key(NewKey::default());
    let upstream: SocketAddr = bg.url().trim_start_matches("http://").parse().unwrap();
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", proxy.local_addr().unwrap());
    let (accepted, first) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut released = Some(released);
        for device in proxy.incoming().flatten() {
            let _ = accepted.send(());
            if let Some(gate) = released.take() {
                let _ = gate.recv();
            }
            let mut server = std::net::TcpStream::connect(upstream).unwrap();
            let (mut from, mut to) = (device.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || std::io::copy(&mut from, &mut to));
            let mut device = device;
            std::thread::spawn(move || std::io::copy(&mut server, &mut device));
        }
    });
    let mut client = spawn_client(&url, &key, "A");
    first
        .recv_timeout(Duration::from_secs(10))
        .expect("the start connected");
    let pid = client.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    release.send(()).unwrap();
    let (code, out) = wait_exit(&mut client, Duration::from_secs(10));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ended by user"), "{out}");
    assert_eq!(bg.live_sessions(), 0, "the seat is free at once");
}

/// Exit code 4: the server expired the session (here by moving the
/// server's clock past the timeout between two heartbeats).
#[test]
fn reference_client_exits_4_when_expired() {
    let clock = Arc::new(ManualClock::starting_now());
    let bg = Bg::start_with_clock(|_| {}, clock.clone());
    let key = bg.key(NewKey::default());
    let mut a = spawn_client(&bg.url(), &key, "A");
    wait_live(&bg, 1);
    clock.advance_secs(10);
    let (code, out) = wait_exit(&mut a, Duration::from_secs(5));
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("lost: expired"), "{out}");
}
