//! Signed answers on the wire (docs/api.md, "Signed answers"): the
//! published keys, and the seal put on the answer to every session request
//! that carries a `nonce`.
//!
//! The seal is applied by the request guard ([`super::limits`]), which
//! holds the whole body already, around everything the session routes
//! answer: their answers, their errors, and the guard's own 503
//! `overloaded`. Only what is refused before the body is in (408, 413,
//! connection limits) cannot carry the nonce it never read, and goes out
//! unsigned; a verifying client treats such an answer as no answer.
//!
//! Requests without `"nonce"` pay one scan of their body for the word.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::BodyExt;
use serde_json::Value;

use super::AppState;
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::signing::SIGNATURE_HEADER;
use crate::wire::JwkSet;

#[utoipa::path(
    get,
    path = "/api/signing-keys",
    tag = "session",
    operation_id = "signing_keys",
    summary = "The public keys that sign answers",
    responses(
        (status = 200, description = "The current key first, then keys rotated out less than `signing_key_overlap_days` ago.", body = JwkSet),
    )
)]
pub async fn signing_keys(State(state): State<AppState>) -> Result<Json<JwkSet>> {
    let keys = state.signer().keys().ok_or_else(starting)?;
    Ok(Json(keys.jwks()))
}

/// 503 while the server is still starting (no signing key yet).
pub(super) fn starting() -> Error {
    Error::Unavailable("the server is starting; retry shortly".into())
}

/// What a session request asked to have its answer sealed with.
pub struct Seal {
    nonce: String,
    key_prefix: Option<String>,
}

impl Seal {
    /// The seal `body` asks for: none without a `nonce`, 400 for a nonce
    /// outside the contract's grammar. A body that is not a JSON object
    /// asks for none (its handler answers why it is malformed).
    pub fn asked(body: &[u8]) -> Result<Option<Seal>> {
        if !mentions_nonce(body) {
            return Ok(None);
        }
        /// The two fields a seal needs, read without building the rest.
        #[derive(serde::Deserialize)]
        struct Asked<'a> {
            #[serde(borrow, default)]
            nonce: Option<std::borrow::Cow<'a, str>>,
            #[serde(borrow, default)]
            access_key: Option<std::borrow::Cow<'a, str>>,
        }
        let asked = match serde_json::from_slice::<Asked>(body) {
            Ok(asked) => asked,
            // A field of another type: read the object as it is (a
            // malformed body is its handler's to answer, unsealed).
            Err(_) => match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(fields)) => match fields.get("nonce") {
                    None | Some(Value::Null) => return Ok(None),
                    Some(Value::String(nonce)) => Asked {
                        nonce: Some(nonce.clone().into()),
                        access_key: fields
                            .get("access_key")
                            .and_then(Value::as_str)
                            .map(|k| k.to_owned().into()),
                    },
                    Some(_) => return Err(crate::input::nonce("").unwrap_err()),
                },
                _ => return Ok(None),
            },
        };
        let Some(nonce) = asked.nonce else {
            return Ok(None);
        };
        crate::input::nonce(&nonce)?;
        Ok(Some(Seal {
            nonce: nonce.into_owned(),
            key_prefix: asked
                .access_key
                .as_deref()
                .and_then(crate::keys::shown_prefix),
        }))
    }

    /// `response` with the nonce, the server's time and the key prefix in
    /// its body (inside `error` for errors) and the signature header.
    pub async fn apply(self, response: Response, state: &AppState) -> Response {
        let Some(keys) = state.signer().keys() else {
            return response;
        };
        let (mut parts, body) = response.into_parts();
        let Ok(collected) = body.collect().await else {
            return Error::Internal("an answer's body could not be read for signing".into())
                .into_response();
        };
        let bytes = collected.to_bytes();
        let Some(body) = self.stamped(&bytes, state.now()) else {
            // Not a JSON object (nothing the session routes answer): as it is.
            return Response::from_parts(parts, Body::from(bytes));
        };
        if let Ok(header) = HeaderValue::from_str(&keys.sign(&body)) {
            parts.headers.insert(SIGNATURE_HEADER, header);
        }
        parts.headers.remove(axum::http::header::CONTENT_LENGTH);
        Response::from_parts(parts, Body::from(body))
    }

    /// The answer's compact JSON with the stamp appended to its object (to
    /// `error` for an error): the body is serde's own output, an object
    /// that ends in `}` (`}}` for an error), so the fields go in before
    /// that, without parsing the answer again. Anything else: `None`.
    fn stamped(self, body: &[u8], now: Timestamp) -> Option<Bytes> {
        let is_error = body.starts_with(b"{\"error\":{") && body.ends_with(b"}}");
        let end = body.len().checked_sub(if is_error { 2 } else { 1 })?;
        if !body.starts_with(b"{") || body.last() != Some(&b'}') {
            return None;
        }
        let mut fields = serde_json::Map::new();
        self.stamp_into(&mut fields, now);
        let stamp = serde_json::to_vec(&Value::Object(fields)).ok()?;
        let inner = &stamp[1..stamp.len() - 1];
        let empty = body[..end].ends_with(b"{");
        let mut out = Vec::with_capacity(body.len() + stamp.len());
        out.extend_from_slice(&body[..end]);
        if !empty {
            out.push(b',');
        }
        out.extend_from_slice(inner);
        out.extend_from_slice(&body[end..]);
        Some(Bytes::from(out))
    }

    fn stamp_into(self, fields: &mut serde_json::Map<String, Value>, now: Timestamp) {
        fields.insert("nonce".into(), Value::String(self.nonce));
        fields.insert("server_time".into(), Value::String(now.to_rfc3339()));
        fields.insert(
            "key_prefix".into(),
            self.key_prefix.map_or(Value::Null, Value::String),
        );
    }
}

/// Whether `"nonce"` occurs in `body`. Every session request pays this, so
/// it is memchr's vectorized substring search: about 290 instructions per
/// request under callgrind, where a byte-by-byte scan cost 1,400 (2% of
/// a heartbeat).
fn mentions_nonce(body: &[u8]) -> bool {
    memchr::memmem::find(body, b"\"nonce\"").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_request_with_a_nonce_asks_for_a_seal() {
        assert!(Seal::asked(br#"{"access_key":"ks_x"}"#).unwrap().is_none());
        assert!(Seal::asked(br#"{"nonce":null}"#).unwrap().is_none());
        assert!(Seal::asked(br#"{"nonce": "12345678"#).unwrap().is_none());
        let seal = Seal::asked(br#"{"access_key":"ks_Rp7Jc4afS8V5","nonce":"abc-DEF_12.x"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(seal.nonce, "abc-DEF_12.x");
        assert_eq!(seal.key_prefix.as_deref(), Some("ks_Rp7Jc4af"));
        let wrong_type = Seal::asked(br#"{"access_key":5,"nonce":"abcdefgh12"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(wrong_type.nonce, "abcdefgh12");
        assert!(wrong_type.key_prefix.is_none());
    }

    #[test]
    fn the_word_is_found_only_as_a_quoted_key() {
        assert!(mentions_nonce(br#"{"a":1,"nonce":"x"}"#));
        assert!(!mentions_nonce(br#"{"nonces":1}"#));
        assert!(!mentions_nonce(br#"{"non":"ce"}"#));
        assert!(!mentions_nonce(b"\"nonce"));
    }

    #[test]
    fn a_nonce_outside_the_grammar_is_refused() {
        for bad in [
            r#"{"nonce":"short"}"#,
            r#"{"nonce":"has space in it"}"#,
            r#"{"nonce":12345678}"#,
        ] {
            let e = Seal::asked(bad.as_bytes()).err().expect(bad);
            assert!(e.to_string().contains("nonce"), "{e}");
        }
        let long = format!(r#"{{"nonce":"{}"}}"#, "a".repeat(129));
        assert!(Seal::asked(long.as_bytes()).is_err());
    }

    #[test]
    fn errors_carry_the_stamp_inside_error() {
        let seal = || Seal::asked(br#"{"nonce":"n0nce-123"}"#).unwrap().unwrap();
        let error = br#"{"error":{"code":"invalid_key","message":"m"}}"#;
        let v: Value =
            serde_json::from_slice(&seal().stamped(error, Timestamp(0)).unwrap()).unwrap();
        assert_eq!(v["error"]["nonce"], "n0nce-123");
        assert_eq!(v["error"]["code"], "invalid_key");
        assert_eq!(v["error"]["server_time"], "1970-01-01T00:00:00Z");
        assert!(v["error"]["key_prefix"].is_null());
        assert!(v.get("nonce").is_none());
        let answer = br#"{"session_id":"s","fence":1,"note":"}}"}"#;
        let v: Value =
            serde_json::from_slice(&seal().stamped(answer, Timestamp(0)).unwrap()).unwrap();
        assert_eq!(
            (v["fence"].as_i64(), v["nonce"].as_str()),
            (Some(1), Some("n0nce-123"))
        );
        assert_eq!(v["note"], "}}");
        let v: Value =
            serde_json::from_slice(&seal().stamped(b"{}", Timestamp(0)).unwrap()).unwrap();
        assert_eq!(v["nonce"], "n0nce-123");
        assert!(seal().stamped(b"[1]", Timestamp(0)).is_none());
        assert!(seal().stamped(b"text", Timestamp(0)).is_none());
    }
}
