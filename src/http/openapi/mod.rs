//! The OpenAPI 3.1 document of the HTTP API, generated from the code: the
//! handlers' `#[utoipa::path]` attributes, the request and model types'
//! `ToSchema` derives, and, for every error a route can answer, the status
//! and code from the one mapping in [`super::error::status_and_code`].
//!
//! Served at `GET /openapi.json`, printed by `keyseat openapi`, and checked
//! in as `docs/openapi.json` (a test fails when the two differ; regenerate
//! with `cargo run -- openapi > docs/openapi.json`).
//!
//! The answer shapes are the handlers' own return types ([`crate::wire`]);
//! the errors each route can answer are described in [`errors`]. The
//! `openapi` integration test and the schemathesis run in CI hold the
//! document to what the server really sends.

pub mod errors;

use errors::{ErrorBodies, RouteErrors};

use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{json, Value};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::clock::Timestamp;

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
        super::session::borrow,
        super::heartbeat::heartbeat,
        super::session::end,
        super::session::status,
        super::signing::signing_keys,
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
    modifiers(&AdminToken, &ErrorBodies, &RouteErrors),
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
    )
)]
#[allow(dead_code)]
fn metrics() {}

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
