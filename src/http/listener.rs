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
//!   request in progress for [`MIN_IDLE_MS`]): at its address's cap, that
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

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use crate::proxy::TrustedProxies;
use crate::ratelimit::bucket_of;

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

/// How long a connection must have been idle (no request in progress)
/// before it may give its place to a newcomer: longer than a client takes
/// to send its request once connected, so a device's fresh connection is
/// never closed before it is used.
const MIN_IDLE_MS: u64 = 1_000;

/// One served connection, as the [`Table`] sees it.
struct Conn {
    id: u64,
    /// Requests being handled on it right now.
    busy: AtomicUsize,
    /// When it last became idle (accepted, or a request answered), in ms
    /// since the table's epoch.
    idle_since_ms: AtomicU64,
    epoch: Instant,
    /// Asks the connection to close (at once if idle).
    close: Notify,
    /// Its share of `max_connections`; taken (and handed to a newcomer)
    /// when it is evicted, so `None` also means "already evicted".
    slot: Mutex<Option<OwnedSemaphorePermit>>,
}

impl Conn {
    fn live(&self) -> bool {
        self.slot.lock().is_ok_and(|s| s.is_some())
    }

    /// Idle for at least `min_idle_ms` at `now_ms`, and not evicted yet.
    fn evictable(&self, now_ms: u64, min_idle_ms: u64) -> bool {
        self.busy.load(Ordering::SeqCst) == 0
            && now_ms.saturating_sub(self.idle_since_ms.load(Ordering::SeqCst)) >= min_idle_ms
            && self.live()
    }
}

/// Marks a connection busy while a request on it is handled.
struct Busy(Arc<Conn>);

impl Busy {
    fn enter(conn: &Arc<Conn>) -> Busy {
        conn.busy.fetch_add(1, Ordering::SeqCst);
        Busy(conn.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let now = u64::try_from(self.0.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.idle_since_ms.store(now, Ordering::SeqCst);
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Why a connection was refused (the `reason` label of the shed counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// `max_connections` are open and none could give way.
    Full,
    /// This address already has its share, none of it idle.
    PerAddress,
}

impl Refused {
    fn reason(self) -> &'static str {
        match self {
            Refused::Full => "connections",
            Refused::PerAddress => "connections_per_address",
        }
    }
}

/// The open connections by client address: decides who is admitted, and
/// whose idle connection gives way to a newcomer.
/// Removes a connection from the table when dropped.
struct LeaveTable<'a> {
    table: &'a Table,
    bucket: IpAddr,
    entry: &'a Conn,
}

impl Drop for LeaveTable<'_> {
    fn drop(&mut self) {
        self.table.remove(self.bucket, self.entry);
    }
}

struct Table {
    slots: Arc<Semaphore>,
    per_address: usize,
    trusted: TrustedProxies,
    epoch: Instant,
    inner: Mutex<TableInner>,
}

#[derive(Default)]
struct TableInner {
    by_addr: HashMap<IpAddr, Vec<Arc<Conn>>>,
    next_id: u64,
}

fn live_count(list: &[Arc<Conn>]) -> usize {
    list.iter().filter(|c| c.live()).count()
}

impl Table {
    fn new(slots: usize, per_address: usize, trusted: TrustedProxies) -> Table {
        Table {
            slots: Arc::new(Semaphore::new(slots)),
            per_address,
            trusted,
            epoch: Instant::now(),
            inner: Mutex::new(TableInner::default()),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, TableInner> {
        // Bookkeeping only; a poisoned table is still consistent enough.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Admits a connection from `peer` at `now_ms`, or says why not.
    /// Synchronous and short: the accept loop calls it for every connection.
    ///
    /// - An address at its cap may only replace one of its own connections
    ///   that has been idle a while; a burst of new sockets does not get
    ///   in, and one that sends a request at once gets a second chance in
    ///   [`Self::admit_sending`].
    /// - A full server replaces an idle connection of the address holding
    ///   the most, if it holds at least two more than the newcomer's (so
    ///   after the swap it still holds more): parked sockets give way, a
    ///   live device's own connection (one of few) never does.
    fn admit(&self, peer: IpAddr, now_ms: u64) -> Result<(IpAddr, Arc<Conn>), Refused> {
        let bucket = bucket_of(peer);
        let mut inner = self.inner();
        let mine = inner.by_addr.get(&bucket).map_or(0, |l| live_count(l));
        let slot = if mine >= self.per_address && !self.trusted.contains(peer) {
            inner.take_idle(bucket, now_ms).ok_or(Refused::PerAddress)?
        } else {
            match self.slots.clone().try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => inner.evict_for(bucket, mine, now_ms).ok_or(Refused::Full)?,
            }
        };
        Ok((bucket, inner.insert(bucket, slot, now_ms, self.epoch)))
    }

    /// Admits a connection from an address at its cap that has already
    /// started sending a request, in place of that address's longest-idle
    /// connection however briefly idle: a device behind the same NAT as a
    /// socket-parker (whose sockets never send anything) gets in, however
    /// fast the parker reconnects.
    fn admit_sending(&self, peer: IpAddr) -> Result<(IpAddr, Arc<Conn>), Refused> {
        let bucket = bucket_of(peer);
        let now_ms = self.now_ms();
        let mut inner = self.inner();
        let slot = inner
            .take_idle_for(bucket, now_ms, 0)
            .ok_or(Refused::PerAddress)?;
        Ok((bucket, inner.insert(bucket, slot, now_ms, self.epoch)))
    }

    /// Forgets a closed connection (its slot is freed by dropping it).
    fn remove(&self, bucket: IpAddr, conn: &Conn) {
        let mut inner = self.inner();
        if let Some(list) = inner.by_addr.get_mut(&bucket) {
            list.retain(|c| c.id != conn.id);
            if list.is_empty() {
                inner.by_addr.remove(&bucket);
            }
        }
        let slot = conn.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(inner);
        drop(slot);
    }
}

impl TableInner {
    fn insert(
        &mut self,
        bucket: IpAddr,
        slot: OwnedSemaphorePermit,
        now_ms: u64,
        epoch: Instant,
    ) -> Arc<Conn> {
        self.next_id += 1;
        let conn = Arc::new(Conn {
            id: self.next_id,
            busy: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(now_ms),
            epoch,
            close: Notify::new(),
            slot: Mutex::new(Some(slot)),
        });
        self.by_addr.entry(bucket).or_default().push(conn.clone());
        conn
    }

    /// Asks the longest-idle evictable connection of `addr` to close and
    /// hands over its slot.
    fn take_idle(&mut self, addr: IpAddr, now_ms: u64) -> Option<OwnedSemaphorePermit> {
        self.take_idle_for(addr, now_ms, MIN_IDLE_MS)
    }

    /// As [`Self::take_idle`], for connections idle at least `min_idle_ms`.
    fn take_idle_for(
        &mut self,
        addr: IpAddr,
        now_ms: u64,
        min_idle_ms: u64,
    ) -> Option<OwnedSemaphorePermit> {
        let victim = self
            .by_addr
            .get(&addr)?
            .iter()
            .filter(|c| c.evictable(now_ms, min_idle_ms))
            .min_by_key(|c| c.idle_since_ms.load(Ordering::SeqCst))?;
        let slot = victim.slot.lock().ok()?.take()?;
        victim.close.notify_one();
        crate::metrics::global().shed("idle_connection_evicted");
        Some(slot)
    }

    /// For a newcomer from `newcomer` (holding `mine`) on a full server: an
    /// idle connection's slot from the biggest address holding at least
    /// two more, trying the next biggest when one has none idle.
    fn evict_for(
        &mut self,
        newcomer: IpAddr,
        mine: usize,
        now_ms: u64,
    ) -> Option<OwnedSemaphorePermit> {
        let mut holders: Vec<(usize, IpAddr)> = self
            .by_addr
            .iter()
            .filter(|(addr, _)| **addr != newcomer)
            .map(|(addr, list)| (live_count(list), *addr))
            .filter(|(n, _)| *n > mine + 1)
            .collect();
        holders.sort_unstable_by_key(|h| std::cmp::Reverse(h.0));
        holders
            .into_iter()
            .find_map(|(_, addr)| self.take_idle(addr, now_ms))
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

    fn table(slots: usize, per_address: usize, trusted: &str) -> Table {
        Table::new(slots, per_address, TrustedProxies::parse(trusted).unwrap())
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn one_address_gets_its_share_and_no_more_at_once() {
        let t = table(10, 2, "192.0.2.9");
        assert!(t.admit(ip(1), 0).is_ok());
        assert!(t.admit(ip(1), 0).is_ok());
        assert_eq!(t.admit(ip(1), 0).err(), Some(Refused::PerAddress));
        assert!(t.admit(ip(2), 0).is_ok(), "another address is admitted");
        for _ in 0..3 {
            assert!(t.admit(ip(9), 0).is_ok(), "a trusted proxy is exempt");
        }
        let v6a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:2::2".parse().unwrap();
        assert!(t.admit(v6a, 0).is_ok());
        assert!(t.admit(v6b, 0).is_ok());
        assert_eq!(t.admit(v6a, 0).err(), Some(Refused::PerAddress), "one /64");
    }

    #[test]
    fn at_its_cap_an_address_replaces_its_longest_idle_connection() {
        let t = table(10, 2, "");
        let (_, old) = t.admit(ip(1), 0).unwrap();
        let (_, newer) = t.admit(ip(1), 500).unwrap();
        assert_eq!(
            t.admit(ip(1), 900).err(),
            Some(Refused::PerAddress),
            "none idle long enough"
        );
        assert!(
            t.admit(ip(1), 1_200).is_ok(),
            "the device behind the NAT gets in"
        );
        assert!(!old.live(), "the longest idle gave way");
        assert!(newer.live());
        let _busy = Busy::enter(&newer);
        assert_eq!(t.admit(ip(1), 1_300).err(), Some(Refused::PerAddress));
    }

    #[test]
    fn a_sender_over_the_cap_replaces_its_address_longest_idle_connection() {
        let t = table(10, 2, "");
        let (_, old) = t.admit(ip(1), 0).unwrap();
        let (_, newer) = t.admit(ip(1), 0).unwrap();
        newer.idle_since_ms.store(1, Ordering::SeqCst);
        assert_eq!(t.admit(ip(1), 0).err(), Some(Refused::PerAddress));
        assert!(t.admit_sending(ip(1)).is_ok());
        assert!(!old.live() && newer.live(), "the longest idle gave way");
        let _busy = Busy::enter(&newer);
        let (_, third) = t.admit_sending(ip(1)).unwrap();
        let _busy_too = Busy::enter(&third);
        assert_eq!(
            t.admit_sending(ip(1)).err(),
            Some(Refused::PerAddress),
            "busy connections never give way"
        );
        assert_eq!(
            t.admit_sending(ip(2)).err(),
            Some(Refused::PerAddress),
            "nothing to replace at an address with none open"
        );
    }

    #[test]
    fn a_full_table_evicts_an_idle_connection_of_the_biggest_holder() {
        let t = table(4, 3, "");
        let (a, first) = t.admit(ip(1), 0).unwrap();
        let (_, busy) = t.admit(ip(1), 0).unwrap();
        let _busy = Busy::enter(&busy);
        let (_, third) = t.admit(ip(1), 0).unwrap();
        let (b, live) = t.admit(ip(2), 0).unwrap();
        let later = MIN_IDLE_MS;
        // Full. A fresh connection is never evicted.
        assert_eq!(t.admit(ip(3), later - 1).err(), Some(Refused::Full));
        // A newcomer from an address with nothing open takes an idle
        // connection of the address holding three.
        assert!(t.admit(ip(3), later).is_ok());
        assert!(!first.live(), "evicted");
        assert!(busy.live(), "busy ones are kept");
        // Address 1 now holds two live connections, one busy, the newcomer's
        // address one: the next newcomer takes the idle one left there.
        assert!(t.admit(ip(4), later).is_ok());
        assert!(!third.live());
        // Only a busy one is left at address 1; the live device at address
        // 2 holds one, like every newcomer would: refused.
        assert_eq!(t.admit(ip(5), later).err(), Some(Refused::Full));
        assert!(live.live(), "never the live device's");
        // Closing connections frees their slots for anyone.
        t.remove(a, &first);
        t.remove(b, &live);
        assert!(t.admit(ip(5), later).is_ok());
    }

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
