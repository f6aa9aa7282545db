//! The session API that apps on devices call: start, heartbeat, end,
//! status (contract, "Session API").

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};

use super::extract::{ApiJson, ClientAddr};
use super::AppState;
use crate::error::{Error, Result};
use crate::input;
use crate::keys::{key_tag, AccessKey};
use crate::lease_token::{self, LeaseClaims};
use crate::model::Actor;
use crate::rules::Timing;
use crate::store::{blocking, EndOutcome, StartOutcome, StartRequest};
use crate::wire::{
    BorrowAnswer, BorrowBody, DeviceBody, EndAnswer, SessionBody, StartAnswer, StartBody,
    StatusAnswer, StatusBody, StatusSession, TerminatedSession,
};

/// Longest access key string looked at; anything longer is a malformed
/// request, not a guess.
const MAX_KEY_CHARS: usize = 256;
/// Device name limit (characters).
const MAX_DEVICE_NAME: usize = 128;
/// Fingerprint limit (characters).
const MAX_FINGERPRINT: usize = 256;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/session/start", post(start))
        .route("/api/session/borrow", post(borrow))
        .route("/api/session/heartbeat", post(super::heartbeat::heartbeat))
        .route("/api/session/end", post(end))
        .route("/api/session/status", post(status))
}

/// Checks the key of every session endpoint and counts failed guesses per
/// address (it guards nothing by holding; it is asked twice per request,
/// before and after the lookup), in this order:
///
/// 1. the key's shape and checksum, before any lookup: a malformed key is a
///    failure (401 `invalid_key`, or 429 once the address is over its limit);
/// 2. the failure limit, which an address over it passes only with a key it
///    has already proven (see [`crate::ratelimit`]): a live device behind the
///    same NAT as a guesser keeps its seat, while the guesser gets the same
///    429, with no lookup, for keys that exist and keys that do not;
/// 3. the lookup itself: `invalid_key` counts as a failure, any answer that
///    shows the key exists (success, `key_revoked`, `seats_full`, a session
///    that is over, ...) proves the key for this address.
pub(super) struct KeyChecker {
    state: AppState,
    addr: ClientAddr,
    /// The key's tag, once parsed.
    tag: Option<u64>,
}

impl KeyChecker {
    fn new(state: &AppState, addr: ClientAddr) -> Self {
        KeyChecker {
            state: state.clone(),
            addr,
            tag: None,
        }
    }

    fn limiter(&self) -> &crate::ratelimit::FailureLimiter {
        self.state.key_failures()
    }

    /// Parses the key and applies the failure limit to it.
    fn parse(&mut self, text: &str) -> Result<AccessKey> {
        if text.chars().count() > MAX_KEY_CHARS {
            return Err(Error::InvalidRequest(format!(
                "access_key must be at most {MAX_KEY_CHARS} characters"
            )));
        }
        let now = self.state.now();
        let Ok(key) = AccessKey::parse(text.trim()) else {
            // A malformed key cannot be anyone's; an address over the limit
            // is answered as for any key it has not proven.
            self.limiter().check(self.addr.0, now)?;
            return Err(self.failed(Error::InvalidKey));
        };
        let tag = key_tag(&key.hash());
        self.limiter().check_key(self.addr.0, tag, now)?;
        self.tag = Some(tag);
        Ok(key)
    }

    /// Passes a lookup's result through: `invalid_key` counts against the
    /// address, an answer that shows the key exists proves it.
    pub(super) fn check<T>(&self, result: Result<T>) -> Result<T> {
        let found = match &result {
            Ok(_) => true,
            Err(Error::InvalidKey) => false,
            Err(e) => key_was_found(e),
        };
        if found {
            if let Some(tag) = self.tag {
                self.limiter()
                    .key_proven(self.addr.0, tag, self.state.now());
            }
        }
        result.map_err(|e| match e {
            Error::InvalidKey => self.failed(e),
            other => other,
        })
    }

    fn failed(&self, e: Error) -> Error {
        self.limiter().record_failure(self.addr.0, self.state.now());
        e
    }
}

/// A heartbeat's or an end's body, checked in the order the limits need:
/// the key through a [`KeyChecker`], then the session id's grammar.
pub(super) fn checked_session_body(
    state: &AppState,
    addr: ClientAddr,
    access_key: &str,
    session_id: &str,
) -> Result<(KeyChecker, AccessKey)> {
    let mut checker = KeyChecker::new(state, addr);
    let key = checker.parse(access_key)?;
    input::session_id(session_id)?;
    Ok((checker, key))
}

/// Whether a storage error could only be answered after finding the key.
/// A revoked, suspended or expired key counts: it is a real key, its holder
/// is not guessing, and its answer (403) tells nothing the holder does not
/// know. Errors of the server itself (busy, unavailable) prove nothing.
fn key_was_found(e: &Error) -> bool {
    matches!(
        e,
        Error::KeyRevoked
            | Error::KeySuspended
            | Error::KeyExpired
            | Error::SessionIdTaken(_)
            | Error::SeatsFull { .. }
            | Error::BorrowNotAllowed
            | Error::SessionSuperseded { .. }
            | Error::SessionOver(_)
            | Error::SessionNotFound
    )
}

#[utoipa::path(
    post,
    path = "/api/session/start",
    tag = "session",
    operation_id = "start_session",
    summary = "Take a seat",
    request_body = StartBody,
    responses(
        (status = 200, description = "The session started (or, for a retry of a live start, resumed).", body = StartAnswer),
    )
)]
async fn start(
    State(state): State<AppState>,
    addr: ClientAddr,
    ApiJson(body): ApiJson<StartBody>,
) -> Result<Json<StartAnswer>> {
    let seat = SeatAsked {
        access_key: &body.access_key,
        session_id: body.session_id,
        device: body.device,
        borrow_hours: None,
    };
    let (checker, req) = seat.checked(&state, addr)?;
    let timing = state.timing();
    let outcome = checker.check(state.seats()?.start(req, timing).await)?;
    Ok(Json(start_answer(&outcome, timing)))
}

/// What a start and a borrow both ask for: a seat for this key, session
/// id and device.
struct SeatAsked<'a> {
    access_key: &'a str,
    session_id: Option<String>,
    device: Option<DeviceBody>,
    borrow_hours: Option<u32>,
}

impl SeatAsked<'_> {
    /// The request, checked in the order the limits need: the key, the
    /// session id, the per-key start limit, then the other fields.
    fn checked(self, state: &AppState, addr: ClientAddr) -> Result<(KeyChecker, StartRequest)> {
        let mut checker = KeyChecker::new(state, addr);
        let key = checker.parse(self.access_key)?;
        if let Some(id) = &self.session_id {
            input::session_id(id)?;
        }
        let borrow_hours = self.borrow_hours.map(input::borrow_hours).transpose()?;
        state
            .starts_per_key()
            .take(key_tag(&key.hash()), state.now())?;
        let device = self.device.unwrap_or_default();
        let req = StartRequest {
            key,
            session_id: self.session_id,
            device_name: input::optional_text(device.name, "device.name", MAX_DEVICE_NAME)?,
            fingerprint: input::optional_text(
                device.fingerprint,
                "device.fingerprint",
                MAX_FINGERPRINT,
            )?,
            actor: Actor(addr.label()),
            borrow_hours,
        };
        Ok((checker, req))
    }
}

fn start_answer(outcome: &StartOutcome, timing: Timing) -> StartAnswer {
    let s = &outcome.session;
    StartAnswer {
        session_id: s.session_id.clone(),
        fence: s.fence,
        started_at: s.started_at,
        expires_at: s.expires_at,
        heartbeat_interval_seconds: timing.heartbeat_interval_secs,
        session_timeout_seconds: timing.session_timeout_secs,
        previous_session_terminated: !outcome.terminated.is_empty(),
        terminated_sessions: outcome
            .terminated
            .iter()
            .map(TerminatedSession::from)
            .collect(),
        resumed: outcome.resumed,
    }
}

#[utoipa::path(
    post,
    path = "/api/session/borrow",
    tag = "session",
    operation_id = "borrow_session",
    summary = "Take a seat offline (v1.1)",
    request_body = BorrowBody,
    responses(
        (status = 200, description = "The seat is held without heartbeats until `borrowed_until` (or an early `/api/session/end`), and is never superseded. With the id of a live session of the key, that session is borrowed.", body = BorrowAnswer),
    )
)]
async fn borrow(
    State(state): State<AppState>,
    addr: ClientAddr,
    ApiJson(body): ApiJson<BorrowBody>,
) -> Result<Json<BorrowAnswer>> {
    let seat = SeatAsked {
        access_key: &body.access_key,
        session_id: body.session_id,
        device: body.device,
        borrow_hours: Some(body.hours),
    };
    let (checker, req) = seat.checked(&state, addr)?;
    // The token names the device this borrow came from, when it said.
    let fingerprint = req.fingerprint.clone();
    // The token is signed by the current key: refuse before taking a seat
    // the answer could not prove.
    let keys = state.signer().keys().ok_or_else(super::signing::starting)?;
    let timing = state.timing();
    let outcome = checker.check(state.seats()?.start(req, timing).await)?;
    let s = &outcome.session;
    let until = s.borrowed_until.ok_or_else(|| {
        Error::Internal("a borrow answered a session that is not borrowed".into())
    })?;
    let claims = LeaseClaims {
        iss: lease_token::ISSUER.into(),
        sub: s.session_id.clone(),
        key_prefix: s.key_prefix.clone(),
        fence: s.fence,
        device_fingerprint: fingerprint,
        iat: state.now().0.div_euclid(1000),
        exp: until.0.div_euclid(1000),
    };
    Ok(Json(BorrowAnswer {
        session: start_answer(&outcome, timing),
        borrowed_until: until,
        lease_token: lease_token::issue(&keys, &claims),
    }))
}

#[utoipa::path(
    post,
    path = "/api/session/end",
    tag = "session",
    operation_id = "end_session",
    summary = "Give the seat back",
    request_body = SessionBody,
    responses(
        (status = 200, description = "`ended` is true when the session was live and is now ended; false, with the `reason`, when it had already ended.", body = EndAnswer),
    )
)]
async fn end(
    State(state): State<AppState>,
    addr: ClientAddr,
    ApiJson(body): ApiJson<SessionBody>,
) -> Result<Json<EndAnswer>> {
    let (checker, key) = checked_session_body(&state, addr, &body.access_key, &body.session_id)?;
    let actor = Actor(addr.label());
    let outcome = checker.check(state.seats()?.end(key, body.session_id, actor).await)?;
    Ok(Json(match outcome {
        EndOutcome::Ended(_) => EndAnswer {
            ended: true,
            reason: None,
        },
        EndOutcome::AlreadyEnded(reason) => EndAnswer {
            ended: false,
            reason: Some(reason),
        },
    }))
}

#[utoipa::path(
    post,
    path = "/api/session/status",
    tag = "session",
    operation_id = "session_status",
    summary = "The key's live sessions",
    request_body = StatusBody,
    responses(
        (status = 200, description = "The key's seat limit, policy and live sessions.", body = StatusAnswer),
    )
)]
async fn status(
    State(state): State<AppState>,
    addr: ClientAddr,
    ApiJson(body): ApiJson<StatusBody>,
) -> Result<Json<StatusAnswer>> {
    let mut checker = KeyChecker::new(&state, addr);
    let key = checker.parse(&body.access_key)?;
    let store = state.store()?;
    let clock = state.clock();
    let (k, live) = checker.check(blocking(move || store.key_status(&key, clock.now())).await)?;
    let now = state.now();
    Ok(Json(StatusAnswer {
        active: !live.is_empty(),
        max_sessions: k.max_sessions,
        on_conflict: k.on_conflict,
        sessions: live.iter().map(|s| StatusSession::new(s, now)).collect(),
    }))
}
