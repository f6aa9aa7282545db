//! Several keyseat servers on one PostgreSQL behind a real nginx, the
//! topology docs/high-availability.md describes: three `keyseat serve`
//! processes on one fresh database, nginx doing round robin over them
//! with the very `upstream`/`server` block the document shows (read from
//! it here, only the addresses swapped for this test's ports), and
//! `trusted_proxies = 127.0.0.1` so keyseat names the client, not nginx.
//!
//! Every device talks to nginx only, so consecutive requests of one device
//! land on different servers: what one server commits, the next must see.
//!
//! Needs `KEYSEAT_TEST_POSTGRES_URL` (see tests/common/postgres.rs) and
//! Debian's nginx (`apt-get install nginx`), and python3 for the Python
//! client's scenario; without them the tests skip, saying why, except under
//! `CI=true`, where a missing one is a failure.
//!
//! This file is the scenarios; the machinery is in the modules:
//! [`topology`] (the servers and nginx), [`nginx`] (its documented block
//! and access log), [`replica`] (the failover's primary and replica),
//! [`devices`] (the clients) and [`checks`] (seats held, by clients and
//! servers).
#![cfg(feature = "client")]

mod checks;
#[path = "../common/mod.rs"]
mod common;
mod devices;
mod host;
mod nginx;
mod replica;
mod topology;

use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use checks::{assert_all_live, assert_all_usable, failed_heartbeats, keep_all_usable, wait_for};
use common::api::Answered;
use devices::device;
use keyseat::client::{LostReason, SessionState};
use replica::Failover;
use serde_json::json;
use topology::Topology;

const ADMIN_TOKEN: &str = "high-availability-admin-token-0123456789";
const INTERVAL: Duration = Duration::from_secs(1);
const TIMEOUT_SECS: u64 = 3;

/// A takeover across servers: device B starts on a full one-seat key
/// through nginx (round robin puts its start on another server than A's),
/// and device A's client learns within a couple of heartbeat intervals,
/// from whichever server answers its next heartbeat, that it was superseded
/// by B, named.
#[test]
fn a_takeover_on_another_server_reaches_the_first_device_naming_the_second() {
    let Some(topo) = Topology::start() else {
        return;
    };
    let (key, _) = topo.create_key(json!({"max_sessions": 1, "on_conflict": "takeover"}));
    let events = Arc::new(Mutex::new(Vec::new()));
    let a = device(&topo, &key, "device A", &events);
    let (told, lost) = mpsc::channel();
    a.on_lost(move |reason| {
        let _ = told.send((reason, Instant::now()));
    });

    let b = device(&topo, &key, "device B", &events);
    let b_started = Instant::now();
    assert!(b.info().previous_session_terminated, "B took A's seat");
    let ended: Vec<_> = b.info().terminated.iter().map(|t| &t.session_id).collect();
    assert_eq!(ended, [a.id()], "B's start names A's session");
    assert_eq!(
        b.info().terminated[0].device_name.as_deref(),
        Some("device A")
    );
    assert!(b.fence() > a.fence(), "fences increase across servers");

    let (reason, at) = lost
        .recv_timeout(2 * INTERVAL + Duration::from_millis(500))
        .unwrap_or_else(|_| panic!("A never learnt it was superseded: {:?}", a.state()));
    let latency = at - b_started;
    eprintln!("takeover noticed by device A {latency:?} after B's start (interval {INTERVAL:?})");
    match &reason {
        LostReason::Superseded { by_device, .. } => {
            assert_eq!(by_device.as_deref(), Some("device B"), "{reason}")
        }
        other => panic!("A lost its seat for another reason: {other}"),
    }
    assert_eq!(a.state(), SessionState::Lost(reason));
    assert_eq!(topo.live(&key), [b.id()], "only B holds the seat");

    let starts = topo.start_upstreams();
    eprintln!("starts went to {starts:?}");
    eprintln!(
        "nginx's log (method, path, status, server, seconds):\n{}",
        topo.nginx.access_log().join("\n")
    );
    assert_eq!(starts.len(), 2, "{starts:?}");
    assert_ne!(
        starts[0], starts[1],
        "round robin sent both starts to one server"
    );
    assert!(b.end().unwrap(), "B was still live");
    drop(a);
    topo.check_logs();
}

/// One server killed (SIGKILL) under devices heartbeating through nginx:
/// nginx skips it (`proxy_next_upstream error timeout`), the client retries
/// what failed in flight, and no device loses its seat for several
/// intervals, well past the session timeout. Restarted on its port, the
/// server rejoins the rotation, and its restart extends no one's lease (it
/// is not an outage while other servers were alive): a silent session
/// still expires on time.
#[test]
fn killing_one_server_loses_no_device_and_its_restart_extends_no_lease() {
    let Some(mut topo) = Topology::start() else {
        return;
    };
    let events = Arc::new(Mutex::new(Vec::new()));
    let mut sessions = Vec::new();
    let mut keys = Vec::new();
    for i in 0..3 {
        let (key, _) = topo.create_key(json!({"max_sessions": 1}));
        sessions.push(device(&topo, &key, &format!("solo {i}"), &events));
        keys.push(key);
    }
    let (shared, _) = topo.create_key(json!({"max_sessions": 3}));
    for i in 0..3 {
        sessions.push(device(&topo, &shared, &format!("shared {i}"), &events));
    }
    keys.push(shared.clone());
    let all_live = |topo: &Topology| {
        let live = assert_all_live(topo, &keys, &sessions);
        assert_eq!(live.len(), sessions.len(), "{live:?}");
    };
    // Two intervals of heartbeats spread over the three servers.
    keep_all_usable(&sessions, &events, Instant::now() + 2 * INTERVAL);

    topo.servers[1].sigkill();
    let killed_at = Instant::now();
    // Past the session timeout: any seat lost for lack of heartbeats would
    // be gone by now.
    let until = killed_at + Duration::from_secs(TIMEOUT_SECS + 2);
    keep_all_usable(&sessions, &events, until);
    all_live(&topo);
    let failed = failed_heartbeats(&events);
    let moved = topo.nginx.moved_away_from(topo.servers[1].port());
    eprintln!(
        "after the kill: {moved} requests moved by nginx to another server, {} heartbeats \
         failed at the client (then retried): {failed:?}",
        failed.len()
    );

    // A silent session, its lease fixed before the restart.
    let (silent_key, _) = topo.create_key(json!({"max_sessions": 1}));
    let api = topo.api();
    topo.rt
        .block_on(api.start(&silent_key, Some("silent-device"), Some("silent"), None))
        .answer("silent start");
    let lease_before = topo
        .rt
        .block_on(api.status(&silent_key))
        .answer("status")
        .sessions[0]
        .expires_at
        .0;

    let killed_port = topo.servers[1].port();
    let rt = &topo.rt;
    topo.servers[1].spawn(rt);
    let restarted_at = Instant::now();
    let log_len = topo.nginx.access_log().len();
    // nginx retries it after fail_timeout (5 s in the documented block).
    wait_for(
        "nginx sends requests to the restarted server again",
        Duration::from_secs(15),
        || {
            assert_all_usable(&sessions, &events);
            topo.nginx.served_since(log_len, killed_port)
        },
    );
    eprintln!(
        "the restarted server served again {:?} after its restart",
        restarted_at.elapsed()
    );
    let silent = topo.rt.block_on(api.status(&silent_key)).answer("status");
    match silent.sessions.first() {
        Some(s) => assert_eq!(
            s.expires_at.0, lease_before,
            "the restart of one server moved a silent session's lease"
        ),
        None => assert!(
            common::unix_ms() >= lease_before,
            "the silent session ended before its lease"
        ),
    }
    // Gone once its lease has passed (and a sweep, every second, ran).
    wait_for(
        "the silent session expires on time",
        Duration::from_millis((lease_before - common::unix_ms()).max(0) as u64 + 2_500),
        || topo.live(&silent_key).is_empty(),
    );
    assert!(
        common::unix_ms() >= lease_before,
        "the silent session ended early"
    );
    let beat = topo
        .rt
        .block_on(api.heartbeat(&silent_key, "silent-device"))
        .refused(410, "session_expired");
    assert_eq!(beat.code, "session_expired");

    assert_all_usable(&sessions, &events);
    all_live(&topo);
    assert!(
        !events.lock().unwrap().iter().any(|e| e.contains("Lost")),
        "{:?}",
        events.lock().unwrap()
    );
    for s in sessions {
        assert!(s.end().unwrap(), "still live at the end");
    }
    topo.check_logs();
}

/// The audit log names the device, not nginx: with `trusted_proxies =
/// 127.0.0.1` keyseat takes the right-most `X-Forwarded-For` address that
/// is not a trusted proxy (docs/api.md, "Client addresses behind a reverse
/// proxy"). A device at 127.0.0.2 is recorded as 127.0.0.2; one at
/// 127.0.0.3 that forges `X-Forwarded-For: 198.51.100.9` is still recorded
/// as 127.0.0.3 (nginx appends the real peer, which is not trusted); and a
/// request from 127.0.0.1 (a trusted proxy in front of nginx) carrying
/// `X-Forwarded-For: 203.0.113.7` is recorded as 203.0.113.7.
#[test]
fn the_audit_log_names_the_client_behind_nginx() {
    let Some(topo) = Topology::start() else {
        return;
    };
    let (key, key_id) = topo.create_key(json!({"max_sessions": 5}));
    let cases = [
        ("127.0.0.2", None, "127.0.0.2"),
        ("127.0.0.3", Some("198.51.100.9"), "127.0.0.3"),
        ("127.0.0.1", Some("203.0.113.7"), "203.0.113.7"),
    ];
    for (i, (from, forwarded, _)) in cases.iter().enumerate() {
        let status = devices::start_from(&topo, from, *forwarded, &key, &format!("addr-case-{i}"));
        assert_eq!(status, 200, "start from {from}");
    }
    let page = topo
        .rt
        .block_on(
            topo.api()
                .events(&format!("key_id={key_id}&type=session_started")),
        )
        .answer("events through nginx");
    for (i, (from, forwarded, want)) in cases.iter().enumerate() {
        let id = format!("addr-case-{i}");
        let event = page
            .events
            .iter()
            .find(|e| e.session_id.as_deref() == Some(id.as_str()))
            .unwrap_or_else(|| panic!("no session_started event for {id}"));
        assert_eq!(
            event.client_addr.as_deref(),
            Some(*want),
            "a start from {from} with X-Forwarded-For {forwarded:?}"
        );
    }
    topo.check_logs();
}

/// The Python client through nginx: device A starts, device B takes over
/// on another server, and A's `on_lost` hears `superseded` naming B
/// (tests/high_availability/python_takeover.py, run with the package from
/// clients/python/src, which needs nothing beyond the standard library).
#[test]
fn the_python_client_sees_a_takeover_across_servers() {
    let Some(python) = host::python3() else {
        return;
    };
    let Some(topo) = Topology::start() else {
        return;
    };
    let (key, _) = topo.create_key(json!({"max_sessions": 1}));
    let seen = devices::python_takeover(python, &topo, &key);
    eprintln!("the Python client saw {seen}");
    assert_eq!(seen["reason"], "superseded");
    assert_eq!(seen["by_device"], "Python B");
    assert_eq!(
        seen["message"],
        "superseded: device \"Python B\" started with the same access key"
    );
    let latency = seen["latency_s"].as_f64().unwrap();
    assert!(latency <= 2.5, "noticed after {latency} s");
    let starts = topo.start_upstreams();
    assert_eq!(starts.len(), 2, "{starts:?}");
    assert_ne!(starts[0], starts[1], "both starts on one server");
    topo.check_logs();
}

/// A primary failover under devices heartbeating through nginx: the
/// database URL lists the primary and its streaming replica with
/// `target_session_attrs=read-write` (docs/high-availability.md), the
/// replica is synchronous (`synchronous_standby_names = '*'`), the primary
/// is killed (`pg_ctl stop -m immediate`) and the replica promoted
/// (`pg_ctl promote`). Requests in between get 503 and the clients retry
/// within their lease; then every server finds the new primary through
/// the host list, no device loses its seat, the start acknowledged just
/// before the crash is there, and an end acknowledged before it stays.
#[test]
fn a_failover_to_a_promoted_replica_loses_no_device_and_no_acknowledged_change() {
    let Some(nginx) = host::nginx_binary() else {
        return;
    };
    let rt = topology::runtime();
    let Some(databases) = Failover::start(&rt) else {
        return;
    };
    let topo = Topology::on(nginx, rt, databases.url.clone());

    let events = Arc::new(Mutex::new(Vec::new()));
    let mut sessions = Vec::new();
    let mut keys = Vec::new();
    for i in 0..3 {
        let (key, _) = topo.create_key(json!({"max_sessions": 1}));
        sessions.push(device(&topo, &key, &format!("device {i}"), &events));
        keys.push(key);
    }
    let api = topo.api();
    let (ended_key, _) = topo.create_key(json!({"max_sessions": 1}));
    topo.rt
        .block_on(api.start(&ended_key, Some("ended-before-failover"), None, None))
        .answer("start");
    topo.rt
        .block_on(api.end(&ended_key, "ended-before-failover"))
        .answer("end");
    // The last start before the crash.
    let (last_key, _) = topo.create_key(json!({"max_sessions": 1}));
    sessions.push(device(&topo, &last_key, "started last", &events));
    keys.push(last_key);

    databases.primary.stop_immediate();
    let crashed = Instant::now();
    // The operator (or Patroni) takes a moment to promote.
    keep_all_usable(&sessions, &events, crashed + INTERVAL);
    databases.replica.promote();
    let promoted = Instant::now();
    // Writes work again once a server reaches the new primary.
    let mut unavailable = 0;
    let back = loop {
        assert_all_usable(&sessions, &events);
        match topo
            .rt
            .block_on(api.create_key(json!({"label": "after the failover"})))
        {
            Ok(_) => break promoted.elapsed(),
            Err(e) if e.status == 503 || e.status == 502 => unavailable += 1,
            Err(e) => panic!("a write after the failover: {e}"),
        }
        assert!(
            promoted.elapsed() < Duration::from_secs(20),
            "no write succeeded within 20 s of the promotion"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "failover: primary killed, promoted {:?} later; writes back {back:?} after the \
         promotion ({unavailable} answered 503/502 before)",
        promoted - crashed
    );
    // Several intervals, past the timeout, on the new primary.
    let until = Instant::now() + Duration::from_secs(TIMEOUT_SECS + 1);
    keep_all_usable(&sessions, &events, until);
    assert_all_live(&topo, &keys, &sessions);
    let e = topo
        .rt
        .block_on(api.heartbeat(&ended_key, "ended-before-failover"))
        .refused(410, "session_ended");
    assert_eq!(
        e.code, "session_ended",
        "the end acknowledged before the crash"
    );
    let failed = failed_heartbeats(&events).len();
    let statuses = topo.nginx.heartbeat_statuses();
    let slowest = topo.nginx.slowest_request();
    eprintln!(
        "failover: {failed} heartbeats failed at the clients and were retried, no seat lost; \
         heartbeat answers through nginx: {} (non-200: {:?}); slowest request {slowest} s",
        statuses.len(),
        statuses.iter().filter(|s| *s != "200").collect::<Vec<_>>()
    );
    for s in sessions {
        assert!(s.end().unwrap(), "still live at the end");
    }
    topo.check_logs();
}
