//! Soak: the WAL stays bounded under continuous load while another process
//! holds long read transactions.
//!
//! The real binary serves a steady stream of starts, heartbeats and ends
//! from several clients (heartbeat times are persisted every 0.5 s, the
//! sweep runs every second), while this process keeps a SQLite read
//! transaction open on the same file for 2 s at a time, with 1.5 s gaps (a
//! backup, a report or the CLI reading a large table). A reader pins the WAL:
//! no checkpoint may reset it while the reader's snapshot needs its frames,
//! so the file grows during each hold. What keeps it bounded is the
//! server's upkeep (a passive checkpoint every 0.5 s, a blocking `TRUNCATE`
//! past 64 MiB, `src/store/live.rs`): in each gap the checkpoint catches
//! up and the next write starts the WAL over from its beginning.
//!
//! The test samples the `-wal` file every 20 ms and asserts:
//! - after a long read ends, the WAL starts over before the next one: in at
//!   least 4 of 5 gaps between holds (1.5 s, three upkeep ticks) the
//!   checkpoint sequence number in its header (bytes 12..16, incremented by
//!   SQLite at each restart) advances. Before the fix that came with this
//!   test the server's passive checkpoint, on a connection of its own,
//!   never caught up with continuous writes, so the WAL started over only
//!   when the load paused, or at the 64 MiB blocking truncate;
//! - it does not grow with the length of the run: the largest file size
//!   seen in the second half is at most 1.5 times (plus 1 MiB) the largest
//!   in the first half;
//! - it stays under the design limit, 64 MiB plus 16 MiB of slack for the
//!   writes of one upkeep tick.
//!
//! It prints the largest WAL file size, the largest part of it in use
//! (`mxFrame` from the `-shm` wal-index header), the operations done and
//! the restarts.
//!
//! Length: `KEYSEAT_SOAK_SECS` (default 12, at least 8, so that there are
//! at least two gaps between reader holds). A longer run:
//! `KEYSEAT_SOAK_SECS=600 cargo test --test soak -- --nocapture`.

mod common;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const ADMIN_TOKEN: &str = "soak-admin-token-0123456789";
const MIB: u64 = 1024 * 1024;
const HOLD: Duration = Duration::from_secs(2);
const GAP: Duration = Duration::from_millis(1500);

fn wal_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-wal");
    PathBuf::from(p)
}

/// Size of the WAL file and the checkpoint sequence number in its header.
fn sample_wal(wal: &Path) -> Option<(u64, u32)> {
    let mut f = File::open(wal).ok()?;
    let size = f.metadata().ok()?.len();
    let mut header = [0u8; 16];
    f.read_exact(&mut header).ok()?;
    Some((size, u32::from_be_bytes(header[12..16].try_into().unwrap())))
}

/// Bytes of the WAL in use: `mxFrame` from the wal-index header in the
/// `-shm` file (offset 16, native byte order) times the frame size (page
/// plus a 24-byte frame header). The file's own size is a high-water mark;
/// this is what a restart brings back to zero.
fn wal_in_use(db: &Path) -> Option<u64> {
    let mut p = db.as_os_str().to_owned();
    p.push("-shm");
    let mut header = [0u8; 20];
    File::open(PathBuf::from(p))
        .ok()?
        .read_exact(&mut header)
        .ok()?;
    let page = u64::from(u16::from_ne_bytes(header[14..16].try_into().unwrap()));
    let frames = u64::from(u32::from_ne_bytes(header[16..20].try_into().unwrap()));
    Some(frames * (page + 24))
}

async fn send(client: &reqwest::Client, req: reqwest::RequestBuilder) -> (u16, Value) {
    let _ = client;
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_stays_bounded_under_load_with_long_readers() {
    let secs: u64 = std::env::var("KEYSEAT_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12)
        .max(8);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keyseat.db");
    let log = dir.path().join("server.log");
    println!("soak: database {}", db.display());
    let port = common::free_port();
    let mut cmd = common::keyseat_command();
    let mut child = cmd
        .arg("serve")
        .arg("--database")
        .arg(&db)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("KEYSEAT_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("KEYSEAT_RATE_LIMITS", "off")
        .env("KEYSEAT_SWEEP_INTERVAL_SECONDS", "1")
        .env("KEYSEAT_HEARTBEAT_PERSIST_SECONDS", "1")
        .env("KEYSEAT_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(
        client
            .get(format!("{url}/health"))
            .send()
            .await
            .map(|r| r.status().as_u16()),
        Ok(200)
    ) {
        assert!(child.try_wait().unwrap().is_none(), "server exited");
        assert!(Instant::now() < deadline, "server never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut keys = Vec::new();
    for _ in 0..20 {
        let (status, body) = send(
            &client,
            client
                .post(format!("{url}/api/admin/keys"))
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({"max_sessions": 3})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        keys.push(body["access_key"].as_str().unwrap().to_owned());
    }

    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));

    // Load: each worker starts a session, heartbeats it a few times, ends it.
    let mut workers = Vec::new();
    for w in 0..4usize {
        let (client, url, keys, stop, ops) = (
            client.clone(),
            url.clone(),
            keys.clone(),
            stop.clone(),
            ops.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let key = &keys[(w * 7 + n) % keys.len()];
                let (status, body) = send(
                    &client,
                    client
                        .post(format!("{url}/api/session/start"))
                        .json(&json!({"access_key": key, "device": {"name": "soak"}})),
                )
                .await;
                assert_eq!(status, 200, "start: {body}");
                let id = body["session_id"].as_str().unwrap().to_owned();
                ops.fetch_add(1, Ordering::Relaxed);
                for _ in 0..3 {
                    let (status, body) = send(
                        &client,
                        client
                            .post(format!("{url}/api/session/heartbeat"))
                            .json(&json!({"access_key": key, "session_id": id})),
                    )
                    .await;
                    // Another worker's start on the same key may supersede it.
                    assert!(status == 200 || status == 409, "heartbeat: {status} {body}");
                    ops.fetch_add(1, Ordering::Relaxed);
                }
                let (status, body) = send(
                    &client,
                    client
                        .post(format!("{url}/api/session/end"))
                        .json(&json!({"access_key": key, "session_id": id})),
                )
                .await;
                assert_eq!(status, 200, "end: {body}");
                ops.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    // The long reader, in this (other) process. It also notes, for each
    // gap between two holds, whether the WAL was restarted in it.
    let reader = {
        let (db, stop) = (db.clone(), stop.clone());
        std::thread::spawn(move || {
            let wal = wal_path(&db);
            let seq = || sample_wal(&wal).map(|(_, seq)| seq);
            let conn = rusqlite::Connection::open(&db).unwrap();
            let (mut holds, mut gaps, mut gaps_with_restart) = (0u32, 0u32, 0u32);
            let mut seq_at_release = None;
            while !stop.load(Ordering::SeqCst) {
                if let Some(before) = seq_at_release {
                    gaps += 1;
                    if seq() != Some(before) {
                        gaps_with_restart += 1;
                    }
                }
                conn.execute_batch("BEGIN").unwrap();
                let _: i64 = conn
                    .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
                    .unwrap();
                std::thread::sleep(HOLD);
                conn.execute_batch("COMMIT").unwrap();
                seq_at_release = seq();
                holds += 1;
                std::thread::sleep(GAP);
            }
            (holds, gaps, gaps_with_restart)
        })
    };

    // Sample the WAL.
    let wal = wal_path(&db);
    let began = Instant::now();
    let half = Duration::from_secs(secs) / 2;
    let (mut max_first, mut max_second) = (0u64, 0u64);
    let (mut first_seq, mut last_seq) = (None, 0u32);
    let mut max_used = 0u64;
    while began.elapsed() < Duration::from_secs(secs) {
        if let Some((size, seq)) = sample_wal(&wal) {
            if began.elapsed() < half {
                max_first = max_first.max(size);
            } else {
                max_second = max_second.max(size);
            }
            first_seq.get_or_insert(seq);
            last_seq = seq;
        }
        if let Some(used) = wal_in_use(&db) {
            max_used = max_used.max(used);
        }
        assert!(child.try_wait().unwrap().is_none(), "server exited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    let (holds, gaps, gaps_with_restart) = reader.join().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let server_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!server_log.contains("panicked"), "{server_log}");

    let ops = ops.load(Ordering::Relaxed);
    let restarts = last_seq.wrapping_sub(first_seq.unwrap_or(last_seq));
    let max = max_first.max(max_second);
    println!(
        "soak: {secs} s, {ops} operations ({:.0}/s), {holds} reader holds of {HOLD:?}; \
         WAL file max {:.2} MiB (first half {:.2}, second half {:.2}), at most {:.2} MiB in use, \
         restarted {restarts} times, in {gaps_with_restart} of {gaps} gaps between holds",
        ops as f64 / secs as f64,
        max as f64 / MIB as f64,
        max_first as f64 / MIB as f64,
        max_second as f64 / MIB as f64,
        max_used as f64 / MIB as f64,
    );
    assert!(ops > secs * 10, "too little load to mean anything: {ops}");
    assert!(gaps >= 2, "too few reader cycles: {gaps}");
    assert!(
        gaps_with_restart * 5 >= gaps * 4,
        "the WAL started over in only {gaps_with_restart} of {gaps} gaps between long reads"
    );
    assert!(
        max_second <= max_first * 3 / 2 + MIB,
        "the WAL keeps growing: {max_first} bytes in the first half, {max_second} in the second"
    );
    assert!(max < 80 * MIB, "WAL reached {max} bytes");
}
