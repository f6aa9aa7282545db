//! Extractors that answer bad input with the contract's JSON error instead
//! of axum's plain-text rejections.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::{header, request::Parts, StatusCode};
use serde::de::DeserializeOwned;

use super::AppState;
use crate::error::Error;
use crate::proxy::TrustedProxies;

/// Largest accepted request body, per the contract.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// A JSON body. Requires `Content-Type: application/json` (415 otherwise),
/// at most 16 KiB (413), and answers a malformed body with
/// `invalid_request` naming the offending field (`device.name: invalid
/// type…`). An empty body reads as `{}`, so routes whose fields are all
/// optional accept a bare POST.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let declared_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                let mime = v
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                mime == "application/json"
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            });
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Error::PayloadTooLarge(MAX_BODY_BYTES)
            } else {
                Error::InvalidRequest(format!("could not read the request body: {rejection}"))
            }
        })?;
        let body: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            if declared_json != Some(true) {
                return Err(Error::UnsupportedMediaType);
            }
            &bytes
        };
        parse_json(body).map(ApiJson)
    }
}

/// Parses JSON, naming the field at fault in the error.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    // serde would also read a struct from an array of its fields; the
    // contract's bodies are objects, so anything else is refused plainly.
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') | None => {}
        Some(b'[') => {
            return Err(Error::InvalidRequest(
                "invalid request body: a JSON object is expected, not an array".into(),
            ))
        }
        Some(_) => {}
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let detail = strip_position(&inner.to_string());
        // `?` marks a position serde could not name (e.g. a broken key).
        let at_root = path == "." || path.is_empty() || path.contains('?');
        // serde quotes the offending value; a key sent in the wrong field
        // must not come back whole (`invalid type: string "ks_…"`).
        Error::InvalidRequest(crate::keys::redact_secret(&match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof if at_root => {
                format!("the request body is not valid JSON: {detail}")
            }
            _ if at_root => format!("invalid request body: {detail}"),
            _ => format!("{path}: {detail}"),
        }))
    })?;
    // Anything after the JSON value (`{}A`) makes the body invalid JSON.
    de.end().map_err(|e| {
        Error::InvalidRequest(format!(
            "the request body is not valid JSON: {}",
            strip_position(&e.to_string())
        ))
    })?;
    Ok(value)
}

/// serde_json appends " at line 1 column 17"; the field path says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// A path parameter, answered with `invalid_request` (JSON) when it cannot
/// be decoded, e.g. a percent-escape that is not UTF-8 (`/keys/%FF`);
/// axum's own `Path` answers those in plain text.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|e| Error::InvalidRequest(format!("invalid path: {}", e.body_text())))
    }
}

/// Query-string parameters, answered with `invalid_request` when malformed.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| Error::InvalidRequest(format!("invalid query string: {}", e.body_text())))
    }
}

/// The client's address, when known: the TCP peer, or for a peer listed in
/// `trusted_proxies` the client named by `X-Forwarded-For` (see
/// [`crate::proxy`]). Recorded on events and used for per-address rate
/// limits.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

impl ClientAddr {
    /// How the address is recorded on events.
    pub fn label(&self) -> String {
        match self.0 {
            Some(ip) => ip.to_string(),
            None => "unknown".into(),
        }
    }

    /// The client of a request, given the proxies the operator trusts.
    pub fn of(parts: &Parts, trusted: &TrustedProxies) -> ClientAddr {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        ClientAddr(peer.map(|peer| {
            if trusted.is_empty() {
                return peer;
            }
            // Entry by entry, so one non-ASCII entry (written by the
            // client) cannot hide the ones the proxies appended after it.
            let hops: Vec<&str> = parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .flat_map(|v| v.as_bytes().split(|b| *b == b','))
                .map(|hop| std::str::from_utf8(hop).unwrap_or("(not ASCII)"))
                .collect();
            trusted.client_ip(peer, hops.into_iter())
        }))
    }
}

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr::of(parts, state.trusted_proxies()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        access_key: String,
        device: Option<Device>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Device {
        name: Option<String>,
    }

    fn message(body: &str) -> String {
        match parse_json::<Body>(body.as_bytes()) {
            Err(Error::InvalidRequest(m)) => m,
            other => panic!("expected invalid_request, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert!(message("{}").contains("missing field `access_key`"));
        assert!(message(r#"{"access_key": 5}"#).starts_with("access_key:"));
        assert!(
            message(r#"{"access_key": "k", "device": {"name": 7}}"#).starts_with("device.name:")
        );
        assert!(message("{not json").contains("not valid JSON"));
        assert!(!message("{not json").contains("line 1"));
    }
}
