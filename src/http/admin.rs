//! The admin API (contract, "Admin API"): keys, live sessions, the audit
//! log. Every route needs the admin bearer token; with none configured the
//! whole tree answers 404, as if it did not exist.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Deserializer};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiJson, ApiPath, ApiQuery, ClientAddr};
use super::AppState;
use crate::error::{Error, Result};
use crate::input;
use crate::model::{Actor, ConflictPolicy, Key, KeyStatus};
use crate::seats::Via;
use crate::store::{blocking, EndOutcome, EventFilter, KeyPatch, NewKey};
use crate::wire::{AdminSession, CreatedKey, EventPage, KeyPage, KickAnswer, SessionList};

/// Largest page the list endpoints return.
const MAX_PAGE: u32 = 1000;
/// Default page size.
const DEFAULT_PAGE: u32 = 100;

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/keys", post(create_key).get(list_keys))
        .route("/keys/{key_id}", get(get_key).patch(update_key))
        .route("/keys/{key_id}/revoke", post(revoke_key))
        .route("/sessions", get(list_sessions))
        .route("/sessions/{session_id}", delete(kick_session))
        .route("/events", get(list_events))
        .fallback(super::not_found)
        .method_not_allowed_fallback(super::method_not_allowed)
        // `layer`, not `route_layer`: unknown admin paths and methods need
        // the token too, so the admin API's shape is not probeable.
        .layer(middleware::from_fn_with_state(state.clone(), require_admin))
        .layer(middleware::from_fn_with_state(state, admin_enabled))
}

/// With no admin token configured the admin API does not exist (404).
async fn admin_enabled(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response> {
    if !state.admin_enabled() {
        return Err(crate::state::admin_off(&req));
    }
    Ok(next.run(req).await)
}

/// Checks `Authorization: Bearer <token>` by comparing SHA-256 digests in
/// constant time; repeated failures from one address are rate-limited.
async fn require_admin(
    State(state): State<AppState>,
    addr: ClientAddr,
    req: Request,
    next: Next,
) -> Result<Response> {
    if !state.admin_enabled() {
        return Err(crate::state::admin_off(&req));
    }
    let limiter = &state.admin_failures();
    limiter.check(addr.0, state.now())?;
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let ok = presented.is_some_and(|token| state.admin_token_matches(token));
    if !ok {
        limiter.record_failure(addr.0, state.now());
        tracing::warn!(client = %addr.label(), "admin request with a missing or wrong token");
        return Err(Error::Unauthorized);
    }
    Ok(next.run(req).await)
}

/// Distinguishes a field that is absent (outer `None`) from one set to
/// `null` (`Some(None)`), for PATCH.
fn nullable<'de, D, T>(d: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
struct CreateKeyBody {
    /// Free text for the operator; empty means none.
    #[schema(max_length = 200, example = "Acme Corp, order 1042")]
    label: Option<String>,
    /// Seats (default 1).
    #[schema(minimum = 1, maximum = 1000, example = 2)]
    max_sessions: Option<u32>,
    /// Default `takeover`.
    on_conflict: Option<ConflictPolicy>,
    /// The longest a device may borrow a seat for offline use (default 0:
    /// borrowing off).
    #[schema(minimum = 0, maximum = 8760, example = 72)]
    max_borrow_hours: Option<u32>,
    /// RFC 3339; when the key stops working.
    #[schema(format = DateTime, example = "2027-12-31T00:00:00Z")]
    expires_at: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
struct PatchKeyBody {
    /// New label; `null` or empty clears it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 200)]
    label: Option<Option<String>>,
    /// Seats; lowering below the live count ends the excess sessions.
    #[schema(minimum = 1, maximum = 1000)]
    max_sessions: Option<u32>,
    /// Applies to later starts.
    on_conflict: Option<ConflictPolicy>,
    /// Applies to later borrows (0 turns borrowing off; sessions already
    /// borrowed keep their borrow).
    #[schema(minimum = 0, maximum = 8760)]
    max_borrow_hours: Option<u32>,
    /// RFC 3339, or `null` to clear; a past time ends the live sessions.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, format = DateTime)]
    expires_at: Option<Option<String>>,
    /// `suspended` ends the live sessions; `active` resumes the key.
    #[schema(value_type = Option<crate::wire::PatchStatus>)]
    status: Option<String>,
}

fn page_limit(limit: Option<u32>) -> Result<u32> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(Error::InvalidRequest(format!(
            "limit must be between 1 and {MAX_PAGE} (got {n})"
        ))),
    }
}

#[utoipa::path(
    post,
    path = "/api/admin/keys",
    tag = "admin",
    operation_id = "create_key",
    summary = "Create a key",
    security(("admin_token" = [])),
    request_body = Option<CreateKeyBody>,
    responses(
        (status = 201, description = "The key, with its secret `access_key` (shown only this once).", body = crate::wire::CreatedKey),
    )
)]
async fn create_key(
    State(state): State<AppState>,
    addr: ClientAddr,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> Result<(StatusCode, Json<CreatedKey>)> {
    let new = NewKey {
        label: input::label(body.label)?,
        max_sessions: body.max_sessions.map(input::max_sessions).transpose()?,
        max_borrow_hours: body
            .max_borrow_hours
            .map(input::max_borrow_hours)
            .transpose()?,
        on_conflict: body.on_conflict,
        expires_at: body
            .expires_at
            .as_deref()
            .map(|t| input::time("expires_at", t))
            .transpose()?,
    };
    let actor = Actor(addr.label());
    let created = state.seats()?.create_key(new, actor, Via::Api).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            access_key: created.access_key.expose_secret().to_owned(),
            key: created.key,
        }),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct KeyListQuery {
    /// Page size, default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The previous page's `next_after`.
    after: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/admin/keys",
    tag = "admin",
    operation_id = "list_keys",
    summary = "List keys, paged",
    security(("admin_token" = [])),
    params(
        KeyListQuery,
    ),
    responses(
        (status = 200, description = "A page of keys in creation order.", body = crate::wire::KeyPage),
    )
)]
async fn list_keys(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<KeyListQuery>,
) -> Result<Json<KeyPage>> {
    let limit = page_limit(q.limit)?;
    let store = state.store()?;
    let clock = state.clock();
    let after = q.after.filter(|a| !a.is_empty());
    if let Some(a) = &after {
        crate::input::key_id_cursor("after", a)?;
    }
    let page = blocking(move || store.list_keys(limit, after.as_deref(), clock.now())).await?;
    Ok(Json(KeyPage {
        keys: page.keys,
        next_after: page.next_after,
    }))
}

#[utoipa::path(
    get,
    path = "/api/admin/keys/{key_id}",
    tag = "admin",
    operation_id = "get_key",
    summary = "One key",
    security(("admin_token" = [])),
    params(
        ("key_id" = String, Path, description = "The key id, or its display prefix (`ks_` and 8 characters, `ks_` optional).", example = "key_Rqy55lb8QkfTg3hO"),
    ),
    responses(
        (status = 200, description = "The key.", body = Key),
    )
)]
async fn get_key(
    State(state): State<AppState>,
    ApiPath(key_id): ApiPath<String>,
) -> Result<Json<Key>> {
    let key_id = input::key_ref_in_url(key_id)?;
    let store = state.store()?;
    let clock = state.clock();
    Ok(Json(
        blocking(move || store.get_key(&key_id, clock.now())).await?,
    ))
}

#[utoipa::path(
    patch,
    path = "/api/admin/keys/{key_id}",
    tag = "admin",
    operation_id = "update_key",
    summary = "Change a key",
    security(("admin_token" = [])),
    params(
        ("key_id" = String, Path, description = "The key id, or its display prefix (`ks_` and 8 characters, `ks_` optional).", example = "key_Rqy55lb8QkfTg3hO"),
    ),
    request_body = Option<PatchKeyBody>,
    responses(
        (status = 200, description = "The key as it now is (unchanged for an empty body).", body = Key),
    )
)]
async fn update_key(
    State(state): State<AppState>,
    addr: ClientAddr,
    ApiPath(key_id): ApiPath<String>,
    ApiJson(body): ApiJson<PatchKeyBody>,
) -> Result<Json<Key>> {
    let key_id = input::key_ref_in_url(key_id)?;
    let patch = KeyPatch {
        label: body.label.map(input::label).transpose()?,
        max_sessions: body.max_sessions.map(input::max_sessions).transpose()?,
        max_borrow_hours: body
            .max_borrow_hours
            .map(input::max_borrow_hours)
            .transpose()?,
        on_conflict: body.on_conflict,
        expires_at: body
            .expires_at
            .map(|t| {
                t.as_deref()
                    .map(|t| input::time("expires_at", t))
                    .transpose()
            })
            .transpose()?,
        status: match body.status.as_deref() {
            None => None,
            Some("active") => Some(KeyStatus::Active),
            Some("suspended") => Some(KeyStatus::Suspended),
            Some("revoked") => {
                return Err(Error::InvalidRequest(
                    "status: revoke a key with POST /api/admin/keys/{key_id}/revoke".into(),
                ))
            }
            Some(other) => {
                return Err(Error::InvalidRequest(format!(
                    "status must be `active` or `suspended` (got `{}`)",
                    crate::keys::redact_secret(other)
                )))
            }
        },
    };
    let store = state.store()?;
    let clock = state.clock();
    if patch.is_empty() {
        // Nothing to change: answer with the key, record nothing.
        return Ok(Json(
            blocking(move || store.get_key(&key_id, clock.now())).await?,
        ));
    }
    let actor = Actor(addr.label());
    let change = state
        .seats()?
        .update_key(key_id, patch, actor, Via::Api)
        .await?;
    Ok(Json(change.key))
}

#[utoipa::path(
    post,
    path = "/api/admin/keys/{key_id}/revoke",
    tag = "admin",
    operation_id = "revoke_key",
    summary = "Revoke a key for good",
    security(("admin_token" = [])),
    params(
        ("key_id" = String, Path, description = "The key id, or its display prefix (`ks_` and 8 characters, `ks_` optional).", example = "key_Rqy55lb8QkfTg3hO"),
    ),
    responses(
        (status = 200, description = "The revoked key; its live sessions ended with reason `revoked`.", body = Key),
    )
)]
async fn revoke_key(
    State(state): State<AppState>,
    addr: ClientAddr,
    ApiPath(key_id): ApiPath<String>,
) -> Result<Json<Key>> {
    let key_id = input::key_ref_in_url(key_id)?;
    let actor = Actor(addr.label());
    let change = state.seats()?.revoke_key(key_id, actor, Via::Api).await?;
    Ok(Json(change.key))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SessionListQuery {
    /// Only this key's sessions (key id or display prefix).
    key_id: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/admin/sessions",
    tag = "admin",
    operation_id = "list_sessions",
    summary = "Live sessions",
    security(("admin_token" = [])),
    params(
        SessionListQuery,
    ),
    responses(
        (status = 200, description = "Live sessions, most recent heartbeat first.", body = crate::wire::SessionList),
    )
)]
async fn list_sessions(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<SessionListQuery>,
) -> Result<Json<SessionList>> {
    let store = state.store()?;
    let now = state.now();
    let key = q
        .key_id
        .filter(|k| !k.is_empty())
        .map(input::key_ref_in_url)
        .transpose()?;
    let sessions = blocking(move || store.live_sessions(key.as_deref(), now)).await?;
    Ok(Json(SessionList {
        sessions: sessions.iter().map(|s| AdminSession::new(s, now)).collect(),
    }))
}

#[utoipa::path(
    delete,
    path = "/api/admin/sessions/{session_id}",
    tag = "admin",
    operation_id = "kick_session",
    summary = "End a session (reason `revoked`)",
    security(("admin_token" = [])),
    params(
        ("session_id" = String, Path, description = "The session's id.", example = "3f1c9a7e-office-pc"),
    ),
    responses(
        (status = 200, description = "`ended` is true when it was live; false, with the `reason`, when it had already ended.", body = crate::wire::KickAnswer),
    )
)]
async fn kick_session(
    State(state): State<AppState>,
    addr: ClientAddr,
    ApiPath(session_id): ApiPath<String>,
) -> Result<Json<KickAnswer>> {
    let actor = Actor(addr.label());
    let outcome = state.seats()?.kick(session_id.clone(), actor).await?;
    Ok(Json(match outcome {
        EndOutcome::Ended(_) => KickAnswer {
            session_id,
            ended: true,
            reason: None,
        },
        EndOutcome::AlreadyEnded(reason) => KickAnswer {
            session_id,
            ended: false,
            reason: Some(reason),
        },
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct EventQuery {
    /// Only this key's events (key id or display prefix).
    key_id: Option<String>,
    /// Only events of this type.
    #[serde(rename = "type")]
    #[param(value_type = Option<crate::model::EventType>)]
    event_type: Option<String>,
    /// RFC 3339: only events at or after it.
    #[param(format = DateTime)]
    since: Option<String>,
    /// An event id: only older events (the previous page's `next_before`).
    before: Option<i64>,
    /// Page size, default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/api/admin/events",
    tag = "admin",
    operation_id = "list_events",
    summary = "The audit log, newest first",
    security(("admin_token" = [])),
    params(
        EventQuery,
    ),
    responses(
        (status = 200, description = "A page of events, newest first.", body = crate::wire::EventPage),
    )
)]
async fn list_events(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> Result<Json<EventPage>> {
    let key_id = match q
        .key_id
        .filter(|k| !k.is_empty())
        .map(input::key_ref_in_url)
        .transpose()?
    {
        // Accept a key id or a display prefix, as the other admin routes do.
        Some(r) => {
            let store = state.store()?;
            let now = state.now();
            Some(blocking(move || store.get_key(&r, now)).await?.key_id)
        }
        None => None,
    };
    let filter = EventFilter {
        key_id,
        event_type: q
            .event_type
            .filter(|t| !t.is_empty())
            .map(|t| input::event_type(&t))
            .transpose()?,
        since: q
            .since
            .filter(|t| !t.is_empty())
            .map(|t| input::time("since", &t))
            .transpose()?,
        before_id: q.before,
        limit: page_limit(q.limit)?,
    };
    let limit = filter.limit;
    let store = state.store()?;
    let events = blocking(move || store.events(&filter)).await?;
    // A full page may have more behind it: pass `next_before` as `before`.
    let next_before = (events.len() == limit as usize)
        .then(|| events.last().map(|e| e.id))
        .flatten();
    Ok(Json(EventPage {
        events,
        next_before,
    }))
}
