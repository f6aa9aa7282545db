//! The HTTP layer: routes of the wire contract (`shared/spec/api.md`), the
//! shared state handlers see, and the guards every request passes (body
//! size and time limits, write shedding, panic guard, JSON errors for
//! unknown routes and methods). Connection-level limits are in
//! [`listener`].
//!
//! Handlers validate input, read the clock, and call storage through
//! [`crate::store::blocking`]; they never build SQL and never decide policy.

mod admin;
pub mod error;
pub mod extract;
mod health;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod openapi;
mod session;

use std::any::Any;
use std::sync::{Arc, OnceLock};

use axum::extract::DefaultBodyLimit;
use axum::extract::OriginalUri;
use axum::http::Response;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};
use tower_http::catch_panic::CatchPanicLayer;

use crate::clock::{Clock, Timestamp};
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::proxy::TrustedProxies;
use crate::ratelimit::{FailureLimiter, StartLimiter};
use crate::rules::Timing;
use crate::store::Storage;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    /// Set once the database is open and migrated; until then requests get
    /// 503 rather than a wrong answer.
    store: OnceLock<Arc<dyn Storage>>,
    clock: Arc<dyn Clock>,
    timing: Timing,
    /// SHA-256 of the admin token: compared in constant time with the
    /// digest of what a request presents, so neither length nor content
    /// leaks through timing.
    admin_token_digest: Option<[u8; 32]>,
    key_failures: FailureLimiter,
    admin_failures: FailureLimiter,
    starts_per_key: StartLimiter,
    trusted_proxies: TrustedProxies,
    /// Free slots for requests that need the database writer.
    write_slots: Arc<tokio::sync::Semaphore>,
    /// How long a client may take to send a request body.
    client_timeout: std::time::Duration,
    /// Whether `/metrics` is served on this (the main) listener.
    metrics_here: bool,
}

impl AppState {
    /// State for a server with these settings, not yet ready.
    pub fn new(settings: &Settings, clock: Arc<dyn Clock>) -> Self {
        AppState {
            inner: Arc::new(Shared {
                store: OnceLock::new(),
                clock,
                timing: settings.timing(),
                admin_token_digest: settings
                    .admin_token
                    .as_ref()
                    .map(|t| Sha256::digest(t.expose().as_bytes()).into()),
                key_failures: FailureLimiter::new(
                    settings.rate_limits,
                    settings.failed_key_lookups_per_minute,
                ),
                admin_failures: FailureLimiter::new(
                    settings.rate_limits,
                    settings.admin_auth_failures_per_minute,
                ),
                starts_per_key: StartLimiter::new(
                    settings.rate_limits,
                    settings.starts_per_key_per_minute,
                ),
                trusted_proxies: settings.trusted_proxies.clone(),
                write_slots: Arc::new(tokio::sync::Semaphore::new(settings.max_pending_writes)),
                client_timeout: std::time::Duration::from_secs(settings.client_timeout_seconds),
                metrics_here: settings.metrics == crate::config::MetricsMode::Main,
            }),
        }
    }

    /// Marks the server ready: requests are served from now on.
    pub fn set_ready(&self, store: Arc<dyn Storage>) {
        let _ = self.inner.store.set(store);
    }

    /// The store, or 503 while the server is still starting.
    pub(crate) fn store(&self) -> Result<Arc<dyn Storage>> {
        self.inner
            .store
            .get()
            .cloned()
            .ok_or_else(|| Error::Unavailable("the server is starting; retry shortly".into()))
    }

    pub(crate) fn clock(&self) -> Arc<dyn Clock> {
        self.inner.clock.clone()
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    fn timing(&self) -> Timing {
        self.inner.timing
    }

    /// Whether an admin token is configured (the admin API and the
    /// dashboard exist only then).
    pub(crate) fn admin_enabled(&self) -> bool {
        self.inner.admin_token_digest.is_some()
    }

    /// The per-address limit on wrong admin tokens, shared by the admin API
    /// and the dashboard's sign-in.
    pub(crate) fn admin_failures(&self) -> &FailureLimiter {
        &self.inner.admin_failures
    }

    /// The reverse proxies whose `X-Forwarded-For` is believed.
    pub(crate) fn trusted_proxies(&self) -> &TrustedProxies {
        &self.inner.trusted_proxies
    }
}

/// The whole HTTP application, apart from binding, so tests can drive it
/// in-process.
pub fn app(state: AppState) -> Router {
    let mut router = Router::new();
    if state.inner.metrics_here {
        router = router.route("/metrics", get(metrics::metrics));
    }
    router
        .route("/health", get(health::health))
        .route("/openapi.json", get(openapi::openapi_json))
        .merge(session::router())
        .nest("/api/admin", admin::router(state.clone()))
        .nest("/admin", crate::dashboard::router(state.clone()))
        // `/admin/` (a typed or bookmarked trailing slash) is the dashboard too.
        .route(
            "/admin/",
            get(|| async { axum::response::Redirect::permanent("/admin") }),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::guard,
        ))
        // Inside the metrics layer, so a panic's 500 is counted.
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::from_fn(metrics::observe))
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            date_header,
        ))
        .with_state(state)
}

/// Sets `Date` from the server's clock, the one its answers' times come
/// from. (hyper's own reads the wall clock and stands still for as long as
/// the wall clock was set back.)
async fn date_header(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response<axum::body::Body> {
    let mut response = next.run(request).await;
    if let Some(value) = http_date(state.now()) {
        response
            .headers_mut()
            .insert(axum::http::header::DATE, value);
    }
    response
}

/// The `Date` value for `now`, formatted once a second per worker thread
/// (every answer carries one).
fn http_date(now: Timestamp) -> Option<axum::http::HeaderValue> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(i64, axum::http::HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    let second = now.0.div_euclid(1000);
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((at, value)) = last.as_ref() {
            if *at == second {
                return Some(value.clone());
            }
        }
        let value = axum::http::HeaderValue::from_str(&now.to_http_date()).ok()?;
        *last = Some((second, value.clone()));
        Some(value)
    })
}

async fn not_found(OriginalUri(uri): OriginalUri) -> Error {
    Error::NotFound(shown_path(uri.path()))
}

/// A requested path as a 404 names it: the whole path the client asked for
/// (not a nested router's remainder), a key pasted into it cut to its
/// prefix.
fn shown_path(path: &str) -> String {
    crate::keys::redact_secret(path)
}

/// The 404 of the admin API and the dashboard when no admin token is set:
/// still 404 and nothing else about them, but it says how to turn them on.
pub(crate) fn admin_off(req: &axum::extract::Request) -> Error {
    let path = req
        .extensions()
        .get::<OriginalUri>()
        .map_or_else(|| req.uri().path(), |o| o.0.path());
    Error::NotFound(format!(
        "{} (the admin API and the dashboard are off: no admin_token is set)",
        shown_path(path)
    ))
}

async fn method_not_allowed() -> Error {
    Error::MethodNotAllowed
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response<axum::body::Body> {
    let detail = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into());
    Error::Internal(format!("handler panicked: {detail}")).into_response()
}
