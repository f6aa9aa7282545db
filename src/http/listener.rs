//! Accepting connections: the defences that must act before a request
//! exists. `axum::serve` has no knobs for these, so keyseat drives hyper
//! itself:
//!
//! - at most `max_connections` connections are served at once; one more is
//!   answered with a complete 503 `overloaded` (JSON, `Retry-After: 1`) and
//!   closed, so a client learns to retry instead of hanging in the backlog;
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
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// Largest request head (request line and headers) accepted.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most header fields in one request.
const MAX_HEADERS: usize = 64;
/// Refusals being written at once; past this, excess connections are
/// simply closed (the cheapest possible answer under a flood).
const MAX_REFUSALS: usize = 256;

/// Connection-level limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Connections served at once.
    pub max_connections: usize,
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

/// Serves `router` on `listener` until `shutdown` completes, then waits for
/// open connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let graceful = GracefulShutdown::new();
    // Connection tasks, so the ones still running after the drain deadline
    // can be closed (a spawned task outlives an aborted `serve`).
    let mut connections = tokio::task::JoinSet::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);

    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            crate::metrics::global().shed("connections");
            if let Ok(permit) = refusals.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream).await;
                    drop(permit);
                });
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let router = router.clone();
            async move {
                let response = router
                    .oneshot(req.map(Body::new))
                    .await
                    .unwrap_or_else(|never: Infallible| match never {});
                Ok::<_, Infallible>(response)
            }
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        connections.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection closed with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain, graceful.shutdown())
        .await
        .is_err()
    {
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

/// Answers 503 and closes, reading (and discarding) what the client sent
/// first so the close does not reset the connection before the client has
/// read the answer. Bounded to one second.
async fn refuse(mut stream: TcpStream) {
    let work = async {
        let mut buf = [0u8; 4096];
        // Give the request a moment to arrive, then answer regardless.
        let _ = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await;
        stream.write_all(REFUSAL.as_bytes()).await?;
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
    fn the_refusal_is_a_complete_json_answer() {
        let (head, body) = REFUSAL.split_once("\r\n\r\n").unwrap();
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
