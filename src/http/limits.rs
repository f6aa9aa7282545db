//! Request-level defences, applied to every route before its handler:
//!
//! - the body must arrive within `client_timeout_seconds` (408
//!   `request_timeout`), so a slow client cannot hold a handler (the header
//!   deadline is the connection's, see [`super::listener`]);
//! - requests that need the database writer (starts, ends, admin and
//!   dashboard changes), once their body is in, take a slot of
//!   `max_pending_writes` for the rest of their handling; with none free
//!   they are shed at once with 503 `overloaded` and `Retry-After`, rather
//!   than queueing until the client gives up. Heartbeats and reads never
//!   wait for the writer, so they keep being answered while writes are shed;
//! - a session request with a `nonce` has its answer, whatever it is,
//!   sealed here ([`super::signing`]).

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::extract::MAX_BODY_BYTES;
use super::signing::Seal;
use super::AppState;
use crate::error::Error;

/// Whether a request goes through the database writer: the one list of
/// write routes. The guard below sheds them when the writer is saturated,
/// and the OpenAPI document lists 503 `overloaded` for the same routes
/// (it passes path templates such as `/api/admin/keys/{key_id}`).
pub(crate) fn needs_writer(method: &Method, path: &str) -> bool {
    if *method == Method::GET || *method == Method::HEAD {
        return false;
    }
    matches!(
        path,
        "/api/session/start" | "/api/session/borrow" | "/api/session/end"
    ) || path.starts_with("/api/admin/")
        || path.starts_with("/admin/")
}

/// Reads the whole body (bounded in size and time), then runs the route.
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let timeout = state.client_timeout();
    // The body first: a client sending it slowly must not hold a writer
    // slot meanwhile (a thousand slow senders would otherwise shut every
    // device out of starting for the whole timeout).
    let bytes = match read_body(body, timeout).await {
        Ok(bytes) => bytes,
        Err(e) => return e.into_response(),
    };
    let seal = if parts.uri.path().starts_with("/api/session/") {
        match Seal::asked(&bytes) {
            Ok(seal) => seal,
            Err(e) => return e.into_response(),
        }
    } else {
        None
    };
    let response = run(&state, parts, bytes, next).await;
    match seal {
        Some(seal) => {
            super::deferred::then(response, move |response| async move {
                seal.apply(response, &state).await
            })
            .await
        }
        None => response,
    }
}

/// The route, with a writer slot if it needs one.
async fn run(
    state: &AppState,
    parts: axum::http::request::Parts,
    bytes: Bytes,
    next: Next,
) -> Response {
    let _slot = if needs_writer(&parts.method, parts.uri.path()) {
        match state.write_slots().clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                crate::metrics::global().shed("writes");
                return Error::Overloaded(
                    "too many changes are waiting for the database; retry shortly".into(),
                )
                .into_response();
            }
        }
    } else {
        None
    };
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    // A held answer keeps its writer slot until it is finished.
    super::deferred::then(response, move |response| async move {
        drop(_slot);
        response
    })
    .await
}

async fn read_body(body: Body, timeout: Duration) -> Result<Bytes, Error> {
    let limited = Limited::new(body, MAX_BODY_BYTES);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => Err(Error::RequestTimeout(timeout.as_secs())),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(Error::PayloadTooLarge(MAX_BODY_BYTES))
        }
        Ok(Err(e)) => Err(Error::InvalidRequest(format!(
            "could not read the request body: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_writes_take_a_writer_slot() {
        assert!(needs_writer(&Method::POST, "/api/session/start"));
        assert!(needs_writer(&Method::POST, "/api/session/end"));
        assert!(needs_writer(&Method::POST, "/api/session/borrow"));
        assert!(needs_writer(&Method::DELETE, "/api/admin/sessions/x"));
        assert!(needs_writer(&Method::POST, "/admin/keys"));
        assert!(!needs_writer(&Method::POST, "/api/session/heartbeat"));
        assert!(!needs_writer(&Method::POST, "/api/session/status"));
        assert!(!needs_writer(&Method::GET, "/api/admin/keys"));
    }
}
