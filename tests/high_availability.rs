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
#![cfg(feature = "client")]

mod common;

use std::fs::{File, OpenOptions};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::api::{Answered, Api};
use keyseat::client::{Client, LostReason, Session, SessionEvent, SessionState};
use serde_json::{json, Value};

const ADMIN_TOKEN: &str = "high-availability-admin-token-0123456789";
const INTERVAL: Duration = Duration::from_secs(1);
const TIMEOUT_SECS: u64 = 3;
/// The document whose nginx block the test runs.
const DOC: &str = "docs/high-availability.md";

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Skips (None, with the reason on stderr), or panics under `CI=true`.
fn skip<T>(why: &str) -> Option<T> {
    assert!(!in_ci(), "CI=true, so this test must run: {why}");
    eprintln!("skipping a high-availability test: {why}");
    None
}

/// Debian's nginx (/usr/sbin is not on every PATH).
fn nginx_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nginx"))
            .find(|p| p.is_file())
    });
    on_path
        .or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.is_file()))
        .or_else(|| skip("nginx is not installed (Debian: apt-get install nginx)"))
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Sends `signal` (a name such as `TERM`) to `pid` with kill(1).
fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// Waits up to `limit` for `child` to exit; whether it did.
fn wait_exit(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Polls `done` every 50 ms until it holds; panics with `what` after `limit`.
fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One `keyseat serve` on a fixed port, restartable there; killed on drop.
struct Keyseat {
    port: u16,
    db: String,
    log: PathBuf,
    child: Option<Child>,
}

impl Keyseat {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self, rt: &tokio::runtime::Runtime) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = common::serve_command(&self.db, self.port);
        cmd.env("KEYSEAT_ADMIN_TOKEN", ADMIN_TOKEN)
            .env(
                "KEYSEAT_HEARTBEAT_INTERVAL_SECONDS",
                INTERVAL.as_secs().to_string(),
            )
            .env("KEYSEAT_SESSION_TIMEOUT_SECONDS", TIMEOUT_SECS.to_string())
            .env("KEYSEAT_SWEEP_INTERVAL_SECONDS", "1")
            .env("KEYSEAT_TRUSTED_PROXIES", "127.0.0.1")
            .env("KEYSEAT_RATE_LIMITS", "on")
            .env("KEYSEAT_LOG", "info")
            .stderr(log);
        let mut child = cmd.spawn().expect("spawn keyseat serve");
        rt.block_on(common::wait_healthy(&mut child, &self.url(), &self.log));
        self.child = Some(child);
    }

    /// SIGKILL: no clean stop, no last sweep.
    fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Keyseat {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// nginx in the foreground on its own config and prefix; stopped on drop
/// (SIGTERM to the master, which stops its workers; SIGKILL if it hangs).
struct Nginx {
    child: Child,
    prefix: PathBuf,
}

impl Nginx {
    /// The access log: `METHOD URI STATUS UPSTREAM_ADDR SECONDS` per
    /// request (UPSTREAM_ADDR lists every server tried, `a, b`).
    fn access_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.prefix.join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        signal(self.child.id(), "TERM");
        if !wait_exit(&mut self.child, Duration::from_secs(5)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The nginx block of docs/high-availability.md: the ```nginx fence after
/// the comment that names this test.
fn documented_nginx_block() -> String {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(DOC))
        .unwrap_or_else(|e| panic!("reading {DOC}: {e}"));
    let marker = doc
        .find("tests/high_availability.rs runs nginx with exactly")
        .unwrap_or_else(|| panic!("{DOC} lost the comment marking the tested nginx block"));
    let after = &doc[marker..];
    let open = after
        .find("```nginx\n")
        .expect("a ```nginx block after the marker")
        + 9;
    let len = after[open..].find("\n```").expect("the nginx block's end");
    after[open..open + len].to_owned()
}

/// The documented block with the document's addresses (nginx on
/// 10.0.0.10:80, keyseat on 10.0.0.11-13:8080) swapped for local ports;
/// each must occur exactly once, so the document cannot drift from this.
fn tested_nginx_block(listen: u16, servers: &[u16]) -> String {
    let mut block = documented_nginx_block();
    let mut swaps = vec![(
        "listen 10.0.0.10:80;".to_owned(),
        format!("listen 127.0.0.1:{listen};"),
    )];
    for (i, port) in servers.iter().enumerate() {
        swaps.push((
            format!("server 10.0.0.{}:8080 ", 11 + i),
            format!("server 127.0.0.1:{port} "),
        ));
    }
    for (from, to) in swaps {
        assert_eq!(
            block.matches(&from).count(),
            1,
            "{DOC}'s nginx block should contain `{from}` once:\n{block}"
        );
        block = block.replace(&from, &to);
    }
    block
}

/// The whole nginx.conf: everything nginx writes is under `prefix`, and the
/// http block is the documented one plus an access log naming the upstream.
fn nginx_conf(prefix: &Path, block: &str) -> String {
    let p = prefix.display();
    // As root the master starts its workers as `user` (nginx's default,
    // nobody, needs a group that exists: Debian's is nogroup); otherwise
    // nginx ignores the directive with a warning, so it is left out.
    let user = if running_as_root() {
        "user nobody nogroup;\n"
    } else {
        ""
    };
    let block: String = block.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "{user}worker_processes 1;\n\
         pid {p}/nginx.pid;\n\
         error_log {p}/error.log info;\n\
         events {{ worker_connections 512; }}\n\
         http {{\n\
         \x20   log_format upstreams '$request_method $uri $status $upstream_addr $request_time';\n\
         \x20   access_log {p}/access.log upstreams;\n\
         \x20   client_body_temp_path {p}/client_body;\n\
         \x20   proxy_temp_path {p}/proxy;\n\
         \x20   fastcgi_temp_path {p}/fastcgi;\n\
         \x20   uwsgi_temp_path {p}/uwsgi;\n\
         \x20   scgi_temp_path {p}/scgi;\n\
         {block}}}\n"
    )
}

/// Three servers on one fresh database behind nginx.
struct Topology {
    rt: tokio::runtime::Runtime,
    db: String,
    servers: Vec<Keyseat>,
    nginx: Nginx,
    /// nginx's URL: the only one devices use.
    url: String,
    _dir: tempfile::TempDir,
}

impl Topology {
    /// None (the test skips) without PostgreSQL or nginx.
    fn start() -> Option<Topology> {
        let nginx = nginx_binary()?;
        let rt = runtime();
        let db = rt.block_on(common::postgres::fresh_database())?;
        Some(Topology::on(nginx, rt, db))
    }

    /// The servers on the database at `db`, nginx from `nginx_bin`.
    fn on(nginx_bin: PathBuf, rt: tokio::runtime::Runtime, db: String) -> Topology {
        let dir = tempfile::Builder::new().prefix("ks-ha-").tempdir().unwrap();
        // nginx's workers (nobody, as root) must reach their temp paths.
        set_mode(dir.path(), 0o755);

        let mut servers: Vec<Keyseat> = (0..3)
            .map(|i| Keyseat {
                port: common::free_port(),
                db: db.clone(),
                log: dir.path().join(format!("keyseat-{i}.log")),
                child: None,
            })
            .collect();
        for server in &mut servers {
            server.spawn(&rt);
        }
        warm_up(&rt, &servers);

        let listen = common::free_port();
        let ports: Vec<u16> = servers.iter().map(|s| s.port).collect();
        let prefix = dir.path().join("nginx");
        std::fs::create_dir(&prefix).unwrap();
        set_mode(&prefix, 0o755);
        let conf = prefix.join("nginx.conf");
        std::fs::write(
            &conf,
            nginx_conf(&prefix, &tested_nginx_block(listen, &ports)),
        )
        .unwrap();
        let child = Command::new(nginx_bin)
            .arg("-e")
            .arg(prefix.join("error.log"))
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(&prefix)
            .arg("-g")
            .arg("daemon off;")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(prefix.join("stderr.log")).unwrap())
            .spawn()
            .expect("spawn nginx");
        let mut nginx = Nginx { child, prefix };
        let url = format!("http://127.0.0.1:{listen}");
        let health = Api::new(&url);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = nginx.child.try_wait().unwrap() {
                panic!(
                    "nginx exited ({status}):\n{}\n{}",
                    std::fs::read_to_string(nginx.prefix.join("stderr.log")).unwrap_or_default(),
                    nginx.error_log()
                );
            }
            if rt.block_on(health.health()).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "nginx never answered /health:\n{}",
                nginx.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Topology {
            rt,
            db,
            servers,
            nginx,
            url,
            _dir: dir,
        }
    }

    /// The admin and session API through nginx.
    fn api(&self) -> Api {
        Api::new(&self.url).with_admin(ADMIN_TOKEN)
    }

    fn create_key(&self, body: Value) -> (String, String) {
        let created = self
            .rt
            .block_on(self.api().create_key(body))
            .answer("create key");
        (created.access_key, created.key.key_id)
    }

    /// The key's live sessions, asked through nginx.
    fn live(&self, key: &str) -> Vec<String> {
        let status = self.rt.block_on(self.api().status(key)).answer("status");
        status.sessions.into_iter().map(|s| s.session_id).collect()
    }

    /// `upstream_addr` of the start requests nginx logged, in order.
    fn start_upstreams(&self) -> Vec<String> {
        self.nginx
            .access_log()
            .iter()
            .filter(|l| l.starts_with("POST /api/session/start "))
            .filter_map(|l| l.split(' ').nth(3).map(str::to_owned))
            .collect()
    }

    /// Asserts no server panicked or logged the database password.
    fn check_logs(&self) {
        let password = self
            .db
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('@'))
            .and_then(|(user_info, _)| user_info.split_once(':'))
            .map(|(_, pw)| pw.to_owned())
            .expect("the test database's URL has a password");
        for server in &self.servers {
            let log = server.log_text();
            assert!(!log.contains("panicked"), "a server panicked:\n{log}");
            assert!(
                !log.contains(&password),
                "{} shows the database password",
                server.log.display()
            );
        }
    }
}

/// One request per pool on every server (a status and a heartbeat of an
/// unknown session), so that the scenarios measure servers that have been
/// running, not each pool's first connection to PostgreSQL (about 0.1 s
/// in a debug build, several times that on a loaded machine).
fn warm_up(rt: &tokio::runtime::Runtime, servers: &[Keyseat]) {
    let first = Api::new(&servers[0].url()).with_admin(ADMIN_TOKEN);
    let key = rt
        .block_on(first.create_key(json!({"label": "warm-up"})))
        .answer("create the warm-up key")
        .access_key;
    for server in servers {
        let api = Api::new(&server.url());
        rt.block_on(api.status(&key)).answer("warm-up status");
        rt.block_on(api.heartbeat(&key, "warm-up-unknown-session"))
            .refused(404, "session_not_found");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A device: the Rust client through nginx, recording every event.
fn device(topo: &Topology, key: &str, name: &str, events: &Arc<Mutex<Vec<String>>>) -> Session {
    let events = events.clone();
    let name_for_events = name.to_owned();
    Client::new(&topo.url, key)
        .unwrap()
        .device_name(name)
        .on_event(move |e: &SessionEvent| {
            events
                .lock()
                .unwrap()
                .push(format!("{name_for_events}: {e:?}"));
        })
        .start()
        .unwrap_or_else(|e| panic!("{name} starts through nginx: {e}"))
}

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
    let all_usable = |sessions: &[Session]| {
        for s in sessions {
            assert!(
                s.is_usable(),
                "{} lost its seat: {:?}\nevents: {:?}",
                s.id(),
                s.state(),
                events.lock().unwrap()
            );
        }
    };
    let all_live = |topo: &Topology| {
        let live: Vec<String> = keys.iter().flat_map(|k| topo.live(k)).collect();
        for s in &sessions {
            assert!(live.iter().any(|id| id == s.id()), "{} is not live", s.id());
        }
        assert_eq!(live.len(), sessions.len(), "{live:?}");
    };
    // Two intervals of heartbeats spread over the three servers.
    let until = Instant::now() + 2 * INTERVAL;
    while Instant::now() < until {
        all_usable(&sessions);
        std::thread::sleep(Duration::from_millis(100));
    }

    topo.servers[1].sigkill();
    let killed_at = Instant::now();
    // Past the session timeout: any seat lost for lack of heartbeats would
    // be gone by now.
    let until = killed_at + Duration::from_secs(TIMEOUT_SECS + 2);
    while Instant::now() < until {
        all_usable(&sessions);
        std::thread::sleep(Duration::from_millis(100));
    }
    all_live(&topo);
    let failed: Vec<String> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.contains("HeartbeatFailed"))
        .cloned()
        .collect();
    let moved = topo
        .nginx
        .access_log()
        .iter()
        .filter(|l| l.contains(&format!("127.0.0.1:{}, ", topo.servers[1].port)))
        .count();
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

    let killed_port = topo.servers[1].port;
    let rt = &topo.rt;
    topo.servers[1].spawn(rt);
    let restarted_at = Instant::now();
    let rejoined = format!("127.0.0.1:{killed_port}");
    let log_len = topo.nginx.access_log().len();
    // nginx retries it after fail_timeout (5 s in the documented block).
    wait_for(
        "nginx sends requests to the restarted server again",
        Duration::from_secs(15),
        || {
            all_usable(&sessions);
            topo.nginx.access_log()[log_len..]
                .iter()
                .any(|l| l.contains(&format!(" 200 {rejoined} ")))
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
            common_unix_ms() >= lease_before,
            "the silent session ended before its lease"
        ),
    }
    // Gone once its lease has passed (and a sweep, every second, ran).
    wait_for(
        "the silent session expires on time",
        Duration::from_millis((lease_before - common_unix_ms()).max(0) as u64 + 2_500),
        || topo.live(&silent_key).is_empty(),
    );
    assert!(
        common_unix_ms() >= lease_before,
        "the silent session ended early"
    );
    let beat = topo
        .rt
        .block_on(api.heartbeat(&silent_key, "silent-device"))
        .refused(410, "session_expired");
    assert_eq!(beat.code, "session_expired");

    all_usable(&sessions);
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

fn common_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
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
        let http = reqwest::Client::builder()
            .local_address(from.parse::<IpAddr>().unwrap())
            .build()
            .unwrap();
        let mut req = http
            .post(format!("{}/api/session/start", topo.url))
            .json(&json!({"access_key": key, "session_id": format!("addr-case-{i}")}));
        if let Some(f) = forwarded {
            req = req.header("X-Forwarded-For", *f);
        }
        let resp = topo.rt.block_on(req.send()).expect("start through nginx");
        assert_eq!(resp.status(), 200, "start from {from}");
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
    let Some(python) = python3() else {
        return;
    };
    let Some(topo) = Topology::start() else {
        return;
    };
    let (key, _) = topo.create_key(json!({"max_sessions": 1}));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = common::clean_command(python)
        .arg(root.join("tests/high_availability/python_takeover.py"))
        .env("PYTHONPATH", root.join("clients/python/src"))
        .env("KEYSEAT_HA_URL", &topo.url)
        .env("KEYSEAT_HA_KEY", &key)
        .env("NO_PROXY", "127.0.0.1")
        .stdin(Stdio::null())
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python_takeover.py failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let seen: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|_| panic!("python_takeover.py printed {stdout:?}\n{stderr}"));
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

/// python3, if there is one (a failure under `CI=true` when missing).
fn python3() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("python3"))
                .find(|p| p.is_file())
        })
        .or_else(|| skip("python3 is not installed"))
}

/// The PostgreSQL binaries' directory, as .ci/postgres.sh finds it
/// (`KEYSEAT_PG_BIN`, else the newest /usr/lib/postgresql/*/bin).
fn pg_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("KEYSEAT_PG_BIN").filter(|b| !b.is_empty()) {
        return PathBuf::from(bin);
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_basebackup").exists().then_some((version, bin))
        })
        .max();
    match newest {
        Some((_, bin)) => bin,
        None => PathBuf::new(), // on PATH
    }
}

/// A command run as the owner of the test's clusters: as root, the
/// unprivileged user .ci/postgres.sh runs PostgreSQL as.
fn as_pg_owner(program: PathBuf) -> Command {
    if running_as_root() {
        let user = std::env::var("KEYSEAT_PG_USER").unwrap_or_else(|_| "keyseat-pg".into());
        let mut cmd = Command::new("runuser");
        cmd.arg("-u").arg(user).arg("--").arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

#[track_caller]
fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A streaming replica of a test cluster (`pg_basebackup -R`), on a port
/// of its own; stopped and removed on drop.
struct Replica {
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
}

impl Replica {
    /// Copies the primary at 127.0.0.1:`primary_port` and starts streaming.
    fn start(primary_port: u16, password: &str) -> Replica {
        let bin = pg_bin();
        let dir = tempfile::Builder::new()
            .prefix("ks-pg-replica-")
            .tempdir_in("/tmp")
            .unwrap();
        if running_as_root() {
            let user = std::env::var("KEYSEAT_PG_USER").unwrap_or_else(|_| "keyseat-pg".into());
            run_ok(
                Command::new("chown")
                    .arg(format!("{user}:"))
                    .arg(dir.path()),
            );
        }
        let data = dir.path().join("data");
        run_ok(
            as_pg_owner(bin.join("pg_basebackup"))
                .current_dir(dir.path())
                .env("PGPASSWORD", password)
                .args(["-h", "127.0.0.1", "-U", "keyseat", "-X", "stream", "-R"])
                .args(["-c", "fast", "-p"])
                .arg(primary_port.to_string())
                .arg("-D")
                .arg(&data),
        );
        let port = common::free_port();
        let replica = Replica { dir, port, bin };
        run_ok(
            as_pg_owner(replica.bin.join("pg_ctl"))
                .current_dir(replica.dir.path())
                .arg("start")
                .arg("-D")
                .arg(&data)
                .args(["-w", "-t", "60", "-l"])
                .arg(replica.dir.path().join("log"))
                .arg("-o")
                .arg(format!(
                    "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories='{}' \
                     -c fsync=off -c max_connections=300",
                    replica.dir.path().display()
                ))
                .stdout(Stdio::null()),
        );
        replica
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut cmd = as_pg_owner(self.bin.join("pg_ctl"));
        cmd.current_dir(self.dir.path())
            .args(args)
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .stdout(Stdio::null());
        cmd
    }

    /// `pg_ctl promote -w`: the replica becomes a primary.
    fn promote(&self) {
        run_ok(&mut self.pg_ctl(&["promote", "-w", "-t", "60"]));
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w"]).status();
    }
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
    let Some(nginx) = nginx_binary() else {
        return;
    };
    let Some(primary) = common::postgres::Cluster::start() else {
        return;
    };
    let rt = runtime();
    let primary_db = rt.block_on(common::postgres::create_database(primary.url()));
    let password = primary_db
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(user_info, _)| user_info.split_once(':'))
        .map(|(_, pw)| pw.to_owned())
        .unwrap();
    let primary_port: u16 = std::fs::read_to_string(primary.dir().join("port"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let replica = Replica::start(primary_port, &password);
    // Synchronous: an acknowledged start or end is on the replica too.
    rt.block_on(async {
        let admin = common::postgres::connect(primary.url()).await;
        for sql in [
            "ALTER SYSTEM SET synchronous_standby_names = '*'",
            "SELECT pg_reload_conf()",
        ] {
            admin.batch_execute(sql).await.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let sync: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_replication \
                     WHERE state = 'streaming' AND sync_state = 'sync'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if sync == 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the replica never became synchronous"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let primary_host = format!("127.0.0.1:{primary_port}");
    assert_eq!(primary_db.matches(&primary_host).count(), 1, "{primary_db}");
    let db = primary_db.replace(
        &primary_host,
        &format!("{primary_host},127.0.0.1:{}", replica.port),
    ) + "?target_session_attrs=read-write";
    let topo = Topology::on(nginx, rt, db);

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

    let all_usable = |sessions: &[Session]| {
        for s in sessions {
            assert!(
                s.is_usable(),
                "{} lost its seat: {:?}\nevents: {:?}",
                s.id(),
                s.state(),
                events.lock().unwrap()
            );
        }
    };

    primary.stop_immediate();
    let crashed = Instant::now();
    // The operator (or Patroni) takes a moment to promote.
    while crashed.elapsed() < INTERVAL {
        all_usable(&sessions);
        std::thread::sleep(Duration::from_millis(100));
    }
    replica.promote();
    let promoted = Instant::now();
    // Writes work again once a server reaches the new primary.
    let mut unavailable = 0;
    let back = loop {
        all_usable(&sessions);
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
    while Instant::now() < until {
        all_usable(&sessions);
        std::thread::sleep(Duration::from_millis(100));
    }
    let live: Vec<String> = keys.iter().flat_map(|k| topo.live(k)).collect();
    for s in &sessions {
        assert!(live.iter().any(|id| id == s.id()), "{} is not live", s.id());
    }
    let e = topo
        .rt
        .block_on(api.heartbeat(&ended_key, "ended-before-failover"))
        .refused(410, "session_ended");
    assert_eq!(
        e.code, "session_ended",
        "the end acknowledged before the crash"
    );
    let failed = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.contains("HeartbeatFailed"))
        .count();
    let statuses: Vec<String> = topo
        .nginx
        .access_log()
        .iter()
        .filter(|l| l.starts_with("POST /api/session/heartbeat "))
        .map(|l| l.split(' ').nth(2).unwrap_or("?").to_owned())
        .collect();
    let slowest = topo
        .nginx
        .access_log()
        .iter()
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, f64::max);
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
