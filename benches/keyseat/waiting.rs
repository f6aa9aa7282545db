//! Waiting heartbeats (docs/api.md, "Waiting heartbeat"): how soon a
//! takeover reaches the device it evicts, with held heartbeats and with
//! plain ones, and what 10,000 held heartbeats cost the server (resident
//! memory, and the rate of ordinary heartbeats from other devices).
//!
//! The devices here are raw HTTP/1.1 connections, one per device, so a
//! held heartbeat costs the load generator nothing but a socket.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{drive, heartbeat_load, is_2xx, keyseat_server, percentile_ms, seed, Opts};

/// What the phase measured.
pub struct Waiting {
    pub held_p50_ms: f64,
    pub held_p99_ms: f64,
    /// B's start itself, while A's heartbeat was held (p99).
    pub start_p99_ms: f64,
    pub plain_p50_ms: f64,
    pub plain_p99_ms: f64,
    pub takeovers: usize,
    pub held: usize,
    pub extra_rss_mib: f64,
    /// Of that, the keep-alive connections alone (one plain heartbeat
    /// each, as devices keep them between heartbeats).
    pub connections_mib: f64,
    pub beats_without: f64,
    pub beats_with: f64,
    /// Median over the rounds of with / without.
    pub beats_ratio: f64,
}

/// One request on `stream`; the answer's status and the time it came.
async fn post(stream: &mut TcpStream, path: &str, body: &str) -> (u16, Instant) {
    send(stream, path, body).await;
    receive(stream).await
}

async fn send(stream: &mut TcpStream, path: &str, body: &str) {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
}

/// Reads one answer (headers, then `Content-Length` bytes).
async fn receive(stream: &mut TcpStream) -> (u16, Instant) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await.unwrap_or(0);
        assert!(n > 0, "the server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < end + 4 + length {
            let n = stream.read(&mut chunk).await.unwrap_or(0);
            assert!(n > 0, "the server closed the connection");
            buf.extend_from_slice(&chunk[..n]);
        }
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        return (status, Instant::now());
    }
}

fn beat(key: &str, id: &str, wait: u64) -> String {
    format!(r#"{{"access_key":"{key}","session_id":"{id}","wait_seconds":{wait}}}"#)
}

/// Takes over each device's seat; how long each device took to learn it
/// (from B's start sent), and how long each start took (its commit is
/// part of the first: a slow disk shows in both).
/// `held`: each device keeps a held heartbeat open; otherwise it sends a
/// plain heartbeat every `every`, from a random moment on.
async fn takeover_latencies(
    addr: SocketAddr,
    devices: &[(String, String)],
    held: bool,
    every: Duration,
) -> (Vec<u32>, Vec<u32>) {
    let mut told = Vec::new();
    for (n, (key, id)) in devices.iter().cloned().enumerate() {
        let offset = Duration::from_micros((n as u64 * 7_919) % every.as_micros() as u64);
        told.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            if held {
                let (status, at) =
                    post(&mut stream, "/api/session/heartbeat", &beat(&key, &id, 25)).await;
                return (status, at);
            }
            tokio::time::sleep(offset).await;
            loop {
                let (status, at) =
                    post(&mut stream, "/api/session/heartbeat", &beat(&key, &id, 0)).await;
                if status != 200 {
                    return (status, at);
                }
                tokio::time::sleep(every).await;
            }
        }));
    }
    // Let every held heartbeat arrive (and plain devices reach their pace).
    tokio::time::sleep(if held {
        Duration::from_millis(500)
    } else {
        every * 2
    })
    .await;
    let (mut takes, mut starts) = (Vec::new(), Vec::new());
    let mut start = TcpStream::connect(addr).await.unwrap();
    start.set_nodelay(true).unwrap();
    for (key, _) in devices {
        let at = Instant::now();
        let (status, _) = post(
            &mut start,
            "/api/session/start",
            &format!(r#"{{"access_key":"{key}","device":{{"name":"B"}}}}"#),
        )
        .await;
        assert_eq!(status, 200, "a takeover");
        takes.push(at);
        starts.push(at.elapsed().as_micros() as u32);
        if !held {
            // Spread the takeovers over one interval, as devices are.
            tokio::time::sleep(every / devices.len() as u32).await;
        }
    }
    let mut latencies = Vec::new();
    for (task, at) in told.into_iter().zip(takes) {
        let (status, told_at) = task.await.unwrap();
        assert_eq!(status, 409, "superseded");
        latencies.push(told_at.saturating_duration_since(at).as_micros() as u32);
    }
    latencies.sort_unstable();
    starts.sort_unstable();
    (latencies, starts)
}

/// Server resident memory in MiB (from /proc).
fn rss_of(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

pub async fn phase(dir: &Path, opts: &Opts) -> Waiting {
    let (takeovers, held_n) = if opts.quick {
        (50, 1_000)
    } else {
        (250, 10_000)
    };
    let others = 1_000;
    let db = dir.join("waiting.db");
    let pairs = seed(&db, takeovers * 2 + held_n + others);
    let server = keyseat_server(
        &db,
        &[
            "--max-connections",
            "16000",
            "--trusted-proxies",
            "127.0.0.1",
            // Idle connections stay open between the plain heartbeat and
            // the held one.
            "--client-timeout-seconds",
            "120",
        ],
    );
    let addr = server.addr;
    let (a, rest) = pairs.split_at(takeovers);
    let (b, rest) = rest.split_at(takeovers);
    let (held_pairs, other_pairs) = rest.split_at(held_n);

    let (held, starts) = takeover_latencies(addr, a, true, Duration::from_secs(30)).await;
    let (plain, _) = takeover_latencies(addr, b, false, Duration::from_secs(1)).await;

    // Ordinary heartbeats from other devices, without and with held ones.
    // Ordinary heartbeats from other devices, without and with held ones,
    // alternated (this machine's speed drifts between phases): the ratio
    // is the median of each round's with / without.
    let load = heartbeat_load(Arc::new(other_pairs.to_vec()));
    let secs = opts.secs.min(5);
    let rounds = if opts.quick { 1 } else { 3 };
    let (mut ratios, mut beats) = (Vec::new(), (0.0, 0.0));
    let mut rss = (0.0, 0.0, 0.0);
    for round in 0..rounds {
        let without = drive(&[addr], secs, load.clone(), is_2xx).await;
        let before = rss_of(server.child.id());
        let mut parked = Vec::with_capacity(held_n);
        for (key, id) in held_pairs {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let (status, _) = post(&mut stream, "/api/session/heartbeat", &beat(key, id, 0)).await;
            assert_eq!(status, 200, "a plain heartbeat");
            parked.push(stream);
        }
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        let connected = rss_of(server.child.id());
        for ((key, id), stream) in held_pairs.iter().zip(&mut parked) {
            send(stream, "/api/session/heartbeat", &beat(key, id, 25)).await;
        }
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        if round == 0 {
            rss = (before, connected, rss_of(server.child.id()));
        }
        let with = drive(&[addr], secs, load.clone(), is_2xx).await;
        ratios.push(with.rps / without.rps);
        beats = (beats.0 + without.rps, beats.1 + with.rps);
        // Closed by their clients: the server frees them before the next round.
        drop(parked);
        tokio::time::sleep(Duration::from_millis(1_000)).await;
    }
    ratios.sort_by(f64::total_cmp);
    let (rss_before, rss_connected, rss_after) = rss;
    let w = Waiting {
        held_p50_ms: percentile_ms(&held, 0.50),
        held_p99_ms: percentile_ms(&held, 0.99),
        start_p99_ms: percentile_ms(&starts, 0.99),
        plain_p50_ms: percentile_ms(&plain, 0.50),
        plain_p99_ms: percentile_ms(&plain, 0.99),
        takeovers,
        held: held_n,
        extra_rss_mib: rss_after - rss_before,
        connections_mib: rss_connected - rss_before,
        beats_without: beats.0 / rounds as f64,
        beats_with: beats.1 / rounds as f64,
        beats_ratio: ratios[ratios.len() / 2],
    };
    println!(
        "waiting heartbeats: takeover told after p50 {:.1} ms / p99 {:.1} ms held ({} takeovers; \
         B's start itself p99 {:.1} ms), p50 {:.0} ms / p99 {:.0} ms with plain heartbeats every 1 s \
         (at the default 30 s: 30 times that)",
        w.held_p50_ms,
        w.held_p99_ms,
        w.takeovers,
        w.start_p99_ms,
        w.plain_p50_ms,
        w.plain_p99_ms
    );
    println!(
        "waiting heartbeats: {} held at once: server +{:.1} MiB resident ({:.1} -> {:.1}), \
         of which the keep-alive connections alone +{:.1} MiB and the holding +{:.1} MiB; \
         other devices' heartbeats {:.0}/s with them, {:.0}/s without (median ratio of {} rounds {:.3})",
        w.held,
        w.extra_rss_mib,
        rss_before,
        rss_after,
        w.connections_mib,
        w.extra_rss_mib - w.connections_mib,
        w.beats_with,
        w.beats_without,
        rounds,
        w.beats_ratio
    );
    w
}

/// The phase's goals.
pub fn targets(w: &Waiting, verdict: impl Fn(bool) -> &'static str) {
    println!(
        "  takeover told with held heartbeats, p99 {:.1} ms < 50 ms: {}",
        w.held_p99_ms,
        verdict(w.held_p99_ms < 50.0)
    );
    println!(
        "  {} held heartbeats: +{:.1} MiB < 40 MiB: {} (the holding itself +{:.1} MiB; \
         the rest is their keep-alive connections, ~8 KiB of it each hyper's fixed buffers)",
        w.held,
        w.extra_rss_mib,
        verdict(w.extra_rss_mib < 40.0),
        w.extra_rss_mib - w.connections_mib
    );
    println!(
        "  other heartbeats with them {:.3} of without >= 0.9: {}",
        w.beats_ratio,
        verdict(w.beats_ratio >= 0.9)
    );
}
