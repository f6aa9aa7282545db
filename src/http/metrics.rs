//! `/metrics` for Prometheus, and the middleware that times every request.
//!
//! The route label is the matched route pattern (`/api/admin/keys/{id}`),
//! or `unmatched` for 404s, so a scanner requesting random paths cannot
//! create unbounded label sets.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::error::ErrorCode;
use super::AppState;
use crate::error::Result;
use crate::metrics;
use crate::store::blocking;

/// Records method, route, status and latency of every request.
pub async fn observe(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = metrics::method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| metrics::route_label(p.as_str()));
    let response = next.run(req).await;
    super::deferred::then(response, move |response| async move {
        record(method, route, started, &response);
        response
    })
    .await
}

fn record(
    method: &'static str,
    route: Option<&'static str>,
    started: Instant,
    response: &Response,
) {
    let code = response.extensions().get::<ErrorCode>().map(|c| c.0);
    match route {
        Some("/api/session/start") => {
            if let Some(code) = code {
                metrics::global().start_rejected(code);
            }
        }
        Some("/api/session/heartbeat") => metrics::global().heartbeat(code.unwrap_or("ok")),
        _ => {}
    }
    metrics::global().http_request(
        method,
        route.unwrap_or("unmatched"),
        response.status().as_u16(),
        started.elapsed(),
    );
}

/// GET /metrics: the Prometheus text exposition, with the state gauges read
/// fresh from the store.
pub async fn metrics(State(state): State<AppState>) -> Result<Response> {
    let store = state.store()?;
    let now = state.now();
    let reading = blocking(move || store.metrics_reading(now)).await?;
    metrics::global().set_heartbeats_held(state.held().held_now());
    let text = metrics::global().render(&reading);
    Ok(([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response())
}

/// A router with `/metrics` alone, for `metrics = "ADDR"` (its own
/// listener, e.g. on a private interface).
pub fn router_alone(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(super::not_found)
        .with_state(state)
}
