//! Accepting connections: the defences that must act before a request
//! exists. `axum::serve` has no knobs for these, so keyseat drives hyper
//! itself:
//!
//! - at most `max_connections` connections are served at once, and at most
//!   `max_connections_per_address` (never more than a quarter of
//!   `max_connections`) from one client address (an IPv6 /64; trusted
//!   proxies are exempt, they carry everyone). A connection over either cap
//!   is answered with a complete 503 `overloaded` (JSON, `Retry-After: 1`)
//!   and closed, so a client learns to retry instead of hanging in the
//!   backlog;
//! - but first a newcomer may take the slot of an *idle* connection (no
//!   request in progress for [`table::MIN_IDLE_MS`]): at its address's cap, that
//!   address's longest-idle one (however briefly idle, if the newcomer
//!   starts sending a request within [`PROBATION`], as a device does and a
//!   parked socket does not); on a full server, one of the address holding
//!   the most connections, provided it would still hold more than the
//!   newcomer's. So sockets parked by one or a few addresses give way to
//!   other clients and to devices behind the same NAT, while a live
//!   device's own keep-alive connection (one of few from its address) is
//!   never the one closed on a full server;
//! - request headers must arrive within `client_timeout_seconds` and be at
//!   most [`MAX_HEADER_BYTES`] (hyper closes slow connections and answers
//!   431 to huge headers). The same deadline closes idle keep-alive
//!   connections, so idle sockets cannot pile up to the cap;
//! - running out of file descriptors (EMFILE) pauses accepting briefly
//!   instead of spinning;
//! - on stop, idle connections close at once and in-flight requests get
//!   a bounded time to finish; connections still busy then are closed.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

mod table;

use table::{Busy, LeaveTable, Refused, Table};

use crate::proxy::TrustedProxies;

/// Largest request head (request line and headers) accepted.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most header fields in one request.
const MAX_HEADERS: usize = 64;
/// Refusals being written at once; past this, excess connections are
/// simply closed (the cheapest possible answer under a flood).
const MAX_REFUSALS: usize = 256;

/// How long an evicted connection that raced a request in gets to finish
/// it before it is closed regardless (its slot already went to another).
const EVICTED_GRACE: Duration = Duration::from_secs(1);

/// Connection-level limits.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections served at once from one client address (lowered to a
    /// quarter of `max_connections` if higher).
    pub max_per_address: usize,
    /// Peers exempt from the per-address cap: the reverse proxies, whose
    /// one address carries every client.
    pub trusted: TrustedProxies,
    /// Deadline for a request's headers, and for an idle keep-alive
    /// connection's next request.
    pub header_timeout: Duration,
    /// How long in-flight requests get to finish after the stop signal;
    /// connections still open then are closed.
    pub drain: Duration,
}

/// Descriptors kept free of the connection cap: refusals being written,
/// the metrics listener's connections, the database pool, the WAL and
/// shared-memory files, the listeners, logs.
const RESERVED_FDS: usize = 64 + MAX_REFUSALS + 64 + 64;

/// The soft limit on open files, where the platform says (Linux).
pub fn open_files_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The connection cap to use: the configured one, lowered (with a reason)
/// when the process may not open that many files ([`RESERVED_FDS`] kept).
pub fn effective_max_connections(configured: usize) -> (usize, Option<String>) {
    match open_files_limit() {
        Some(limit) if configured + RESERVED_FDS > limit => {
            let cap = limit.saturating_sub(RESERVED_FDS).max(1);
            (
                cap,
                Some(format!(
                    "max_connections = {configured} exceeds what the open-files limit ({limit}) allows; \
                     serving at most {cap} connections (raise it with `ulimit -n` or LimitNOFILE=)"
                )),
            )
        }
        _ => (configured, None),
    }
}

/// Per-address caps for limits: the configured one, at most a quarter of
/// the total (and at least one).
pub fn per_address_cap(max_connections: usize, configured: usize) -> usize {
    configured.min(max_connections / 4).max(1)
}

/// Serves `router` on `listener` until `shutdown` completes, then waits for
/// open connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) {
    let table = Arc::new(Table::new(
        limits.max_connections,
        per_address_cap(limits.max_connections, limits.max_per_address),
        limits.trusted.clone(),
    ));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    // Tells every connection the server is stopping: idle ones close at
    // once, busy ones after their request.
    let (stopping, stop_rx) = tokio::sync::watch::channel(false);
    // Connection tasks, so the ones still running after the drain deadline
    // can be closed (a spawned task outlives an aborted `serve`).
    let mut connections = tokio::task::JoinSet::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);

    // Connections over their address's cap that sent a request within
    // [`PROBATION`] and took the place of an idle one, back to be served.
    let (probation_tx, mut passed) = tokio::sync::mpsc::channel(MAX_REFUSALS);

    tokio::pin!(shutdown);
    loop {
        let (stream, peer, (bucket, entry)) = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            Some(admitted) = passed.recv() => admitted,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match table.admit(peer.ip(), table.now_ms()) {
                    Ok(admitted) => (stream, peer, admitted),
                    Err(why) => {
                        let Ok(permit) = refusals.clone().try_acquire_owned() else {
                            crate::metrics::global().shed(why.reason());
                            continue;
                        };
                        let (table, back) = (table.clone(), probation_tx.clone());
                        tokio::spawn(async move {
                            if why == Refused::PerAddress && sends_a_request(&stream).await {
                                if let Ok(admitted) = table.admit_sending(peer.ip()) {
                                    let _ = back.send((stream, peer, admitted)).await;
                                    return;
                                }
                            }
                            crate::metrics::global().shed(why.reason());
                            refuse(stream, why).await;
                            drop(permit);
                        });
                        continue;
                    }
                },
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let on_conn = entry.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let router = router.clone();
            let busy = Busy::enter(&on_conn);
            async move {
                let response = router
                    .oneshot(req.map(Body::new))
                    .await
                    .unwrap_or_else(|never: Infallible| match never {});
                drop(busy);
                Ok::<_, Infallible>(response)
            }
        });
        let conn = http.serve_connection(TokioIo::new(stream), service);
        let (table, mut stop_rx) = (table.clone(), stop_rx.clone());
        connections.spawn(async move {
            // However the task ends (done, panicked, aborted after the
            // drain), the connection leaves the table and frees its slot.
            let _leave = LeaveTable {
                table: &table,
                bucket,
                entry: &entry,
            };
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = entry.close.notified() => {
                    conn.as_mut().graceful_shutdown();
                    tokio::time::timeout(EVICTED_GRACE, conn.as_mut())
                        .await
                        .unwrap_or(Ok(()))
                }
                _ = async { stop_rx.wait_for(|stopped| *stopped).await.is_ok() } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection closed with an error");
            }
        });
    }
    drop(listener);
    let _ = stopping.send(true);
    let drained = tokio::time::timeout(limits.drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "requests still running after {:?}; closing their connections",
            limits.drain
        );
        connections.abort_all();
    }
    while connections.join_next().await.is_some() {}
}

/// Accept errors: per-connection ones are ignored; running out of file
/// descriptors is logged and waited out rather than retried in a hot loop.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) {
        return;
    }
    tracing::warn!(error = %e, "accepting a connection failed; pausing 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// How long a connection over its address's cap has to start sending a
/// request to be served in place of an idle connection of that address.
const PROBATION: Duration = Duration::from_millis(200);

/// Whether a client starts sending within [`PROBATION`] (peeked, so the
/// bytes stay for hyper).
async fn sends_a_request(stream: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(
        tokio::time::timeout(PROBATION, stream.peek(&mut first)).await,
        Ok(Ok(n)) if n > 0
    )
}

/// The whole answer to a connection over the cap.
const REFUSAL: &str = concat!(
    "HTTP/1.1 503 Service Unavailable\r\n",
    "content-type: application/json\r\n",
    "retry-after: 1\r\n",
    "connection: close\r\n",
    "content-length: 103\r\n",
    "\r\n",
    r#"{"error":{"code":"overloaded","message":"the server has too many open connections; retry in a second"}}"#,
);

/// The whole answer to a connection over the per-address cap.
const REFUSAL_PER_ADDRESS: &str = concat!(
    "HTTP/1.1 503 Service Unavailable\r\n",
    "content-type: application/json\r\n",
    "retry-after: 1\r\n",
    "connection: close\r\n",
    "content-length: 114\r\n",
    "\r\n",
    r#"{"error":{"code":"overloaded","message":"too many open connections from this address; close idle ones and retry"}}"#,
);

/// Answers 503 and closes, reading (and discarding) what the client sent
/// first so the close does not reset the connection before the client has
/// read the answer. Bounded to one second.
async fn refuse(mut stream: TcpStream, why: Refused) {
    let answer = match why {
        Refused::Full => REFUSAL,
        Refused::PerAddress => REFUSAL_PER_ADDRESS,
    };
    let work = async {
        let mut buf = [0u8; 4096];
        // Give the request a moment to arrive, then answer regardless.
        let _ = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await;
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        while stream.read(&mut buf).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), work).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusals_are_complete_json_answers() {
        for refusal in [REFUSAL, REFUSAL_PER_ADDRESS] {
            refusal_is_complete(refusal);
        }
    }

    fn refusal_is_complete(refusal: &str) {
        let (head, body) = refusal.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len());
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "overloaded");
    }

    #[test]
    fn the_cap_leaves_room_for_the_database() {
        if let Some(limit) = open_files_limit() {
            let (cap, why) = effective_max_connections(limit * 2);
            assert!(cap + RESERVED_FDS <= limit.max(RESERVED_FDS + 1));
            assert!(why.unwrap().contains("ulimit"));
            assert_eq!(effective_max_connections(1).0, 1);
        }
    }
}
