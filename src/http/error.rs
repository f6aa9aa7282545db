//! The one place where errors become HTTP answers: status, the contract's
//! snake_case code, a one-sentence message and, where the contract lists
//! them, extra fields inside `error`. Internal failures are logged with
//! their detail and answered with a generic sentence.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use crate::error::Error;
use crate::model::EndReason;

/// The contract's error code of a response, for middleware (metrics) that
/// sees responses, not errors.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

/// Status and code for an error.
pub fn status_and_code(err: &Error) -> (StatusCode, &'static str) {
    use StatusCode as S;
    match err {
        Error::InvalidRequest(_) => (S::BAD_REQUEST, "invalid_request"),
        Error::InvalidKey => (S::UNAUTHORIZED, "invalid_key"),
        Error::KeyRevoked => (S::FORBIDDEN, "key_revoked"),
        Error::KeySuspended => (S::FORBIDDEN, "key_suspended"),
        Error::KeyExpired => (S::FORBIDDEN, "key_expired"),
        Error::SessionIdTaken(_) => (S::CONFLICT, "session_id_taken"),
        Error::SeatsFull { .. } => (S::CONFLICT, "seats_full"),
        Error::BorrowNotAllowed => (S::FORBIDDEN, "borrow_not_allowed"),
        Error::SessionSuperseded { .. } | Error::SessionOver(EndReason::Superseded) => {
            (S::CONFLICT, "session_superseded")
        }
        Error::SessionOver(EndReason::Expired) => (S::GONE, "session_expired"),
        Error::SessionOver(EndReason::Ended) => (S::GONE, "session_ended"),
        Error::SessionOver(EndReason::Revoked) => (S::GONE, "session_revoked"),
        Error::SessionNotFound | Error::AdminSessionNotFound(_) => {
            (S::NOT_FOUND, "session_not_found")
        }
        Error::KeyNotFound(_) => (S::NOT_FOUND, "key_not_found"),
        Error::Conflict(_) => (S::CONFLICT, "conflict"),
        Error::Unauthorized => (S::UNAUTHORIZED, "unauthorized"),
        Error::RateLimited { .. } => (S::TOO_MANY_REQUESTS, "rate_limited"),
        Error::NotFound(_) => (S::NOT_FOUND, "not_found"),
        Error::MethodNotAllowed => (S::METHOD_NOT_ALLOWED, "method_not_allowed"),
        Error::PayloadTooLarge(_) => (S::PAYLOAD_TOO_LARGE, "payload_too_large"),
        Error::UnsupportedMediaType => (S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        Error::Unavailable(_) => (S::SERVICE_UNAVAILABLE, "unavailable"),
        Error::Overloaded(_) => (S::SERVICE_UNAVAILABLE, "overloaded"),
        Error::RequestTimeout(_) => (S::REQUEST_TIMEOUT, "request_timeout"),
        e if e.is_transient() => (S::SERVICE_UNAVAILABLE, "unavailable"),
        Error::Config(_)
        | Error::Database(_)
        | Error::Sqlite(_)
        | Error::Pool(_)
        | Error::Postgres(_)
        | Error::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal_error"),
    }
}

/// The contract's error body: `{"error": {"code", "message", ...}}`.
pub fn error_body(code: &str, message: &str, extra: Map<String, Value>) -> Value {
    let mut error = Map::new();
    error.insert("code".into(), json!(code));
    error.insert("message".into(), json!(message));
    error.extend(extra);
    json!({ "error": error })
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code) = status_and_code(&self);
        let mut extra = Map::new();
        let message = match &self {
            Error::SessionSuperseded {
                device_name,
                started_at,
            } => {
                extra.insert(
                    "superseded_by".into(),
                    json!(crate::wire::SupersededBy {
                        device_name: device_name.clone(),
                        started_at: *started_at,
                    }),
                );
                match device_name {
                    Some(name) => format!(
                        "this session was ended because device \"{name}\" started with the same access key"
                    ),
                    None => self.to_string(),
                }
            }
            Error::SessionOver(reason) => {
                extra.insert("reason".into(), json!(reason));
                self.to_string()
            }
            Error::SeatsFull { max_sessions } => {
                extra.insert("max_sessions".into(), json!(max_sessions));
                self.to_string()
            }
            Error::RateLimited { retry_after_secs } => {
                extra.insert("retry_after_seconds".into(), json!(retry_after_secs));
                self.to_string()
            }
            _ if status == StatusCode::INTERNAL_SERVER_ERROR => {
                tracing::error!(error = %self, "request failed");
                "internal error; the server log has the details".into()
            }
            _ if status == StatusCode::SERVICE_UNAVAILABLE
                && !matches!(self, Error::Unavailable(_) | Error::Overloaded(_)) =>
            {
                tracing::warn!(error = %self, "request refused: database unavailable");
                "the database is busy or unavailable; retry shortly".into()
            }
            _ => self.to_string(),
        };
        let mut response = (status, Json(error_body(code, &message, extra))).into_response();
        response.extensions_mut().insert(ErrorCode(code));
        let headers = response.headers_mut();
        match &self {
            Error::RateLimited { retry_after_secs } => {
                if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                    headers.insert(header::RETRY_AFTER, v);
                }
            }
            Error::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Error::RequestTimeout(_) => {
                // The rest of the body may still come; the connection is
                // not reusable (RFC 9110 15.5.9).
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ if status == StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}
