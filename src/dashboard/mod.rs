//! The operators' web console at `/admin`: server-rendered HTML (maud), no
//! front-end build, every action a plain form POST so it works without
//! JavaScript; a small script adds live refresh and a copy button.
//!
//! Pages: overview, keys (search, create, edit, suspend, resume, revoke),
//! live sessions (kick), events (filtered audit log) and the sharing report.
//! The security model (cookie session, CSRF, headers) is in [`auth`] and
//! `docs/dashboard.md`. With no admin token configured the whole tree
//! answers 404, like the admin API.
//!
//! Handlers call the same [`Storage`](crate::store::Storage) methods as the
//! admin API, through [`crate::store::blocking`], and show every failure as
//! a readable page ([`page::Failure`]).

pub mod auth;
mod detail;
mod events;
mod key_form;
mod keys;
mod overview;
pub mod page;
mod search;
mod sessions;
mod sharing;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{from_fn, from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};

use crate::state::AppState;

const STYLE: &str = include_str!("style.css");
const SCRIPT: &str = include_str!("app.js");

/// The dashboard's routes, to be nested at `/admin`.
pub fn router(state: AppState) -> Router<AppState> {
    let sessions = Arc::new(auth::Sessions::default());
    let signed_in = Router::new()
        .route("/", get(overview::page))
        .route("/keys", get(keys::list).post(keys::create))
        .route("/keys/new", get(keys::new_form))
        .route("/keys/search", post(search::search))
        .route("/keys/{key_id}", get(keys::show).post(keys::update))
        .route("/keys/{key_id}/suspend", post(keys::suspend))
        .route("/keys/{key_id}/resume", post(keys::resume))
        .route(
            "/keys/{key_id}/revoke",
            get(keys::revoke_confirm).post(keys::revoke),
        )
        .route("/sessions", get(sessions::list))
        .route("/sessions/{session_id}/kick", post(sessions::kick))
        .route("/events", get(events::list))
        .route("/sharing", get(sharing::page))
        .route("/sign-out", post(auth::sign_out))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Unknown paths need a session too: the console's shape is not
        // probeable from outside.
        .layer(from_fn_with_state(state.clone(), auth::require_session));
    Router::new()
        .route("/sign-in", get(auth::sign_in_page).post(auth::sign_in))
        .route("/assets/style.css", get(style))
        .route("/assets/app.js", get(script))
        .merge(signed_in)
        .layer(from_fn(security_headers))
        .layer(Extension(sessions))
        .layer(from_fn_with_state(state, enabled))
}

/// With no admin token configured the dashboard does not exist (404).
async fn enabled(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !state.admin_enabled() {
        return crate::state::admin_off(&req).into_response();
    }
    next.run(req).await
}

/// Headers on every dashboard answer: nothing cached (pages show live data
/// and, once, a secret), no framing, scripts and styles only from here.
async fn security_headers(req: Request, next: Next) -> Response {
    let is_asset = req.uri().path().contains("/assets/");
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, name: &'static str, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    if is_asset {
        set(h, "cache-control", "public, max-age=3600");
    } else {
        set(h, "cache-control", "no-store");
    }
    set(
        h,
        "content-security-policy",
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, "x-frame-options", "DENY");
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "no-referrer");
    resp
}

async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE)
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
}

async fn not_found() -> Response {
    page::error_page(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no dashboard page at this address.",
    )
}

async fn method_not_allowed() -> Response {
    page::error_page(
        StatusCode::METHOD_NOT_ALLOWED,
        "Not allowed",
        "This page does not accept that kind of request; use the forms on the pages.",
    )
}
