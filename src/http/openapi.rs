//! The OpenAPI 3.1 document of the HTTP API, generated from the code: the
//! handlers' `#[utoipa::path]` attributes, the request and model types'
//! `ToSchema` derives, and, for every error a route can answer, the status
//! and code from the one mapping in [`super::error::status_and_code`].
//!
//! Served at `GET /openapi.json`, printed by `keyseat openapi`, and checked
//! in as `docs/openapi.json` (a test fails when the two differ; regenerate
//! with `cargo run -- openapi > docs/openapi.json`).
//!
//! The session handlers build their answers with `json!`, so their answer
//! shapes are described here by mirror types (`StartAnswer`…); the
//! `openapi` integration test and the schemathesis run in CI hold the
//! mirrors to what the server really sends.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder, Schema};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use super::error::status_and_code;
use crate::clock::Timestamp;
use crate::error::Error;
use crate::model::{ConflictPolicy, EndReason, Event, Key};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "keyseat",
        description = "Self-hosted license seat server: one device at a time (or N) per access key. \
            The session API is called by apps on devices (the access key in the body is the credential); \
            the admin API needs the admin bearer token. Reference: docs/api.md. \
            Not described here: the operators' HTML dashboard under /admin (browser pages and forms, not an API).",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    paths(
        super::health::health,
        openapi_json,
        metrics,
        super::session::start,
        super::session::heartbeat,
        super::session::end,
        super::session::status,
        super::admin::create_key,
        super::admin::list_keys,
        super::admin::get_key,
        super::admin::update_key,
        super::admin::revoke_key,
        super::admin::list_sessions,
        super::admin::kick_session,
        super::admin::list_events,
    ),
    components(schemas(Timestamp)),
    modifiers(&AdminToken, &ErrorBodies),
    tags(
        (name = "session", description = "What the app on a device calls; authenticated by the access key in the body."),
        (name = "admin", description = "Keys, live sessions and the audit log; `Authorization: Bearer <admin token>`. \
            With no admin token configured every admin route answers 404 `not_found`."),
        (name = "operations", description = "Health, metrics and this document."),
    )
)]
struct ApiDoc;

/// The document as JSON, with touches the generator cannot express: every
/// documented response header is always sent (`required`), an optional
/// request body (`request_body = Option<T>`) is absent or a `T`, never JSON
/// `null`, and the [`links`] between operations.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serializes");
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for op in paths.values_mut().filter_map(Value::as_object_mut) {
            for op in op.values_mut() {
                if let Some(content) = op
                    .pointer_mut("/requestBody/content")
                    .and_then(Value::as_object_mut)
                {
                    for media in content.values_mut() {
                        let not_null = media
                            .pointer("/schema/oneOf")
                            .and_then(Value::as_array)
                            .filter(|alts| alts.len() == 2 && alts[0] == json!({"type": "null"}))
                            .map(|alts| alts[1].clone());
                        if let Some(schema) = not_null {
                            media["schema"] = schema;
                        }
                    }
                }
                let operation_id = op["operationId"].as_str().unwrap_or_default().to_owned();
                let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                    continue;
                };
                for (status, links) in links(&operation_id) {
                    if let Some(response) = responses.get_mut(status) {
                        response["links"] = links;
                    }
                }
                for response in responses.values_mut() {
                    if let Some(headers) =
                        response.get_mut("headers").and_then(Value::as_object_mut)
                    {
                        for h in headers.values_mut() {
                            h["required"] = json!(true);
                        }
                    }
                }
            }
        }
    }
    doc
}

/// How one operation's answer feeds the next (OpenAPI links): a created
/// key's secret starts sessions, a started session is heartbeated, ended
/// and kicked. Clients and API testers (schemathesis' stateful phase)
/// follow them.
fn links(operation_id: &str) -> Vec<(&'static str, Value)> {
    let key_id = json!({"key_id": "$response.body#/key_id"});
    let with_key = |op: &str| json!({"operationId": op, "parameters": key_id});
    let session = json!({
        "access_key": "$request.body#/access_key",
        "session_id": "$response.body#/session_id",
    });
    match operation_id {
        "create_key" => vec![(
            "201",
            json!({
                "StartSession": {
                    "operationId": "start_session",
                    "description": "Start a session with the new key.",
                    "requestBody": {"access_key": "$response.body#/access_key", "device": {"name": "linked"}},
                },
                "SessionStatus": {
                    "operationId": "session_status",
                    "requestBody": {"access_key": "$response.body#/access_key"},
                },
                "GetKey": with_key("get_key"),
                "UpdateKey": with_key("update_key"),
                "RevokeKey": with_key("revoke_key"),
                "ListSessions": with_key("list_sessions"),
                "ListEvents": with_key("list_events"),
            }),
        )],
        "start_session" => vec![(
            "200",
            json!({
                "Heartbeat": {"operationId": "heartbeat", "requestBody": session},
                "EndSession": {"operationId": "end_session", "requestBody": session},
                "KickSession": {
                    "operationId": "kick_session",
                    "parameters": {"session_id": "$response.body#/session_id"},
                },
            }),
        )],
        _ => vec![],
    }
}

/// The document as checked in: pretty-printed, with a final newline.
pub fn pretty() -> String {
    let mut text = serde_json::to_string_pretty(&document()).expect("JSON serializes");
    text.push('\n');
    text
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    operation_id = "openapi",
    responses((status = 200, description = "This OpenAPI 3.1 document.", content_type = "application/json", body = Object))
)]
pub async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], pretty())
}

// `/metrics` is served by `http::metrics::metrics`; this stand-in carries
// its description because whether (and where) it is served is configured.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    summary = "Prometheus metrics",
    description = "Served on this listener with `metrics = \"on\"` (the default); with `metrics = \"ADDR\"` on its own listener instead, with `off` not at all.",
    responses(
        (status = 200, description = "The Prometheus text exposition format (`text/plain; version=0.0.4`).", content_type = "text/plain", body = String),
        MetricsErrors,
    )
)]
#[allow(dead_code)]
fn metrics() {}

impl PartialSchema for Timestamp {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .description(Some(
                "RFC 3339 in UTC, with milliseconds only when there are some.",
            ))
            .examples([json!("2026-11-30T07:22:18.386Z")])
            .into()
    }
}

impl ToSchema for Timestamp {}

/// The admin bearer token scheme, referenced by every admin route.
struct AdminToken;

impl Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// One schema per error code (`SeatsFullError`…), referenced by the
/// routes' error responses.
struct ErrorBodies;

impl Modify for ErrorBodies {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for e in all_errors() {
            let (_, code) = status_and_code(&e);
            components
                .schemas
                .insert(error_schema_name(code), error_schema(code));
        }
    }
}

/// One sample of every error the HTTP API can answer.
fn all_errors() -> Vec<Error> {
    use EndReason as R;
    vec![
        Error::InvalidRequest(String::new()),
        Error::InvalidKey,
        Error::KeyRevoked,
        Error::KeySuspended,
        Error::KeyExpired,
        Error::SessionIdTaken(String::new()),
        Error::SeatsFull { max_sessions: 1 },
        Error::SessionOver(R::Superseded),
        Error::SessionOver(R::Expired),
        Error::SessionOver(R::Ended),
        Error::SessionOver(R::Revoked),
        Error::SessionNotFound,
        Error::KeyNotFound(String::new()),
        Error::Conflict(String::new()),
        Error::Unauthorized,
        Error::RateLimited {
            retry_after_secs: 1,
        },
        Error::NotFound(String::new()),
        Error::MethodNotAllowed,
        Error::PayloadTooLarge(0),
        Error::RequestTimeout(0),
        Error::UnsupportedMediaType,
        Error::Unavailable(String::new()),
        Error::Overloaded(String::new()),
        Error::Internal(String::new()),
    ]
}

/// `seats_full` → `SeatsFullError`.
fn error_schema_name(code: &str) -> String {
    let mut name: String = code
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    if !name.ends_with("Error") {
        name.push_str("Error");
    }
    name
}

/// When each code is answered (the error table of docs/api.md).
fn error_description(code: &str) -> &'static str {
    match code {
        "invalid_request" => "Malformed JSON, a missing field, a wrong type, a value out of range, a bad `session_id`, a text over its limit, a bad query string; the message names the field.",
        "invalid_key" => "The access key is malformed, fails its checksum, or is unknown (also a key id sent where the secret belongs). Counts towards the failed-key-lookup rate limit.",
        "key_revoked" => "The key was revoked (final).",
        "key_suspended" => "The key is suspended.",
        "key_expired" => "The key's `expires_at` has passed.",
        "session_id_taken" => "Start: the `session_id` was used before (by any key) and is not a live session of this key.",
        "seats_full" => "Start: the key's policy is `reject` and every seat is live.",
        "session_superseded" => "Heartbeat: another device took this session's seat; `superseded_by` names it when known.",
        "session_expired" => "Heartbeat: no heartbeat within the session timeout.",
        "session_ended" => "Heartbeat: the app ended the session.",
        "session_revoked" => "Heartbeat: an admin ended the session, or its key was revoked, suspended, expired or lost seats.",
        "session_not_found" => "No session with this id (for this key, on the session API).",
        "key_not_found" => "Admin: no key with this id or display prefix.",
        "conflict" => "Admin: the change is impossible in the key's state (a revoked key; a prefix shared by two keys).",
        "unauthorized" => "Admin: `Authorization: Bearer <admin token>` missing or wrong. Counts towards the admin authentication rate limit.",
        "rate_limited" => "Too many failures from this address; retry after `Retry-After` seconds.",
        "not_found" => "No such route, or the admin API is off (no admin token configured).",
        "method_not_allowed" => "The route exists, the method does not.",
        "payload_too_large" => "The body is over 16 KiB.",
        "unsupported_media_type" => "A non-empty body not declared as `application/json`.",
        "request_timeout" => "The request body did not arrive within the client timeout.",
        "overloaded" => "Too many changes are waiting for the database; shed at once, retry after `Retry-After` seconds.",
        "unavailable" => "The server is still opening its database, or the database is busy, locked, read-only or full; retry after `Retry-After` seconds.",
        "internal_error" => "A bug or an unexpected database failure; details are in the server log only.",
        _ => "",
    }
}

/// The contract's error body for one code: `{"error": {"code", "message",
/// ...}}` with the extra fields `http::error` adds for that code.
fn error_schema(code: &str) -> RefOr<Schema> {
    let mut inner = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "code",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([code])),
        )
        .required("code")
        .property(
            "message",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("One sentence for people.")),
        )
        .required("message");
    let integer = |min: i64, what: &str| {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(min))
            .description(Some(what.to_owned()))
    };
    match code {
        "seats_full" => {
            inner = inner
                .property("max_sessions", integer(1, "The key's seat limit."))
                .required("max_sessions");
        }
        "session_superseded" => {
            // `superseded_by` when the superseding session is known,
            // otherwise `reason`; `http::error` sends one of the two.
            inner = inner
                .property("superseded_by", SupersededBy::schema())
                .property("reason", EndReason::schema());
        }
        "session_expired" | "session_ended" | "session_revoked" => {
            inner = inner
                .property("reason", EndReason::schema())
                .required("reason");
        }
        "rate_limited" => {
            inner = inner
                .property(
                    "retry_after_seconds",
                    integer(
                        0,
                        "Seconds until the address may try again (also in `Retry-After`).",
                    ),
                )
                .required("retry_after_seconds");
        }
        _ => {}
    }
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(format!("`{code}`: {}", error_description(code))))
        .property("error", inner)
        .required("error")
        .into()
}

/// The responses for the errors a route can answer, grouped by the status
/// `http::error` gives each, with `Retry-After` / `WWW-Authenticate` where
/// the server sends them.
pub fn error_responses(errors: &[Error]) -> BTreeMap<String, RefOr<Response>> {
    let mut by_status: BTreeMap<u16, Vec<&Error>> = BTreeMap::new();
    for e in errors {
        by_status
            .entry(status_and_code(e).0.as_u16())
            .or_default()
            .push(e);
    }
    by_status
        .into_iter()
        .map(|(status, errors)| {
            let codes: BTreeSet<&str> = errors.iter().map(|e| status_and_code(e).1).collect();
            let schema: RefOr<Schema> = if codes.len() == 1 {
                Ref::from_schema_name(error_schema_name(codes.first().unwrap())).into()
            } else {
                let mut one_of = OneOfBuilder::new();
                for code in &codes {
                    one_of = one_of.item(Ref::from_schema_name(error_schema_name(code)));
                }
                one_of.into()
            };
            let reason = axum::http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Error");
            let listed: Vec<String> = codes
                .iter()
                .map(|c| format!("`{c}`: {}", error_description(c)))
                .collect();
            let mut response = ResponseBuilder::new()
                .description(format!("{reason}. {}", listed.join(" ")))
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(schema)).build(),
                );
            if status == 429 || status == 503 {
                response = response.header(
                    "Retry-After",
                    utoipa::openapi::header::HeaderBuilder::new()
                        .schema(
                            ObjectBuilder::new()
                                .schema_type(Type::String)
                                .pattern(Some("^[0-9]+$")),
                        )
                        .description(Some("Seconds to wait before retrying."))
                        .build(),
                );
            }
            if errors.iter().all(|e| matches!(e, Error::Unauthorized)) {
                response = response.header(
                    "WWW-Authenticate",
                    utoipa::openapi::header::HeaderBuilder::new()
                        .schema(
                            ObjectBuilder::new()
                                .schema_type(Type::String)
                                .enum_values(Some(["Bearer"])),
                        )
                        .description(Some("Always `Bearer`."))
                        .build(),
                );
            }
            (status.to_string(), response.build().into())
        })
        .collect()
}

/// Declares a unit type whose `IntoResponses` are these errors' responses,
/// for `responses(...)` in a handler's `#[utoipa::path]`.
macro_rules! route_errors {
    ($($(#[$doc:meta])* $name:ident = $errors:expr;)*) => {$(
        $(#[$doc])*
        pub struct $name;
        impl utoipa::IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                error_responses(&$errors)
            }
        }
    )*};
}

/// What every route can answer: `http::limits` reads each body within a
/// time and size limit, and any handler can fail unexpectedly.
fn any_route(mut errors: Vec<Error>) -> Vec<Error> {
    errors.extend([
        Error::RequestTimeout(0),
        Error::PayloadTooLarge(0),
        Error::Internal(String::new()),
    ]);
    errors
}

/// Routes that change the database: shed with 503 `overloaded` when the
/// writer is saturated (`http::limits`).
fn writes(mut errors: Vec<Error>) -> Vec<Error> {
    errors.push(Error::Overloaded(String::new()));
    errors
}

/// Routes with a JSON body (`extract::ApiJson`).
fn json_body(mut errors: Vec<Error>) -> Vec<Error> {
    errors.extend([
        Error::UnsupportedMediaType,
        Error::InvalidRequest(String::new()),
    ]);
    errors
}

/// The session API: a JSON body, the failed-lookup rate limit, the key.
fn session_route(mut errors: Vec<Error>) -> Vec<Error> {
    errors.extend([
        Error::RateLimited {
            retry_after_secs: 1,
        },
        Error::InvalidKey,
        Error::KeyRevoked,
        Error::KeySuspended,
        Error::KeyExpired,
        Error::Unavailable(String::new()),
    ]);
    any_route(json_body(errors))
}

/// The admin API: off (404), the token (401), its rate limit (429).
fn admin_route(mut errors: Vec<Error>) -> Vec<Error> {
    errors.extend([
        Error::NotFound(String::new()),
        Error::Unauthorized,
        Error::RateLimited {
            retry_after_secs: 1,
        },
        Error::Unavailable(String::new()),
    ]);
    any_route(errors)
}

/// An admin route naming a key by id or display prefix.
fn key_ref(mut errors: Vec<Error>) -> Vec<Error> {
    errors.extend([
        Error::KeyNotFound(String::new()),
        Error::Conflict(String::new()),
    ]);
    errors
}

route_errors! {
    /// `/health` and `/openapi.json`: only the request guards.
    GuardErrors = any_route(vec![]);
    /// `/metrics`: the guards, and the store (503 while starting or busy).
    MetricsErrors = any_route(vec![Error::Unavailable(String::new())]);
    /// Start: the key, then the session id and the seats.
    StartErrors = writes(session_route(vec![
        Error::SessionIdTaken(String::new()),
        Error::SeatsFull { max_sessions: 1 },
    ]));
    /// Heartbeat: the key, then why the session is no longer live.
    HeartbeatErrors = session_route(vec![
        Error::SessionOver(EndReason::Superseded),
        Error::SessionOver(EndReason::Expired),
        Error::SessionOver(EndReason::Ended),
        Error::SessionOver(EndReason::Revoked),
        Error::SessionNotFound,
    ]);
    /// End: an already ended session is a 200, an unknown one a 404.
    EndErrors = writes(session_route(vec![Error::SessionNotFound]));
    /// Status: the key only.
    StatusErrors = session_route(vec![]);
    /// Creating a key.
    CreateKeyErrors = writes(admin_route(json_body(vec![])));
    /// Listing keys: the query string, `after` naming no key.
    ListKeysErrors = admin_route(vec![Error::InvalidRequest(String::new())]);
    /// Reading a key.
    GetKeyErrors = admin_route(key_ref(vec![]));
    /// Changing a key.
    UpdateKeyErrors = writes(admin_route(key_ref(json_body(vec![]))));
    /// Revoking a key.
    RevokeKeyErrors = writes(admin_route(key_ref(vec![])));
    /// Listing live sessions, optionally of one key.
    ListSessionsErrors = admin_route(key_ref(vec![Error::InvalidRequest(String::new())]));
    /// Kicking a session.
    KickErrors = writes(admin_route(vec![Error::AdminSessionNotFound(String::new())]));
    /// The audit log, optionally of one key.
    EventsErrors = admin_route(key_ref(vec![Error::InvalidRequest(String::new())]));
}

// Answer shapes of the handlers that build their JSON with `json!`.

/// `GET /health`.
#[derive(Serialize, ToSchema)]
pub struct HealthAnswer {
    /// `ok`; `starting` before the database is open; `error` when it cannot be read.
    #[schema(inline)]
    pub status: HealthStatus,
    /// The server's version.
    #[schema(example = "0.1.0")]
    pub version: String,
    /// Whether the database answers.
    #[schema(inline)]
    pub database: DatabaseHealth,
}

/// Server state.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Serving.
    Ok,
    /// Opening the database.
    Starting,
    /// The database cannot be read.
    Error,
}

/// Database state.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DatabaseHealth {
    /// Readable.
    Ok,
    /// Not open yet, or unreadable.
    Error,
}

/// A session a start superseded.
#[derive(Serialize, ToSchema)]
pub struct TerminatedSession {
    /// Its id.
    pub session_id: String,
    /// Its device's name, if it gave one.
    pub device_name: Option<String>,
    /// Its last heartbeat.
    pub last_heartbeat: Timestamp,
}

/// `POST /api/session/start`, 200.
#[derive(Serialize, ToSchema)]
pub struct StartAnswer {
    /// The session's id (the client's, or a server-generated UUID).
    #[schema(example = "3f1c9a7e-office-pc")]
    pub session_id: String,
    /// Strictly increasing per key.
    #[schema(minimum = 1, example = 1)]
    pub fence: i64,
    /// When the session started.
    pub started_at: Timestamp,
    /// When it stops being live unless a heartbeat arrives.
    pub expires_at: Timestamp,
    /// How often to heartbeat.
    #[schema(minimum = 1, example = 30)]
    pub heartbeat_interval_seconds: u64,
    /// How long a session lives after its last heartbeat.
    #[schema(minimum = 1, example = 60)]
    pub session_timeout_seconds: u64,
    /// Whether this start superseded other sessions.
    pub previous_session_terminated: bool,
    /// The sessions it superseded.
    pub terminated_sessions: Vec<TerminatedSession>,
    /// True for a retry of a start whose session is still live.
    pub resumed: bool,
}

/// `POST /api/session/heartbeat`, 200.
#[derive(Serialize, ToSchema)]
pub struct HeartbeatAnswer {
    /// The session's id.
    pub session_id: String,
    /// The session's fence.
    #[schema(minimum = 1)]
    pub fence: i64,
    /// This heartbeat's time.
    pub last_heartbeat: Timestamp,
    /// The renewed lease.
    pub expires_at: Timestamp,
    /// How often to heartbeat.
    #[schema(minimum = 1)]
    pub heartbeat_interval_seconds: u64,
}

/// `POST /api/session/end`, 200.
#[derive(Serialize, ToSchema)]
pub struct EndAnswer {
    /// True when the session was live and is now ended.
    pub ended: bool,
    /// Present when it had already ended: why.
    #[schema(value_type = EndReason, required = false)]
    pub reason: Option<EndReason>,
}

/// A live session in a status answer.
#[derive(Serialize, ToSchema)]
pub struct StatusSession {
    /// Its id.
    pub session_id: String,
    /// Its device's name, if it gave one.
    pub device_name: Option<String>,
    /// When it started.
    pub started_at: Timestamp,
    /// Its last heartbeat.
    pub last_heartbeat: Timestamp,
    /// When it stops being live unless a heartbeat arrives.
    pub expires_at: Timestamp,
    /// Its fence.
    #[schema(minimum = 1)]
    pub fence: i64,
}

/// `POST /api/session/status`, 200.
#[derive(Serialize, ToSchema)]
pub struct StatusAnswer {
    /// True when the key has at least one live session.
    pub active: bool,
    /// The key's seat limit.
    #[schema(minimum = 1, maximum = 1000)]
    pub max_sessions: u32,
    /// The key's conflict policy.
    pub on_conflict: ConflictPolicy,
    /// Live sessions, oldest start first.
    pub sessions: Vec<StatusSession>,
}

/// `POST /api/admin/keys`, 201: the key and, this once, its secret.
#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    /// The key.
    #[serde(flatten)]
    pub key: Key,
    /// The secret, shown only here.
    #[schema(
        example = "ks_Rp7Jc4afS8V51Ng4i88Z0Msy6bpALhDm2k5E6F",
        pattern = "^ks_[0-9A-Za-z]{38}$"
    )]
    pub access_key: String,
}

/// `GET /api/admin/keys`, 200.
#[derive(Serialize, ToSchema)]
pub struct KeyPage {
    /// Keys in creation order.
    pub keys: Vec<Key>,
    /// When more keys follow: pass as `after` for the next page.
    pub next_after: Option<String>,
}

/// A live session as the admin list shows it (`admin_session_json`).
#[derive(Serialize, ToSchema)]
pub struct AdminSession {
    /// The key it holds a seat of.
    pub key_id: String,
    /// The key's display prefix.
    pub key_prefix: String,
    /// The session's id.
    pub session_id: String,
    /// The device's name, if it gave one.
    pub device_name: Option<String>,
    /// The device's fingerprint, if it gave one.
    pub fingerprint: Option<String>,
    /// The address the start came from.
    pub client_addr: Option<String>,
    /// Its fence.
    #[schema(minimum = 1)]
    pub fence: i64,
    /// When it started.
    pub started_at: Timestamp,
    /// Its last heartbeat.
    pub last_heartbeat: Timestamp,
    /// Whole seconds since its last heartbeat.
    pub seconds_since_heartbeat: u64,
    /// When it stops being live unless a heartbeat arrives.
    pub expires_at: Timestamp,
}

/// `GET /api/admin/sessions`, 200.
#[derive(Serialize, ToSchema)]
pub struct SessionList {
    /// Live sessions, most recent heartbeat first.
    pub sessions: Vec<AdminSession>,
}

/// `DELETE /api/admin/sessions/{session_id}`, 200.
#[derive(Serialize, ToSchema)]
pub struct KickAnswer {
    /// The session.
    pub session_id: String,
    /// True when it was live and is now ended.
    pub ended: bool,
    /// Present when it had already ended: why.
    #[schema(value_type = EndReason, required = false)]
    pub reason: Option<EndReason>,
}

/// `GET /api/admin/events`, 200.
#[derive(Serialize, ToSchema)]
pub struct EventPage {
    /// Newest first.
    pub events: Vec<Event>,
    /// When the page is full: pass as `before` for the next page.
    pub next_before: Option<i64>,
}

/// `superseded_by` in a `session_superseded` error.
#[derive(Serialize, ToSchema)]
pub struct SupersededBy {
    /// The device that took the seat, if it gave a name.
    pub device_name: Option<String>,
    /// When it started.
    pub started_at: Timestamp,
}

/// The statuses a PATCH may set (revoking has its own route).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PatchStatus {
    /// Resume a suspended key.
    Active,
    /// Suspend: ends its live sessions (reason `revoked`).
    Suspended,
}
