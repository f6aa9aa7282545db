//! The error half of the OpenAPI document: one schema per error code, and
//! for each route the errors it can answer, grouped by the status the one
//! mapping in [`crate::http::error::status_and_code`] gives them. A route's
//! list is built from what its layers do (every route's guards, a JSON
//! body, the session API's key checks, the admin token, writes that can be
//! shed), so a new route names its layers, not a list of codes.

use std::collections::{BTreeMap, BTreeSet};

use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder, Schema};
use utoipa::{Modify, PartialSchema};

use crate::error::Error;
use crate::http::error::status_and_code;
use crate::model::EndReason;
use crate::wire::SupersededBy;

/// One schema per error code (`SeatsFullError`…), referenced by the
/// routes' error responses.
pub struct ErrorBodies;

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
        Error::BorrowNotAllowed,
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
        "seats_full" => "Start: the key's policy is `reject` and every seat is live; start or borrow: every seat is borrowed, whatever the policy.",
        "borrow_not_allowed" => "Borrow: the key's `max_borrow_hours` is 0 (borrowing off).",
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

/// Adds to every operation of the document the responses of the errors
/// it can answer: [`route_errors`] by its operation id, and 503
/// `overloaded` where [`crate::http::limits::needs_writer`] (the one list
/// of write routes, which the server itself sheds by) says the route goes
/// through the database writer.
pub struct RouteErrors;

impl Modify for RouteErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use axum::http::Method;
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                (Method::GET, &mut item.get),
                (Method::POST, &mut item.post),
                (Method::PATCH, &mut item.patch),
                (Method::DELETE, &mut item.delete),
            ];
            for (method, operation) in operations {
                let Some(op) = operation.as_mut() else {
                    continue;
                };
                let id = op.operation_id.as_deref().unwrap_or_default();
                let mut errors = route_errors(id);
                if crate::http::limits::needs_writer(&method, path) {
                    errors.push(Error::Overloaded(String::new()));
                }
                op.responses.responses.extend(error_responses(&errors));
            }
        }
    }
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

/// The errors an operation can answer, by its operation id, apart from
/// the writer's 503 (added by [`RouteErrors`]).
fn route_errors(operation_id: &str) -> Vec<Error> {
    let text = || String::new();
    match operation_id {
        // `/health` and `/openapi.json`: only the request guards.
        "health" | "openapi" => any_route(vec![]),
        // `/metrics`: the guards, and the store (503 while starting or busy).
        "metrics" => any_route(vec![Error::Unavailable(text())]),
        // `/api/signing-keys`: the guards, and 503 while starting.
        "signing_keys" => any_route(vec![Error::Unavailable(text())]),
        // Start: the key, then the session id and the seats.
        "start_session" => session_route(vec![
            Error::SessionIdTaken(text()),
            Error::SeatsFull { max_sessions: 1 },
        ]),
        // Borrow: a start's errors, and the key's borrowing terms.
        "borrow_session" => session_route(vec![
            Error::SessionIdTaken(text()),
            Error::SeatsFull { max_sessions: 1 },
            Error::BorrowNotAllowed,
        ]),
        // Heartbeat: the key, then why the session is no longer live.
        "heartbeat" => session_route(vec![
            Error::SessionOver(EndReason::Superseded),
            Error::SessionOver(EndReason::Expired),
            Error::SessionOver(EndReason::Ended),
            Error::SessionOver(EndReason::Revoked),
            Error::SessionNotFound,
        ]),
        // End: an already ended session is a 200, an unknown one a 404.
        "end_session" => session_route(vec![Error::SessionNotFound]),
        // Status: the key only.
        "session_status" => session_route(vec![]),
        "create_key" => admin_route(json_body(vec![])),
        // Listing keys: the query string, `after` naming no key.
        "list_keys" => admin_route(vec![Error::InvalidRequest(text())]),
        "get_key" => admin_route(key_ref(vec![])),
        "update_key" => admin_route(key_ref(json_body(vec![]))),
        "revoke_key" => admin_route(key_ref(vec![])),
        // Live sessions, optionally of one key.
        "list_sessions" => admin_route(key_ref(vec![Error::InvalidRequest(text())])),
        "kick_session" => admin_route(vec![Error::AdminSessionNotFound(text())]),
        // The audit log, optionally of one key.
        "list_events" => admin_route(key_ref(vec![Error::InvalidRequest(text())])),
        other => unreachable!("operation `{other}` has no error list in route_errors"),
    }
}
