//! `POST /api/session/heartbeat`: renews a lease, and with `wait_seconds`
//! holds the answer until the wait is over or the session ends
//! (docs/api.md, "Waiting heartbeat"), so a device learns of a takeover
//! at once with one request per interval.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::FutureExt;

use super::extract::{ApiJson, ClientAddr};
use super::session::{checked_session_body, KeyChecker};
use super::{deferred, AppState};
use crate::error::Result;
use crate::held::Waited;
use crate::http::error::status_and_code;
use crate::input;
use crate::keys::AccessKey;
use crate::metrics;
use crate::store::blocking;
use crate::wire::{HeartbeatAnswer, HeartbeatBody};

#[utoipa::path(
    post,
    path = "/api/session/heartbeat",
    tag = "session",
    operation_id = "heartbeat",
    summary = "Keep a session alive",
    request_body = HeartbeatBody,
    responses(
        (status = 200, description = "The lease is renewed (with `wait_seconds`: answered when the wait is over; an end of the session during it is answered at once with its error instead).", body = HeartbeatAnswer),
    )
)]
pub(super) async fn heartbeat(
    State(state): State<AppState>,
    addr: ClientAddr,
    ApiJson(body): ApiJson<HeartbeatBody>,
) -> Result<Response> {
    let (checker, key) = checked_session_body(&state, addr, &body.access_key, &body.session_id)?;
    let wait = input::wait_seconds(body.wait_seconds, state.timing().heartbeat_interval_secs)?;
    let id = body.session_id;
    if wait == 0 {
        let answer = beat(&state, &checker, &key, &id).await?;
        return Ok(Json(answer).into_response());
    }
    // Held outside the middleware stack: only this future lives while the
    // answer waits (`deferred`).
    let held = held(state, checker, key, id, Duration::from_secs(wait));
    Ok(deferred::respond(held.map(|answer| {
        answer.map_or_else(IntoResponse::into_response, |a| Json(a).into_response())
    })))
}

/// A held heartbeat: renews the lease, then answers when `wait` is over,
/// the session ends (its end's answer), or the server stops.
async fn held(
    state: AppState,
    checker: KeyChecker,
    key: AccessKey,
    id: String,
    wait: Duration,
) -> Result<HeartbeatAnswer> {
    // Watch before the heartbeat: an end committed after its lookup wakes
    // the wait; one committed before is its answer.
    let watch = state.held().clone().watch(&id);
    let mut notified = watch.armed();
    // Boxed, here and below: the lookup's future is only alive while it
    // runs, not for the whole wait.
    let answer = Box::pin(beat(&state, &checker, &key, &id)).await?;
    let until = Instant::now() + wait;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match watch.wait(notified.as_mut(), left).await {
            Waited::Elapsed => return Ok(answer),
            Waited::Stopping => {
                metrics::global().held_answered_early("stopping");
                return Ok(answer);
            }
            Waited::Woken => {
                // Look again, watching first as before: the end's answer,
                // or (a wake that was not this session's end) wait on.
                notified = watch.armed();
                match Box::pin(beat(&state, &checker, &key, &id)).await {
                    Ok(_) => {}
                    // The database stumbling is not the session's end: the
                    // arrival's answer stands, and the wait goes on.
                    Err(e) if status_and_code(&e).0.is_server_error() => {
                        tracing::debug!(error = %e, "a held heartbeat could not look again");
                    }
                    Err(end) => {
                        metrics::global().held_answered_early(status_and_code(&end).1);
                        return Err(end);
                    }
                }
            }
        }
    }
}

/// One heartbeat: on SQLite almost always answered from memory, right here,
/// with no database call; on PostgreSQL one statement, awaited here; the
/// rest (key not cached yet, session not live) go to the blocking pool.
async fn beat(
    state: &AppState,
    checker: &KeyChecker,
    key: &AccessKey,
    session_id: &str,
) -> Result<HeartbeatAnswer> {
    let store = state.store()?;
    let (clock, timing) = (state.clock(), state.timing());
    let (fence, at, expires_at) = if let Some(beat) = store.heartbeat_fast(key, session_id) {
        let beat = checker.check(beat)?;
        (beat.fence, beat.at, beat.expires_at)
    } else {
        let beat = match store.heartbeat_async(key, session_id, clock.now(), timing) {
            Some(beat) => beat.await,
            None => {
                let (key, id) = (key.clone(), session_id.to_owned());
                blocking(move || store.heartbeat(&key, &id, clock.now(), timing)).await
            }
        };
        let s = checker.check(beat)?;
        (s.fence, s.last_heartbeat, s.expires_at)
    };
    Ok(HeartbeatAnswer {
        session_id: session_id.to_owned(),
        fence,
        last_heartbeat: at,
        expires_at,
        heartbeat_interval_seconds: timing.heartbeat_interval_secs,
    })
}
