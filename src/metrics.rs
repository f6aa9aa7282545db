//! Prometheus metrics: what operators graph and alert on.
//!
//! One registry per process ([`global`]): counters are bumped where things
//! happen (HTTP middleware, session handlers, the sweep, the database
//! writer thread) without threading a handle through the storage boundary,
//! and a keyseat process serves one database. Gauges that describe state
//! (live sessions, keys by status) are read from the store at scrape time,
//! so they are never stale and cost nothing between scrapes.
//!
//! Names follow Prometheus conventions: `keyseat_` prefix, `_total` on
//! counters, base units (`_seconds`). The text format is version 0.0.4,
//! which every Prometheus-compatible scraper reads.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::model::EndReason;

/// Content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Code {
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Status {
    status: &'static str,
}

// Labels are `&'static str` (methods and route patterns are interned, see
// [`route_label`]) so counting a request allocates nothing: the HTTP
// middleware runs on every heartbeat.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Request {
    method: &'static str,
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    method: &'static str,
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Version {
    version: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric keyseat exports.
pub struct Metrics {
    registry: Registry,
    sessions_live: Gauge,
    keys: Family<Status, Gauge>,
    sessions_started: Counter,
    sessions_ended: Family<Reason, Counter>,
    starts_rejected: Family<Code, Counter>,
    heartbeats: Family<Code, Counter>,
    heartbeats_held: Gauge,
    held_answered_early: Family<Code, Counter>,
    shed: Family<Reason, Counter>,
    http_requests: Family<Request, Counter>,
    http_duration: HistogramFamily<Route>,
    sweep_runs: Counter,
    sweep_duration: Histogram,
    sweep_expired: Counter,
    outages: Counter,
    write_batch: Histogram,
    commit_duration: Histogram,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~6.5 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            sessions_live: Gauge::default(),
            keys: Family::default(),
            sessions_started: Counter::default(),
            sessions_ended: Family::default(),
            starts_rejected: Family::default(),
            heartbeats: Family::default(),
            heartbeats_held: Gauge::default(),
            held_answered_early: Family::default(),
            shed: Family::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_histogram),
            sweep_runs: Counter::default(),
            sweep_duration: latency_histogram(),
            sweep_expired: Counter::default(),
            outages: Counter::default(),
            write_batch: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            commit_duration: latency_histogram(),
            registry: Registry::default(),
        };
        let build: Family<Version, Gauge> = Family::default();
        build
            .get_or_create(&Version {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("keyseat_build_info", "keyseat version (always 1)", build);
        registry.register(
            "keyseat_sessions_live",
            "Sessions live now (heartbeat within the timeout)",
            m.sessions_live.clone(),
        );
        registry.register(
            "keyseat_keys",
            "Access keys by status (active, suspended, revoked, expired)",
            m.keys.clone(),
        );
        registry.register(
            "keyseat_sessions_started",
            "Sessions started (retries of the same session not counted)",
            m.sessions_started.clone(),
        );
        registry.register(
            "keyseat_sessions_ended",
            "Sessions ended, by reason (ended, superseded, expired, revoked)",
            m.sessions_ended.clone(),
        );
        registry.register(
            "keyseat_session_starts_rejected",
            "Starts refused, by the contract's error code",
            m.starts_rejected.clone(),
        );
        registry.register(
            "keyseat_heartbeats",
            "Heartbeats answered, by outcome (ok or the error code)",
            m.heartbeats.clone(),
        );
        registry.register(
            "keyseat_heartbeats_held",
            "Heartbeats held open now (wait_seconds), until their wait is over or their session ends",
            m.heartbeats_held.clone(),
        );
        registry.register(
            "keyseat_held_heartbeats_answered_early",
            "Held heartbeats answered before their wait was over: by the end that woke them (its error code), or `stopping`",
            m.held_answered_early.clone(),
        );
        registry.register(
            "keyseat_shed",
            "Requests or connections shed with 503 overloaded, or idle connections closed to make room, by reason",
            m.shed.clone(),
        );
        registry.register(
            "keyseat_http_requests",
            "HTTP requests answered, by method, route and status",
            m.http_requests.clone(),
        );
        registry.register(
            "keyseat_http_request_duration_seconds",
            "Time from request to response, by method and route",
            m.http_duration.clone(),
        );
        registry.register(
            "keyseat_sweep_runs",
            "Stale-session sweep passes",
            m.sweep_runs.clone(),
        );
        registry.register(
            "keyseat_sweep_duration_seconds",
            "Duration of a sweep pass",
            m.sweep_duration.clone(),
        );
        registry.register(
            "keyseat_sweep_expired_sessions",
            "Sessions the sweep recorded as expired",
            m.sweep_expired.clone(),
        );
        registry.register(
            "keyseat_outages",
            "Gaps in the server's own progress (process stopped or paused) treated as outages",
            m.outages.clone(),
        );
        registry.register(
            "keyseat_db_write_batch_size",
            "Changes committed together by the database writer (group commit)",
            m.write_batch.clone(),
        );
        registry.register(
            "keyseat_db_commit_duration_seconds",
            "Duration of one database commit (a batch)",
            m.commit_duration.clone(),
        );
        Metrics { registry, ..m }
    }

    /// A session was started (not a retry of the same one).
    pub fn session_started(&self) {
        self.sessions_started.inc();
    }

    /// A session ended.
    pub fn session_ended(&self, reason: EndReason) {
        self.sessions_ended
            .get_or_create(&Reason {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// A start was refused with this error code.
    pub fn start_rejected(&self, code: &'static str) {
        self.starts_rejected.get_or_create(&Code { code }).inc();
    }

    /// A heartbeat was answered: `ok` or the error code.
    pub fn heartbeat(&self, code: &'static str) {
        self.heartbeats.get_or_create(&Code { code }).inc();
    }

    /// Heartbeats held open right now (read at scrape time).
    pub fn set_heartbeats_held(&self, n: usize) {
        self.heartbeats_held
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A held heartbeat was answered before its wait was over: the code of
    /// the end that woke it, or `stopping`.
    pub fn held_answered_early(&self, code: &'static str) {
        self.held_answered_early.get_or_create(&Code { code }).inc();
    }

    /// Work was shed (`connections` or `writes`).
    pub fn shed(&self, reason: &'static str) {
        self.shed.get_or_create(&Reason { reason }).inc();
    }

    /// An HTTP request was answered. `route` is the route's pattern
    /// (`/api/admin/keys/{id}`), never the raw path, so label sets stay few.
    pub fn http_request(
        &self,
        method: &'static str,
        route: &'static str,
        status: u16,
        took: Duration,
    ) {
        self.http_requests
            .get_or_create(&Request {
                method,
                route,
                status,
            })
            .inc();
        self.http_duration
            .get_or_create(&Route { method, route })
            .observe(took.as_secs_f64());
    }

    /// A sweep pass finished.
    pub fn sweep_run(&self, took: Duration, expired: usize) {
        self.sweep_runs.inc();
        self.sweep_duration.observe(took.as_secs_f64());
        self.sweep_expired.inc_by(expired as u64);
    }

    /// The server noticed a gap in its own progress.
    pub fn outage_noticed(&self) {
        self.outages.inc();
    }

    /// The writer committed a batch of `size` changes.
    pub fn write_batch(&self, size: usize, took: Duration) {
        self.write_batch.observe(size as f64);
        self.commit_duration.observe(took.as_secs_f64());
    }

    /// The exposition text, with the state gauges set from a fresh reading.
    pub fn render(&self, state: &StateReading) -> String {
        self.sessions_live.set(state.live_sessions as i64);
        for (status, count) in &state.keys_by_status {
            self.keys
                .get_or_create(&Status { status })
                .set(*count as i64);
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// The state gauges' values, read from the store at scrape time.
#[derive(Debug, Clone, Default)]
pub struct StateReading {
    /// Sessions live now.
    pub live_sessions: u64,
    /// Keys per status.
    pub keys_by_status: Vec<(&'static str, u64)>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The method as a label: the standard ones by name, anything else `OTHER`
/// (a client inventing methods must not create label sets).
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method as M;
    match *method {
        M::GET => "GET",
        M::POST => "POST",
        M::PUT => "PUT",
        M::PATCH => "PATCH",
        M::DELETE => "DELETE",
        M::HEAD => "HEAD",
        M::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Route patterns seen so far, interned: the router's patterns are a small
/// fixed set, so this holds a few dozen strings for the process's life.
static ROUTES: LazyLock<std::sync::RwLock<std::collections::HashSet<&'static str>>> =
    LazyLock::new(Default::default);

/// The route pattern as a `'static` label.
pub fn route_label(pattern: &str) -> &'static str {
    if let Some(r) = ROUTES
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(pattern)
    {
        return r;
    }
    let mut routes = ROUTES.write().unwrap_or_else(|p| p.into_inner());
    if let Some(r) = routes.get(pattern) {
        return r;
    }
    let interned: &'static str = Box::leak(pattern.to_owned().into_boxed_str());
    routes.insert(interned);
    interned
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    &METRICS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text_with_every_family() {
        let m = Metrics::new();
        m.session_started();
        m.session_ended(EndReason::Superseded);
        m.start_rejected("seats_full");
        m.heartbeat("ok");
        m.http_request("POST", "/api/session/start", 200, Duration::from_millis(3));
        m.sweep_run(Duration::from_millis(2), 4);
        m.write_batch(12, Duration::from_millis(1));
        let text = m.render(&StateReading {
            live_sessions: 7,
            keys_by_status: vec![("active", 3), ("revoked", 1)],
        });
        for line in [
            "keyseat_sessions_live 7",
            "keyseat_keys{status=\"active\"} 3",
            "keyseat_sessions_started_total 1",
            "keyseat_sessions_ended_total{reason=\"superseded\"} 1",
            "keyseat_session_starts_rejected_total{code=\"seats_full\"} 1",
            "keyseat_heartbeats_total{code=\"ok\"} 1",
            "keyseat_http_requests_total{method=\"POST\",route=\"/api/session/start\",status=\"200\"} 1",
            "keyseat_sweep_expired_sessions_total 4",
            "keyseat_db_write_batch_size_count 1",
            "keyseat_build_info{version=",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        assert!(text.contains("# TYPE keyseat_http_request_duration_seconds histogram"));
    }
}
