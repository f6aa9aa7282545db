//! keyseat's benchmark: the real server (the release binary, in its own
//! process) against a bare axum endpoint that parses the same JSON, over
//! real HTTP connections, in one run on one machine, reporting ratios.
//!
//! ```text
//! cargo bench --bench keyseat            # full run (a few minutes)
//! cargo bench --bench keyseat -- --quick # ~20 s smoke run (CI)
//! ```
//!
//! Phases: the bare ceiling; heartbeats with 1,000 live sessions; with
//! 100,000; with 1,000,000 (full run only: flat growth, resident memory,
//! time to ready); durable starts that take over the previous device's
//! seat (FULL); heartbeats with 1% starts mixed in while 100,000 sessions
//! expire at once; the old design's approach (a minimal Python stdlib
//! server doing one SQLite transaction per heartbeat) as the baseline; and
//! load shedding: starts offered open-loop at rising rates (multiples of
//! the measured start capacity) while devices heartbeat, reporting from
//! which offered rate starts are shed with 503 and what heartbeats see
//! meanwhile. With a PostgreSQL server given (`KEYSEAT_BENCH_POSTGRES_URL`
//! or `KEYSEAT_TEST_POSTGRES_URL`), the PostgreSQL phases of `postgres.rs`
//! too: heartbeats and durable starts on one and three servers, and
//! pgbench's rate for the heartbeat's statement; without one they print
//! "skipped". The waiting heartbeats' phase (`waiting.rs`): how soon a
//! takeover reaches the evicted device, and what 10,000 held heartbeats
//! cost. `KEYSEAT_BENCH_ONLY=starts|shed|heartbeats|signed|postgres|waiting`
//! runs one phase (heartbeats: three rounds of ceiling + 1,000 sessions;
//! signed: unsigned and signed heartbeats alternated, three rounds).

mod postgres;
mod waiting;

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use keyseat::keys::{new_key_id, AccessKey};

const CONNECTIONS: usize = 64;

/// The request each connection sends next: `load(connection, i)` gives
/// the path and the JSON body.
type Load = Arc<dyn Fn(usize, u64) -> (&'static str, String) + Send + Sync>;

struct Opts {
    quick: bool,
    secs: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--bare-server") {
        return bare_server();
    }
    let quick = args.iter().any(|a| a == "--quick");
    let opts = Opts {
        quick,
        secs: if quick { 2 } else { 10 },
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(opts));
}

/// The ceiling: an axum endpoint that parses the heartbeat's JSON and
/// answers a similar JSON, nothing else.
fn bare_server() {
    use axum::routing::post;
    #[derive(serde::Deserialize)]
    struct Body {
        access_key: String,
        session_id: String,
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let app = axum::Router::new().route(
            "/api/session/heartbeat",
            post(|axum::Json(b): axum::Json<Body>| async move {
                axum::Json(serde_json::json!({
                    "session_id": b.session_id,
                    "fence": b.access_key.len(),
                    "last_heartbeat": "2026-11-30T06:00:00Z",
                    "expires_at": "2026-11-30T06:01:00Z",
                    "heartbeat_interval_seconds": 30,
                }))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("listening on http://{}", listener.local_addr().unwrap());
        axum::serve(listener, app).await.unwrap();
    });
}

/// A server process and the address it printed.
struct Proc {
    child: Child,
    addr: SocketAddr,
    ready_after: Duration,
}

impl Proc {
    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a process and waits for "listening on http://ADDR" on stdout or
/// stderr.
fn spawn_listening(mut cmd: Command) -> Proc {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let (tx, rx) = std::sync::mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stream)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(i) = line.find("listening on http://") {
                    let rest = &line[i + "listening on http://".len()..];
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
    }
    let addr = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("server ready");
    Proc {
        child,
        addr: addr.parse().expect("address"),
        ready_after: started.elapsed(),
    }
}

/// The server binary: this build's, or `KEYSEAT_BENCH_SERVER_BIN` (to
/// compare two builds in the same conditions).
fn server_bin() -> PathBuf {
    std::env::var_os("KEYSEAT_BENCH_SERVER_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_keyseat")),
        PathBuf::from,
    )
}

fn keyseat_server(db: impl AsRef<OsStr>, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(server_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("KEYSEAT_") {
            cmd.env_remove(k);
        }
    }
    cmd.arg("--database")
        .arg(db.as_ref())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--rate-limits",
            "off",
            "--log",
            "warn,keyseat=info",
        ])
        .args(extra)
        .arg("serve");
    spawn_listening(cmd)
}

/// Seeds `keys` keys, each with one live session, straight into the file
/// (after `keyseat migrate`): (access key, session id) pairs.
fn seed(db: &Path, keys: usize) -> Vec<(String, String)> {
    let status = Command::new(env!("CARGO_BIN_EXE_keyseat"))
        .env_remove("KEYSEAT_BENCH_ONLY")
        .arg("--database")
        .arg(db)
        .arg("migrate")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let mut conn = rusqlite::Connection::open(db).unwrap();
    let tx = conn.transaction().unwrap();
    let now = keyseat::clock::Clock::now(&keyseat::clock::SystemClock).0;
    let mut out = Vec::with_capacity(keys);
    {
        let mut key_stmt = tx
            .prepare(
                "INSERT INTO keys (key_id, key_hash, prefix, max_sessions, created_at, updated_at, next_fence) \
                 VALUES (?1, ?2, ?3, 1, ?4, ?4, 2)",
            )
            .unwrap();
        let mut session_stmt = tx
            .prepare(
                "INSERT INTO sessions (session_id, key_id, fence, device_name, started_at, \
                 last_heartbeat, expires_at) VALUES (?1, ?2, 1, 'bench', ?3, ?3, ?4)",
            )
            .unwrap();
        for i in 0..keys {
            let key = AccessKey::generate();
            let key_id = new_key_id();
            let session_id = format!("bench-{i:08}");
            key_stmt
                .execute(rusqlite::params![
                    key_id,
                    key.hash().as_slice(),
                    key.prefix(),
                    now
                ])
                .unwrap();
            session_stmt
                .execute(rusqlite::params![session_id, key_id, now, now + 60_000])
                .unwrap();
            out.push((key.expose_secret().to_owned(), session_id));
        }
    }
    tx.commit().unwrap();
    out
}

/// What one load phase measured.
struct Measured {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    errors: u64,
    non_2xx: u64,
}

impl Measured {
    /// From every answered request's latency (µs) over `elapsed`.
    fn from_latencies(mut all: Vec<u32>, elapsed: Duration, errors: u64, non_2xx: u64) -> Self {
        all.sort_unstable();
        Measured {
            rps: all.len() as f64 / elapsed.as_secs_f64(),
            p50_ms: percentile_ms(&all, 0.50),
            p99_ms: percentile_ms(&all, 0.99),
            max_ms: all.last().map_or(f64::NAN, |m| f64::from(*m) / 1000.0),
            errors,
            non_2xx,
        }
    }
}

/// Drives `CONNECTIONS` closed-loop HTTP/1.1 connections for `secs`;
/// `body(conn, i)` gives the path and JSON of each request, and `ok`
/// says which statuses count as success.
/// The connections are spread evenly over `addrs` (several servers).
async fn drive(addrs: &[SocketAddr], secs: u64, body: Load, ok: fn(u16) -> bool) -> Measured {
    drive_conns(addrs, Duration::from_secs(secs), body, ok, CONNECTIONS).await
}

/// [`drive`] with `connections` connections.
async fn drive_conns(
    addrs: &[SocketAddr],
    duration: Duration,
    body: Load,
    ok: fn(u16) -> bool,
    connections: usize,
) -> Measured {
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let non_2xx = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for conn_no in 0..connections {
        let (stop, errors, non_2xx, body) =
            (stop.clone(), errors.clone(), non_2xx.clone(), body.clone());
        let addr = addrs[conn_no % addrs.len()];
        tasks.push(tokio::spawn(async move {
            let mut lat: Vec<u32> = Vec::with_capacity(1 << 16);
            let stream = match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => s,
                Err(_) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    return lat;
                }
            };
            let _ = stream.set_nodelay(true);
            let io = hyper_util::rt::TokioIo::new(stream);
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            let mut i: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                let (path, json) = body(conn_no, i);
                i += 1;
                let req = hyper::Request::post(path)
                    .header("host", "bench")
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(json)))
                    .unwrap();
                let t = Instant::now();
                match sender.send_request(req).await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let _ = resp.into_body().collect().await;
                        lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        if !ok(status) {
                            non_2xx.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
            lat
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut all: Vec<u32> = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    Measured::from_latencies(
        all,
        started.elapsed(),
        errors.load(Ordering::Relaxed),
        non_2xx.load(Ordering::Relaxed),
    )
}

fn heartbeat_load(pairs: Arc<Vec<(String, String)>>) -> Load {
    Arc::new(move |conn, i| {
        // Spread over all sessions: a different one each request.
        let n = pairs.len() as u64;
        let idx = ((conn as u64).wrapping_mul(2_654_435_761) ^ i.wrapping_mul(40_503)) % n;
        let (key, id) = &pairs[idx as usize];
        (
            "/api/session/heartbeat",
            format!(r#"{{"access_key":"{key}","session_id":"{id}"}}"#),
        )
    })
}

/// [`heartbeat_load`] with a fresh nonce per request: signed answers.
fn signed_heartbeat_load(pairs: Arc<Vec<(String, String)>>) -> Load {
    Arc::new(move |conn, i| {
        let n = pairs.len() as u64;
        let idx = ((conn as u64).wrapping_mul(2_654_435_761) ^ i.wrapping_mul(40_503)) % n;
        let (key, id) = &pairs[idx as usize];
        (
            "/api/session/heartbeat",
            format!(
                r#"{{"access_key":"{key}","session_id":"{id}","nonce":"bench-{conn}-{i:010}"}}"#
            ),
        )
    })
}

/// Heartbeats on 1,000 sessions without and with a nonce (signed
/// answers), alternated `rounds` times on one server, each against the
/// bare endpoint's ceiling measured right before with the same bodies.
/// Returns the last round's (unsigned ratio, signed ratio).
async fn signed_phase(dir: &Path, opts: &Opts, bare: SocketAddr, rounds: usize) -> (f64, f64) {
    let db = dir.join("signed.db");
    let pairs = Arc::new(seed(&db, 1_000));
    let server = keyseat_server(&db, &[]);
    let _ = drive(
        &[server.addr],
        1,
        signed_heartbeat_load(pairs.clone()),
        is_2xx,
    )
    .await;
    let mut last = (0.0, 0.0);
    for _ in 0..rounds {
        let mut ratios = [0.0; 2];
        for (slot, (name, load)) in [
            (
                "heartbeats, unsigned (no nonce)",
                heartbeat_load(pairs.clone()),
            ),
            (
                "heartbeats, signed (nonce)",
                signed_heartbeat_load(pairs.clone()),
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let ceiling = drive(&[bare], opts.secs, load.clone(), is_2xx).await;
            line(
                "  bare endpoint, same bodies (ceiling)",
                &ceiling,
                ceiling.rps,
            );
            let m = drive(&[server.addr], opts.secs, load, is_2xx).await;
            line(name, &m, ceiling.rps);
            ratios[slot] = m.rps / ceiling.rps;
        }
        last = (ratios[0], ratios[1]);
    }
    last
}

fn is_2xx(s: u16) -> bool {
    (200..300).contains(&s)
}

fn line(name: &str, m: &Measured, ceiling: f64) {
    println!(
        "{name:<44} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms  ratio {:>5.3}{}",
        m.rps,
        m.p50_ms,
        m.p99_ms,
        m.max_ms,
        m.rps / ceiling,
        if m.errors + m.non_2xx > 0 {
            format!("  ({} errors, {} non-2xx)", m.errors, m.non_2xx)
        } else {
            String::new()
        }
    );
}

/// Heartbeats with `n` live sessions. The ceiling is measured right
/// before, with the same request mix (the same `n` keys and ids), so the
/// load generator's own cost is the same on both sides of the ratio.
async fn heartbeat_phase(
    dir: &Path,
    n: usize,
    opts: &Opts,
    bare: SocketAddr,
) -> (Measured, f64, f64, Duration) {
    let db = dir.join(format!("hb-{n}.db"));
    let t = Instant::now();
    let pairs = Arc::new(seed(&db, n));
    let seeded = t.elapsed();
    let ceiling = drive(&[bare], opts.secs, heartbeat_load(pairs.clone()), is_2xx).await;
    line(
        &format!("  bare endpoint, same {n} keys (ceiling)"),
        &ceiling,
        ceiling.rps,
    );
    let server = keyseat_server(&db, &[]);
    // Warm the connections.
    let _ = drive(&[server.addr], 1, heartbeat_load(pairs.clone()), is_2xx).await;
    let m = drive(
        &[server.addr],
        opts.secs,
        heartbeat_load(pairs.clone()),
        is_2xx,
    )
    .await;
    let rss = server.rss_mib();
    line(&format!("heartbeats, {n} live sessions"), &m, ceiling.rps);
    println!(
        "{:<44} seeded in {:.1} s, ready {:.2} s after spawn, resident {:.0} MiB",
        "",
        seeded.as_secs_f64(),
        server.ready_after.as_secs_f64(),
        rss
    );
    let ratio = m.rps / ceiling.rps;
    (m, ratio, rss, server.ready_after)
}

/// Starts that each take over the previous device's seat, spread over
/// 1,000 one-seat keys: insert + supersede + events, durable (FULL).
async fn start_phase(dir: &Path, opts: &Opts, ceiling: f64, sync: &str) -> Measured {
    let db = dir.join(format!("starts-{sync}.db"));
    let pairs = Arc::new(seed(&db, 1_000));
    let server = keyseat_server(&db, &["--synchronous", sync]);
    let load: Load = Arc::new(move |conn, i| {
        let (key, _) = &pairs[(conn * 7919 + i as usize) % pairs.len()];
        (
            "/api/session/start",
            format!(r#"{{"access_key":"{key}","device":{{"name":"bench-{conn}"}}}}"#),
        )
    });
    let m = drive(&[server.addr], opts.secs, load, is_2xx).await;
    line(
        &format!("durable starts with takeover ({})", sync.to_uppercase()),
        &m,
        ceiling,
    );
    m
}

/// 100,000 live devices heartbeating with 1% starts, while another
/// 100,000 sessions (seeded, never heartbeating) expire at once and are
/// swept during the run.
async fn mixed_phase(dir: &Path, opts: &Opts, ceiling: f64) -> Measured {
    let db = dir.join("mixed.db");
    let n = if opts.quick { 2_000 } else { 100_000 };
    let pairs = Arc::new(seed(&db, n * 2));
    // Every seeded session gets one full timeout from readiness;
    // only the first half is heartbeated (round-robin, so each of them
    // well within the timeout), and the second half expires together.
    let (interval, timeout, secs) = if opts.quick {
        ("1", "3", 5)
    } else {
        ("5", "10", 15)
    };
    let server = keyseat_server(
        &db,
        &[
            "--heartbeat-interval-seconds",
            interval,
            "--session-timeout-seconds",
            timeout,
            "--sweep-interval-seconds",
            "1",
        ],
    );
    let live: Arc<Vec<(String, String)>> = Arc::new(pairs[..n].to_vec());
    let load: Load = Arc::new(move |conn, i| {
        let idx = (conn + CONNECTIONS * i as usize) % live.len();
        let (key, id) = &live[idx];
        if i % 100 == 99 {
            ("/api/session/start", format!(r#"{{"access_key":"{key}"}}"#))
        } else {
            (
                "/api/session/heartbeat",
                format!(r#"{{"access_key":"{key}","session_id":"{id}"}}"#),
            )
        }
    });
    // `secs` is long enough for the silent half to expire and be swept.
    let m = drive(&[server.addr], secs, load, |s| s == 200 || s == 409).await;
    line(
        &format!("mixed: {n} heartbeating + 1% starts, {n} expiring"),
        &m,
        ceiling,
    );
    m
}

/// The old design's approach: one SQLite transaction per heartbeat, in a
/// minimal Python stdlib server (threads, sqlite3).
async fn baseline_phase(dir: &Path, opts: &Opts, ceiling: f64) -> Option<Measured> {
    let db = dir.join("baseline.db");
    let pairs = Arc::new(seed(&db, 1_000));
    let script = dir.join("old_design.py");
    std::fs::write(&script, OLD_DESIGN).unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg(&script).arg(&db);
    if Command::new("python3").arg("--version").output().is_err() {
        println!("(python3 not found: baseline skipped)");
        return None;
    }
    let server = spawn_listening(cmd);
    let m = drive(&[server.addr], opts.secs, heartbeat_load(pairs), is_2xx).await;
    line("old design: Python, 1 transaction per request", &m, ceiling);
    Some(m)
}

const OLD_DESIGN: &str = r#"
import hashlib, json, sqlite3, sys, threading, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
DB = sys.argv[1]
local = threading.local()
def conn():
    c = getattr(local, "c", None)
    if c is None:
        c = sqlite3.connect(DB, timeout=30, isolation_level=None)
        c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA synchronous=FULL")
        local.c = c
    return c
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        h = hashlib.sha256(body["access_key"].encode()).digest()
        now = int(time.time() * 1000)
        c = conn()
        c.execute("BEGIN IMMEDIATE")
        row = c.execute("SELECT key_id FROM keys WHERE key_hash = ?", (h,)).fetchone()
        n = c.execute("UPDATE sessions SET last_heartbeat = ?, expires_at = ? WHERE session_id = ? AND key_id = ?",
                      (now, now + 60000, body["session_id"], row[0] if row else None)).rowcount
        c.execute("COMMIT")
        out = json.dumps({"session_id": body["session_id"], "ok": n == 1}).encode()
        self.send_response(200 if n == 1 else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers(); self.wfile.write(out)
s = ThreadingHTTPServer(("127.0.0.1", 0), H)
print("listening on http://%s:%d" % s.server_address, flush=True)
s.serve_forever()
"#;

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}

async fn run(opts: Opts) {
    let dir = tempfile::tempdir().unwrap();
    println!(
        "keyseat benchmark ({}), {} connections, {} s per phase, machine: {}",
        if opts.quick { "quick" } else { "full" },
        CONNECTIONS,
        opts.secs,
        machine()
    );

    if let Ok(only) = std::env::var("KEYSEAT_BENCH_ONLY") {
        // Profiling aid: one phase against a fixed ceiling of 1.
        match only.as_str() {
            "starts" => {
                start_phase(dir.path(), &opts, 1.0, "full").await;
            }
            "shed" => {
                shed_phase(dir.path(), &opts).await;
            }
            "postgres" => {
                let bare = {
                    let mut cmd = Command::new(std::env::current_exe().unwrap());
                    cmd.arg("--bare-server");
                    spawn_listening(cmd)
                };
                if let Some(pg) = postgres::run(&opts, bare.addr, dir.path()).await {
                    println!();
                    println!("targets:");
                    postgres::targets(&pg, |ok| if ok { "met" } else { "MISSED" });
                }
            }
            "waiting" => {
                let w = waiting::phase(dir.path(), &opts).await;
                println!();
                println!("targets:");
                waiting::targets(&w, |ok| if ok { "met" } else { "MISSED" });
            }
            "signed" => {
                let bare = {
                    let mut cmd = Command::new(std::env::current_exe().unwrap());
                    cmd.arg("--bare-server");
                    spawn_listening(cmd)
                };
                signed_phase(dir.path(), &opts, bare.addr, 3).await;
            }
            "heartbeats" => {
                let bare = {
                    let mut cmd = Command::new(std::env::current_exe().unwrap());
                    cmd.arg("--bare-server");
                    spawn_listening(cmd)
                };
                for _ in 0..3 {
                    let round = tempfile::tempdir().unwrap();
                    heartbeat_phase(round.path(), 1_000, &opts, bare.addr).await;
                }
            }
            other => println!("unknown phase {other}"),
        }
        return;
    }
    // The bare endpoint stays up all run; its ceiling is measured again
    // right before each phase, and each ratio is to that adjacent figure:
    // this machine is shared and its speed drifts between phases.
    let bare = {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.arg("--bare-server");
        spawn_listening(cmd)
    };
    let ceiling_pairs = Arc::new(seed(&dir.path().join("ceiling.db"), 1_000));
    let _ = drive(
        &[bare.addr],
        1,
        heartbeat_load(ceiling_pairs.clone()),
        is_2xx,
    )
    .await;
    let ceiling = || async {
        let m = drive(
            &[bare.addr],
            opts.secs,
            heartbeat_load(ceiling_pairs.clone()),
            is_2xx,
        )
        .await;
        line("  bare axum endpoint, same JSON (ceiling)", &m, m.rps);
        m.rps
    };

    let (small, hb_ratio, _, _) = heartbeat_phase(dir.path(), 1_000, &opts, bare.addr).await;
    if !opts.quick {
        heartbeat_phase(dir.path(), 100_000, &opts, bare.addr).await;
    }
    let big = if opts.quick {
        None
    } else {
        let (_, ratio, rss, ready) = heartbeat_phase(dir.path(), 1_000_000, &opts, bare.addr).await;
        Some((ratio, rss, ready))
    };
    let (unsigned_ratio, signed_ratio) = signed_phase(dir.path(), &opts, bare.addr, 1).await;
    let c_starts = ceiling().await;
    let starts = start_phase(dir.path(), &opts, c_starts, "full").await;
    let c = ceiling().await;
    start_phase(dir.path(), &opts, c, "normal").await;
    let c = ceiling().await;
    let mixed = mixed_phase(dir.path(), &opts, c).await;
    let baseline = baseline_phase(dir.path(), &opts, c).await;
    let pg = postgres::run(&opts, bare.addr, dir.path()).await;
    drop(bare);
    let shed = shed_phase(dir.path(), &opts).await;
    let held = waiting::phase(dir.path(), &opts).await;

    println!();
    println!("targets:");
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "  heartbeats >= 0.80 of ceiling, p99 <= 10 ms: {:.3}, p99 {:.2} ms -> {}",
        hb_ratio,
        small.p99_ms,
        verdict(hb_ratio >= 0.80 && small.p99_ms <= 10.0)
    );
    println!(
        "  signed heartbeats >= 0.40 of ceiling: {signed_ratio:.3} (unsigned in the same round {unsigned_ratio:.3}) -> {}",
        verdict(signed_ratio >= 0.40)
    );
    println!(
        "  durable starts >= 0.15 of ceiling, p99 <= 50 ms: {:.3}, p99 {:.2} ms -> {}",
        starts.rps / c_starts,
        starts.p99_ms,
        verdict(starts.rps / c_starts >= 0.15 && starts.p99_ms <= 50.0)
    );
    println!(
        "  mixed load, no request over 100 ms: max {:.2} ms -> {}",
        mixed.max_ms,
        verdict(mixed.max_ms <= 100.0)
    );
    if let Some((big_ratio, rss, ready)) = &big {
        let growth = big_ratio / hb_ratio;
        println!(
            "  flat growth (1M within 10% of 1k, by ratio to the ceiling): {growth:.3} -> {}",
            verdict(growth >= 0.90)
        );
        println!(
            "  resident memory at 1M live <= 300 MiB: {rss:.0} MiB -> {}",
            verdict(*rss <= 300.0)
        );
        println!(
            "  ready within 2 s with 1M live on disk: {:.2} s -> {}",
            ready.as_secs_f64(),
            verdict(ready.as_secs_f64() <= 2.0)
        );
    }
    if let Some(b) = baseline {
        println!(
            "  >= 50x the old design's approach: {:.1}x -> {}",
            small.rps / b.rps,
            verdict(small.rps / b.rps >= 50.0)
        );
    }
    if let Some(pg) = &pg {
        postgres::targets(pg, verdict);
    }
    waiting::targets(&held, verdict);
    match shed {
        Some(rate) => println!(
            "  load shedding: starts shed with 503 from an offered {rate:.0} starts/s; heartbeats kept answering (see above)"
        ),
        None => println!("  load shedding: no step shed starts (capacity not exceeded)"),
    }
    let _: PathBuf = dir.path().to_owned();
}

/// What one open-loop step saw.
#[derive(Default)]
struct Step {
    sent: u64,
    ok: u64,
    shed: u64,
    other: u64,
    unsent: u64,
    lat_us: Vec<u32>,
}

/// Offers starts at `rate` per second for `secs`, open loop: requests are
/// due on a fixed schedule whether or not earlier ones were answered, over
/// `workers` connections (a request due while every connection is busy is
/// counted as unsent, the generator's own limit).
async fn open_loop_starts(
    addr: SocketAddr,
    keys: Arc<Vec<(String, String)>>,
    rate: f64,
    secs: f64,
    workers: usize,
) -> Step {
    let (tx, rx) = tokio::sync::mpsc::channel::<u64>(workers);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (rx, keys) = (rx.clone(), keys.clone());
        tasks.push(tokio::spawn(async move {
            let mut step = Step::default();
            let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
                return step;
            };
            let _ = stream.set_nodelay(true);
            let io = hyper_util::rt::TokioIo::new(stream);
            let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(io).await else {
                return step;
            };
            tokio::spawn(conn);
            loop {
                let next = rx.lock().await.recv().await;
                let Some(i) = next else { break };
                let (key, _) = &keys[(i as usize * 7919 + w) % keys.len()];
                let req = hyper::Request::post("/api/session/start")
                    .header("host", "bench")
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(format!(
                        r#"{{"access_key":"{key}","device":{{"name":"shed-{w}"}}}}"#
                    ))))
                    .unwrap();
                let t = Instant::now();
                step.sent += 1;
                match sender.send_request(req).await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let _ = resp.into_body().collect().await;
                        match status {
                            200..=299 => {
                                step.ok += 1;
                                step.lat_us
                                    .push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                            }
                            503 => step.shed += 1,
                            _ => step.other += 1,
                        }
                    }
                    Err(_) => {
                        step.other += 1;
                        break;
                    }
                }
            }
            step
        }));
    }
    let started = Instant::now();
    let mut due = 0u64;
    let mut unsent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while started.elapsed().as_secs_f64() < secs {
        tick.tick().await;
        let should = (started.elapsed().as_secs_f64() * rate) as u64;
        while due < should {
            if tx.try_send(due).is_err() {
                unsent += 1;
            }
            due += 1;
        }
    }
    drop(tx);
    let mut total = Step {
        unsent,
        ..Step::default()
    };
    for t in tasks {
        let s = t.await.unwrap();
        total.sent += s.sent;
        total.ok += s.ok;
        total.shed += s.shed;
        total.other += s.other;
        total.lat_us.extend(s.lat_us);
    }
    total.lat_us.sort_unstable();
    total
}

fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted_us.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted_us[i]) / 1000.0
}

/// Load shedding: measures start capacity (closed loop), then offers
/// starts open-loop at multiples of it while 16 connections heartbeat other
/// keys' sessions. Returns the lowest offered rate at which more than 0.1%
/// of starts were shed.
async fn shed_phase(dir: &Path, opts: &Opts) -> Option<f64> {
    let db = dir.join("shed.db");
    let all = seed(&db, 2_000);
    let starters = Arc::new(all[..1_000].to_vec());
    let beaters = Arc::new(all[1_000..].to_vec());
    // Quick runs use a small writer queue so shedding shows in seconds.
    let pending: usize = if opts.quick { 64 } else { 1_024 };
    let pending_arg = pending.to_string();
    // Every connection comes from 127.0.0.1: the per-address limit (256 by
    // default) would refuse most of them before the writer queue is
    // reached, so it is raised to its ceiling (a quarter of the 10,000).
    let server = keyseat_server(
        &db,
        &[
            "--max-pending-writes",
            &pending_arg,
            "--max-connections-per-address",
            "2500",
        ],
    );
    let workers = pending * 2;
    let secs = if opts.quick { 2.0 } else { 5.0 };

    let starts_load: Load = {
        let starters = starters.clone();
        Arc::new(move |conn, i| {
            let (key, _) = &starters[(conn * 7919 + i as usize) % starters.len()];
            (
                "/api/session/start",
                format!(r#"{{"access_key":"{key}","device":{{"name":"cap-{conn}"}}}}"#),
            )
        })
    };
    let capacity = drive(&[server.addr], secs as u64, starts_load, is_2xx).await;
    println!(
        "load shedding (max_pending_writes = {pending}, {workers} connections offering starts):"
    );
    println!(
        "  start capacity, closed loop ({CONNECTIONS} connections): {:.0} starts/s",
        capacity.rps
    );
    let mut first_shed = None;
    for factor in [0.5, 0.9, 1.5, 3.0, 6.0] {
        let rate = capacity.rps * factor;
        let beats = tokio::spawn(drive_n(
            server.addr,
            secs,
            heartbeat_load(beaters.clone()),
            16,
        ));
        let step = open_loop_starts(server.addr, starters.clone(), rate, secs, workers).await;
        let hb = beats.await.unwrap();
        let shed_share = step.shed as f64 / step.sent.max(1) as f64;
        println!(
            "  offered {:>6.0}/s ({factor:.1}x): answered ok {:>6.0}/s, shed 503 {:>5.1}%, other {}, unsent {}, ok p99 {:>7.2} ms | heartbeats {:>6.0}/s p99 {:>6.2} ms max {:>7.2} ms, non-2xx {}",
            rate,
            step.ok as f64 / secs,
            shed_share * 100.0,
            step.other,
            step.unsent,
            percentile_ms(&step.lat_us, 0.99),
            hb.rps,
            hb.p99_ms,
            hb.max_ms,
            hb.non_2xx + hb.errors,
        );
        if first_shed.is_none() && shed_share > 0.001 {
            first_shed = Some(rate);
        }
    }
    first_shed
}

/// `drive` with `n` connections and a fractional duration.
async fn drive_n(addr: SocketAddr, secs: f64, body: Load, n: usize) -> Measured {
    drive_conns(&[addr], Duration::from_secs_f64(secs), body, is_2xx, n).await
}
