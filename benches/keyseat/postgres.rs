//! The PostgreSQL phases (issue 14): heartbeats and durable starts on one
//! and on three keyseat servers sharing one database, each beside a fresh
//! measurement of the bare endpoint; and PostgreSQL's own ceiling for the
//! heartbeat's statement, measured with pgbench running the very SQL the
//! engine prepares ([`keyseat::store::postgres_heartbeat_sql`]) on as many
//! connections as one server's heartbeat pool.
//!
//! They run only when a server is given: `KEYSEAT_BENCH_POSTGRES_URL`, or
//! `KEYSEAT_TEST_POSTGRES_URL` (what CI exports). Each phase gets a
//! database of its own (`CREATE DATABASE`, dropped after it), whose schema
//! comes from keyseat's own migrations (`keyseat migrate`); keys and live
//! sessions are then seeded with SQL.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyseat::keys::{new_key_id, AccessKey};

use super::{
    drive, heartbeat_load, is_2xx, keyseat_server, line, server_bin, Load, Measured, Opts, Proc,
    CONNECTIONS,
};

/// The heartbeat connections one keyseat server shares among its heartbeats
/// (`PostgresOptions::default().heartbeat_connections`), and so pgbench's.
fn heartbeat_connections() -> usize {
    keyseat::store::PostgresOptions::default().heartbeat_connections
}

/// Live sessions (one per one-seat key) the heartbeat phases spread over.
const SESSIONS: usize = 1_000;
/// How long the seeded sessions stay live: longer than any phase.
const SEEDED_LEASE_MS: i64 = 3_600_000;
/// The heartbeat's timeout parameter (`$3`), the server's default 60 s.
const TIMEOUT_MS: i64 = 60_000;
/// The database's clock in Unix milliseconds, as the engine reads it.
const DB_NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

/// The server to create the phases' databases on, if any.
pub fn server_url() -> Option<String> {
    ["KEYSEAT_BENCH_POSTGRES_URL", "KEYSEAT_TEST_POSTGRES_URL"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .map(|u| u.trim().to_owned())
        .find(|u| !u.is_empty())
}

/// What the PostgreSQL phases measured, for the targets.
pub struct Summary {
    pub one: Measured,
    pub three: Measured,
    pub pgbench_tps: Option<f64>,
}

/// A database of a phase's own on the server.
struct Db {
    server: String,
    name: String,
    url: String,
}

impl Db {
    /// Creates `ks_bench_<phase>_<random>` and applies keyseat's
    /// migrations to it.
    async fn create(server: &str, phase: &str) -> Db {
        let name = format!("ks_bench_{phase}_{:08x}", rand::random::<u32>());
        connect(server)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {}: {e}", redacted(server)));
        let db = Db {
            server: server.to_owned(),
            url: with_database(server, &name),
            name,
        };
        let mut migrate = Command::new(server_bin());
        for (k, _) in std::env::vars() {
            if k.starts_with("KEYSEAT_") {
                migrate.env_remove(k);
            }
        }
        let status = migrate
            .arg("--database")
            .arg(&db.url)
            .arg("migrate")
            .stdout(Stdio::null())
            .status()
            .expect("keyseat migrate");
        assert!(status.success(), "keyseat migrate on {}", db.name);
        db
    }

    /// Drops the database (its servers must be stopped, or are cut off).
    async fn drop_db(self) {
        let _ = connect(&self.server)
            .await
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await;
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", redacted(url)));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// `url` with its database name replaced by `name` (keeping the query
/// string, minus any `dbname=`).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let authority = base.find("://").map_or(0, |i| i + 3);
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    let params: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("dbname="))
        .collect();
    if params.is_empty() {
        format!("{}/{name}", &base[..path])
    } else {
        format!("{}/{name}?{}", &base[..path], params.join("&"))
    }
}

/// `url` without its password, for messages.
fn redacted(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    match url[start..].find('@').map(|i| start + i) {
        Some(at) => match url[start..at].find(':') {
            Some(colon) => format!("{}:***{}", &url[..start + colon], &url[at..]),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Seeds `n` one-seat keys, each with one live session, by SQL: (access
/// key, session id) pairs, as the SQLite phases' `seed`.
async fn seed(url: &str, n: usize) -> Vec<(String, String)> {
    let client = connect(url).await;
    let mut key_ids = Vec::with_capacity(n);
    let mut hashes: Vec<Vec<u8>> = Vec::with_capacity(n);
    let mut prefixes = Vec::with_capacity(n);
    let mut session_ids = Vec::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let key = AccessKey::generate();
        key_ids.push(new_key_id());
        hashes.push(key.hash().to_vec());
        prefixes.push(key.prefix());
        session_ids.push(format!("bench-{i:08}"));
        out.push((key.expose_secret().to_owned(), format!("bench-{i:08}")));
    }
    insert_live(&client, &key_ids, &hashes, &prefixes, &session_ids).await;
    out
}

/// Inserts one key and one live session per row of the arrays.
async fn insert_live(
    client: &tokio_postgres::Client,
    key_ids: &[String],
    hashes: &[Vec<u8>],
    prefixes: &[String],
    session_ids: &[String],
) {
    client
        .execute(
            &format!(
                "INSERT INTO keys (key_id, key_hash, prefix, max_sessions, created_at, updated_at, next_fence) \
                 SELECT k, h, p, 1, t.now, t.now, 2 \
                 FROM UNNEST($1::TEXT[], $2::BYTEA[], $3::TEXT[]) AS u(k, h, p), \
                      (SELECT {DB_NOW_MS} AS now) t"
            ),
            &[&key_ids, &hashes, &prefixes],
        )
        .await
        .expect("seed keys");
    client
        .execute(
            &format!(
                "INSERT INTO sessions (session_id, key_id, fence, device_name, started_at, last_heartbeat, expires_at) \
                 SELECT s, k, 1, 'bench', t.now, t.now, t.now + $3 \
                 FROM UNNEST($1::TEXT[], $2::TEXT[]) AS u(s, k), (SELECT {DB_NOW_MS} AS now) t"
            ),
            &[&session_ids, &key_ids, &SEEDED_LEASE_MS],
        )
        .await
        .expect("seed sessions");
    client.batch_execute("ANALYZE").await.expect("analyze");
}

/// `count` keyseat servers on the database at `url`.
fn servers(url: &str, count: usize) -> Vec<Proc> {
    (0..count).map(|_| keyseat_server(url, &[])).collect()
}

fn addrs(servers: &[Proc]) -> Vec<SocketAddr> {
    servers.iter().map(|s| s.addr).collect()
}

/// Heartbeats over [`SESSIONS`] live sessions on `count` servers, the
/// load generator's connections spread evenly over them; the ceiling is
/// measured right before with the same request mix.
async fn heartbeat_phase(server: &str, count: usize, opts: &Opts, bare: SocketAddr) -> Measured {
    let db = Db::create(server, &format!("hb{count}")).await;
    let pairs = Arc::new(seed(&db.url, SESSIONS).await);
    let ceiling = drive(&[bare], opts.secs, heartbeat_load(pairs.clone()), is_2xx).await;
    line(
        &format!("  bare endpoint, same {SESSIONS} keys (ceiling)"),
        &ceiling,
        ceiling.rps,
    );
    let procs = servers(&db.url, count);
    let addrs = addrs(&procs);
    let _ = drive(&addrs, 1, heartbeat_load(pairs.clone()), is_2xx).await;
    let m = drive(&addrs, opts.secs, heartbeat_load(pairs.clone()), is_2xx).await;
    line(
        &format!("postgres heartbeats, {count} server(s), {SESSIONS} live"),
        &m,
        ceiling.rps,
    );
    if count == 1 {
        // What the same statement costs through the same driver, without
        // HTTP or the server: one task per connection, as many
        // connections as the server's heartbeat pool.
        let direct = direct_loop(&db.url, &pairs, heartbeat_connections(), opts.secs).await;
        line(
            &format!(
                "  direct tokio-postgres loop, {} connections",
                heartbeat_connections()
            ),
            &direct,
            ceiling.rps,
        );
    }
    drop(procs);
    db.drop_db().await;
    m
}

/// Starts that each take over the previous device's seat, spread over
/// 1,000 one-seat keys, on `count` servers: the key's row lock, the
/// insert, the supersede and the events in one transaction, committed with
/// the database's `synchronous_commit` (on).
async fn start_phase(server: &str, count: usize, opts: &Opts, bare: SocketAddr) -> Measured {
    let db = Db::create(server, &format!("st{count}")).await;
    let pairs = Arc::new(seed(&db.url, SESSIONS).await);
    let ceiling = drive(&[bare], opts.secs, heartbeat_load(pairs.clone()), is_2xx).await;
    line(
        "  bare axum endpoint, same JSON (ceiling)",
        &ceiling,
        ceiling.rps,
    );
    let procs = servers(&db.url, count);
    let addrs = addrs(&procs);
    let load: Load = Arc::new(move |conn, i| {
        let (key, _) = &pairs[(conn * 7919 + i as usize) % pairs.len()];
        (
            "/api/session/start",
            format!(r#"{{"access_key":"{key}","device":{{"name":"bench-{conn}"}}}}"#),
        )
    });
    let m = drive(&addrs, opts.secs, load, is_2xx).await;
    line(
        &format!("postgres durable starts w/ takeover, {count} server(s)"),
        &m,
        ceiling.rps,
    );
    drop(procs);
    db.drop_db().await;
    m
}

/// The heartbeat's statement in a closed loop on `connections` plain
/// tokio-postgres connections (`synchronous_commit = off`, as the pool's).
async fn direct_loop(
    url: &str,
    pairs: &Arc<Vec<(String, String)>>,
    connections: usize,
    secs: u64,
) -> Measured {
    let sql = Arc::new(keyseat::store::postgres_heartbeat_sql());
    let beats: Arc<Vec<(Vec<u8>, String)>> = Arc::new(
        pairs
            .iter()
            .map(|(key, id)| {
                let hash = AccessKey::parse(key).expect("seeded key").hash();
                (hash.to_vec(), id.clone())
            })
            .collect(),
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for conn in 0..connections {
        let (sql, stop, beats) = (sql.clone(), stop.clone(), beats.clone());
        let client = connect(url).await;
        tasks.push(tokio::spawn(async move {
            client
                .batch_execute("SET synchronous_commit = off")
                .await
                .unwrap();
            let stmt = client.prepare(&sql).await.expect("prepare heartbeat");
            let (mut lat, mut missed) = (Vec::<u32>::with_capacity(1 << 16), 0u64);
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // The same spread as the HTTP load's.
                let n = beats.len() as u64;
                let idx = ((conn as u64).wrapping_mul(2_654_435_761) ^ i.wrapping_mul(40_503)) % n;
                i += 1;
                let (hash, id) = &beats[idx as usize];
                let hash: &[u8] = hash;
                let t = Instant::now();
                let row = client
                    .query_opt(&stmt, &[&hash, id, &TIMEOUT_MS, &None::<i64>])
                    .await
                    .expect("heartbeat statement");
                lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                missed += u64::from(row.is_none());
            }
            (lat, missed)
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut all = Vec::new();
    let mut missed = 0;
    for t in tasks {
        let (lat, m) = t.await.unwrap();
        all.extend(lat);
        missed += m;
    }
    Measured::from_latencies(all, started.elapsed(), 0, missed)
}

/// The pgbench binary: `KEYSEAT_BENCH_PGBENCH`, else on PATH, else the
/// newest `/usr/lib/postgresql/*/bin/pgbench`.
fn pgbench_bin() -> Option<String> {
    if let Ok(p) = std::env::var("KEYSEAT_BENCH_PGBENCH") {
        return Some(p);
    }
    if Command::new("pgbench")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        return Some("pgbench".into());
    }
    let mut found: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .collect();
    found.sort_unstable();
    found
        .into_iter()
        .rev()
        .map(|v| format!("/usr/lib/postgresql/{v}/bin/pgbench"))
        .find(|p| std::path::Path::new(p).exists())
}

/// Session ids and key hashes pgbench can name with its integer
/// variables: session `(SID_BASE + n)` as text, key hash the ASCII digits
/// of `(HASH_BASE + n)` (19 bytes where a SHA-256 has 32).
const SID_BASE: i64 = 100_000;
const HASH_BASE: i64 = 1_000_000_000_000_000_000;

/// The pgbench script: the engine's heartbeat statement, its text
/// unchanged but for the parameters, which become pgbench variables (sent
/// as parameters of the prepared statement with `-M prepared`, as the
/// server sends them), except `$4` (the caller's time, NULL in every real
/// deployment), which pgbench cannot send as NULL: it becomes `NULL`.
fn pgbench_script(sql: &str) -> String {
    assert!(sql.contains("$4::BIGINT"), "the heartbeat's $4 changed");
    let update = sql
        .replace("$4::BIGINT", "NULL::BIGINT")
        .replace("$1", ":kh")
        .replace("$2", ":sid")
        .replace("$3", ":timeout");
    format!(
        "\\set n random(1, {SESSIONS})\n\
         \\set sid {SID_BASE} + :n\n\
         \\set kh {HASH_BASE} + :n\n\
         \\set timeout {TIMEOUT_MS}\n\
         {update};\n"
    )
}

/// pgbench on a database seeded with [`SESSIONS`] live sessions that
/// [`pgbench_script`]'s variables name: transactions (= heartbeats) per
/// second on `clients` connections with `synchronous_commit = off`.
async fn pgbench_phase(server: &str, opts: &Opts, dir: &std::path::Path) -> Option<f64> {
    let Some(bin) = pgbench_bin() else {
        println!("  pgbench: skipped: no pgbench found (KEYSEAT_BENCH_PGBENCH=/path/to/pgbench)");
        return None;
    };
    let db = Db::create(server, "pgbench").await;
    let seeded_at = {
        let client = connect(&db.url).await;
        let key_ids: Vec<String> = (1..=SESSIONS).map(|_| new_key_id()).collect();
        let hashes: Vec<Vec<u8>> = (1..=SESSIONS as i64)
            .map(|n| (HASH_BASE + n).to_string().into_bytes())
            .collect();
        let prefixes: Vec<String> = (1..=SESSIONS)
            .map(|_| AccessKey::generate().prefix())
            .collect();
        let session_ids: Vec<String> = (1..=SESSIONS as i64)
            .map(|n| (SID_BASE + n).to_string())
            .collect();
        insert_live(&client, &key_ids, &hashes, &prefixes, &session_ids).await;
        // A server's alive mark, as a running server keeps one.
        client
            .execute(
                &format!(
                    "INSERT INTO server_marks (instance_id, alive_at) VALUES ('pgbench', {DB_NOW_MS})"
                ),
                &[],
            )
            .await
            .unwrap();
        let row = client
            .query_one(&format!("SELECT {DB_NOW_MS}"), &[])
            .await
            .unwrap();
        row.get::<_, i64>(0)
    };
    let script = dir.join("heartbeat.pgbench");
    std::fs::write(
        &script,
        pgbench_script(&keyseat::store::postgres_heartbeat_sql()),
    )
    .unwrap();
    let mut tps = None;
    let mut counts = vec![heartbeat_connections()];
    if !opts.quick {
        // Three servers' pools.
        counts.push(heartbeat_connections() * 3);
    }
    for clients in counts {
        let out = Command::new(&bin)
            .env("PGOPTIONS", "-c synchronous_commit=off")
            .args(["-n", "-M", "prepared", "-j", "2", "-c"])
            .arg(clients.to_string())
            .arg("-T")
            .arg(opts.secs.to_string())
            .arg("-f")
            .arg(&script)
            .arg(&db.url)
            .output()
            .expect("run pgbench");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let got = stdout
            .lines()
            .find(|l| l.starts_with("tps = "))
            .and_then(|l| l["tps = ".len()..].split_whitespace().next())
            .and_then(|t| t.parse::<f64>().ok());
        let latency = stdout
            .lines()
            .find(|l| l.starts_with("latency average"))
            .unwrap_or("")
            .trim()
            .to_owned();
        let failed = stdout
            .lines()
            .find(|l| l.starts_with("number of failed transactions"))
            .unwrap_or("")
            .trim()
            .to_owned();
        match got {
            Some(t) => println!(
                "{:<44} {t:>9.0} tx/s  ({latency}; {failed})",
                format!("pgbench, heartbeat UPDATE, {clients} connections")
            ),
            None => println!(
                "  pgbench failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }
        if clients == heartbeat_connections() {
            tps = got;
        }
    }
    // The UPDATE must have touched the seeded rows, not nothing.
    let touched: i64 = connect(&db.url)
        .await
        .query_one(
            "SELECT count(*) FROM sessions WHERE last_heartbeat > $1",
            &[&seeded_at],
        )
        .await
        .unwrap()
        .get(0);
    println!(
        "{:<44} {touched} of {SESSIONS} seeded sessions heartbeaten by pgbench",
        ""
    );
    db.drop_db().await;
    tps
}

/// Every PostgreSQL phase, or a "skipped" line without a server.
pub async fn run(opts: &Opts, bare: SocketAddr, dir: &std::path::Path) -> Option<Summary> {
    let Some(server) = server_url() else {
        println!(
            "postgres: skipped: no PostgreSQL URL (set KEYSEAT_BENCH_POSTGRES_URL or KEYSEAT_TEST_POSTGRES_URL)"
        );
        return None;
    };
    let version: String = connect(&server)
        .await
        .query_one("SHOW server_version", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or_default();
    let fsync: String = connect(&server)
        .await
        .query_one("SHOW fsync", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or_default();
    println!(
        "postgres: {} (PostgreSQL {version}, fsync {fsync}), {CONNECTIONS} HTTP connections, {} shared heartbeat connections per server",
        redacted(&server),
        heartbeat_connections()
    );
    let pgbench_tps = pgbench_phase(&server, opts, dir).await;
    let one = heartbeat_phase(&server, 1, opts, bare).await;
    let three = heartbeat_phase(&server, 3, opts, bare).await;
    start_phase(&server, 1, opts, bare).await;
    start_phase(&server, 3, opts, bare).await;
    Some(Summary {
        one,
        three,
        pgbench_tps,
    })
}

/// The PostgreSQL lines of the targets.
pub fn targets(summary: &Summary, verdict: impl Fn(bool) -> &'static str) {
    match summary.pgbench_tps {
        Some(tps) => {
            let r = summary.one.rps / tps;
            println!(
                "  postgres heartbeats (1 server) >= 0.70 of pgbench's rate for the statement ({} connections): {:.0}/{tps:.0} = {r:.3} -> {}",
                heartbeat_connections(),
                summary.one.rps,
                verdict(r >= 0.70)
            );
        }
        None => println!("  postgres heartbeats vs pgbench: not measured (no pgbench)"),
    }
    let r = summary.three.rps / summary.one.rps;
    println!(
        "  postgres: three servers' heartbeats >= one server's: {:.0}/{:.0} = {r:.3} -> {}",
        summary.three.rps,
        summary.one.rps,
        verdict(r >= 1.0)
    );
}
