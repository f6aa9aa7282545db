//! The HTTP layer: routes of the wire contract (docs/api.md) and the
//! guards every request passes (body
//! size and time limits, write shedding, panic guard, JSON errors for
//! unknown routes and methods). Connection-level limits are in
//! [`listener`].
//!
//! Handlers validate input, read the clock, and call storage through
//! [`crate::store::blocking`]; they never build SQL and never decide policy.

mod admin;
mod deferred;
pub mod error;
pub mod extract;
mod health;
mod heartbeat;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod openapi;
mod session;
pub(crate) mod signing;

use std::any::Any;

use axum::extract::DefaultBodyLimit;
use axum::extract::OriginalUri;
use axum::http::Response;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;

use crate::clock::Timestamp;
use crate::error::Error;
pub use crate::state::AppState;

/// The whole HTTP application, apart from binding, so tests can drive it
/// in-process.
pub fn app(state: AppState) -> Router {
    let mut router = Router::new();
    if state.metrics_here() {
        router = router.route("/metrics", get(metrics::metrics));
    }
    router
        .route("/health", get(health::health))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/api/signing-keys", get(signing::signing_keys))
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
        // Outermost: a held answer is awaited here, after every layer
        // above has registered its work on it (`deferred`).
        .layer(axum::middleware::from_fn(deferred::finish))
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
    let response = next.run(request).await;
    deferred::then(response, move |mut response| async move {
        if let Some(value) = http_date(state.now()) {
            response
                .headers_mut()
                .insert(axum::http::header::DATE, value);
        }
        response
    })
    .await
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
    Error::NotFound(crate::state::shown_path(uri.path()))
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
