//! The wire calls, one function per route, with no retry policy: what
//! [`super::Client`] and `keyseat check` build on.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::tls::{self, CertificateProblem};
use crate::signing::{Forgery, PinnedKey, SIGNATURE_HEADER};
use crate::wire::{
    BorrowAnswer, BorrowBody, DeviceBody, EndAnswer, HealthAnswer, HeartbeatAnswer, HeartbeatBody,
    SessionBody, StartAnswer, StartBody, StatusAnswer, StatusBody,
};

/// A failed call: either no HTTP answer at all, or an answer that is not
/// 2xx (with the contract's error code when the server sent one).
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// Connection refused, reset, timed out, DNS failure…
    Transport(String),
    /// The server answered with an error.
    Server {
        /// HTTP status.
        status: u16,
        /// The contract's error code (`http_<status>` if the body was not
        /// the contract's error shape, e.g. a proxy's 502 page).
        code: String,
        /// The server's message.
        message: String,
        /// The whole `error` object (extra fields such as `superseded_by`).
        error: Value,
        /// `Retry-After`, when sent.
        retry_after: Option<Duration>,
    },
    /// An answer that failed the signature check (with a pinned public
    /// key): not keyseat's, or not for this request. Treated like no
    /// answer (retried while the lease lasts), and never acted on.
    Forged {
        /// The route.
        path: String,
        /// What did not match.
        reason: Forgery,
    },
    /// The TLS handshake refused the server's certificate. Not transient:
    /// retrying cannot fix a certificate, and it is not "unreachable".
    Certificate(CertificateProblem),
}

impl ApiError {
    /// Worth retrying: no answer, a 5xx, or 429 (never a refused
    /// certificate).
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Transport(_) | ApiError::Forged { .. } => true,
            ApiError::Certificate(_) => false,
            ApiError::Server { status, .. } => *status >= 500 || *status == 429,
        }
    }

    /// The contract's error code, if the server answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            ApiError::Transport(_) | ApiError::Forged { .. } | ApiError::Certificate(_) => None,
            ApiError::Server { code, .. } => Some(code),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Transport(e) => write!(f, "server unreachable: {e}"),
            ApiError::Server {
                status,
                code,
                message,
                ..
            } => write!(f, "{status} {code}: {message}"),
            ApiError::Forged { path, reason } => write!(
                f,
                "the answer to {path} failed the signature check: {reason}"
            ),
            ApiError::Certificate(problem) => write!(f, "{problem}"),
        }
    }
}

impl std::error::Error for ApiError {}

/// A keyseat server's session API.
#[derive(Clone)]
pub struct Api {
    base: String,
    agent: ureq::Agent,
    timeout: Duration,
    /// The public keys answers must be signed with; none: not checked.
    pinned: Arc<Vec<PinnedKey>>,
    /// CA certificates trusted besides the system store (`ca_file`).
    extra_roots: Arc<Vec<CertificateDer<'static>>>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").field("base", &self.base).finish()
    }
}

impl Api {
    /// An API client for `server_url` (`http://host:port` or `https://…`,
    /// with or without a trailing slash); each call is bounded by
    /// `timeout`. Over `https://` the server's certificate must verify
    /// against the operating system's trust store (`SSL_CERT_FILE` and
    /// `SSL_CERT_DIR` honoured) or a CA added with [`Api::trusting`].
    pub fn new(server_url: &str, timeout: Duration) -> Result<Api, String> {
        let base = server_url.trim().trim_end_matches('/').to_owned();
        let rest = base
            .strip_prefix("http://")
            .or_else(|| base.strip_prefix("https://"))
            .ok_or_else(|| {
                format!("server URL must start with http:// or https:// (got `{base}`)")
            })?;
        if rest.is_empty() || rest.contains(char::is_whitespace) {
            return Err(format!("server URL `{base}` has no host"));
        }
        let extra_roots = Arc::new(Vec::new());
        Ok(Api {
            agent: agent(timeout, &extra_roots),
            base,
            timeout,
            pinned: Arc::new(Vec::new()),
            extra_roots,
        })
    }

    /// This API trusting the CA certificates of the PEM file at `path` too
    /// (a private CA, besides the system store). A missing file, or one
    /// without a PEM certificate, is an error naming the file.
    pub fn trusting(&self, path: &Path) -> Result<Api, String> {
        let certs = crate::trust::pem_certificates(path)
            .map_err(|e| format!("the CA file {} {e}", path.display()))?;
        let mut api = self.clone();
        Arc::make_mut(&mut api.extra_roots).extend(certs);
        api.agent = agent(api.timeout, &api.extra_roots);
        Ok(api)
    }

    /// This API with `key` pinned too: from now on every session call
    /// sends a fresh nonce and refuses an answer that is not signed by a
    /// pinned key over its exact body, with that nonce and this key's
    /// prefix echoed ([`crate::signing::verify`]).
    pub fn pin(mut self, key: PinnedKey) -> Api {
        Arc::make_mut(&mut self.pinned).push(key);
        self
    }

    /// This API with another time budget per call (pinned keys and added
    /// CAs kept).
    pub fn retimed(&self, timeout: Duration) -> Result<Api, String> {
        let mut api = self.clone();
        api.timeout = timeout;
        api.agent = agent(timeout, &api.extra_roots);
        Ok(api)
    }

    /// The time budget of one call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether answers are checked.
    pub fn verifies(&self) -> bool {
        !self.pinned.is_empty()
    }

    /// `GET /api/signing-keys`.
    pub fn signing_keys(&self) -> Result<crate::wire::JwkSet, ApiError> {
        let resp = self
            .agent
            .get(format!("{}/api/signing-keys", self.base))
            .call()
            .map_err(transport)?;
        read(resp).and_then(|body| typed("/api/signing-keys", body))
    }

    /// The server URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /health`; the answer on 200.
    pub fn health(&self) -> Result<HealthAnswer, ApiError> {
        let resp = self
            .agent
            .get(format!("{}/health", self.base))
            .call()
            .map_err(transport)?;
        read(resp).and_then(|body| typed("/health", body))
    }

    /// POSTs JSON to a path; the body on 2xx. `timeout` shortens the call's
    /// time budget (never lengthens it).
    pub fn post(
        &self,
        path: &str,
        body: &impl Serialize,
        timeout: Option<Duration>,
    ) -> Result<Value, ApiError> {
        let budget = timeout.map_or(self.timeout, |t| t.min(self.timeout));
        self.post_within(path, body, budget)
    }

    /// `post` with this call's own time budget (a held heartbeat's is
    /// longer than the API's timeout).
    fn post_within(
        &self,
        path: &str,
        body: &impl Serialize,
        budget: Duration,
    ) -> Result<Value, ApiError> {
        let request = self
            .agent
            .post(format!("{}{path}", self.base))
            .config()
            .timeout_global(Some(budget))
            .build();
        if self.pinned.is_empty() {
            return read(request.send_json(body).map_err(transport)?);
        }
        let mut body = serde_json::to_value(body)
            .map_err(|e| ApiError::Transport(format!("the request could not be written: {e}")))?;
        let nonce = crate::signing::new_nonce();
        let prefix = body["access_key"]
            .as_str()
            .and_then(crate::keys::shown_prefix);
        if let Some(fields) = body.as_object_mut() {
            fields.insert("nonce".into(), Value::String(nonce.clone()));
        }
        let mut resp = request.send_json(&body).map_err(transport)?;
        let header = resp
            .headers()
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (status, retry_after, text) = body_of(&mut resp)?;
        crate::signing::verify(
            &self.pinned,
            status,
            header.as_deref(),
            text.as_bytes(),
            &nonce,
            prefix.as_deref(),
        )
        .map_err(|reason| ApiError::Forged {
            path: path.to_owned(),
            reason,
        })?;
        answer(status, retry_after, &text)
    }

    /// `post`, with the answer read as the contract's shape for the route.
    fn call<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
        timeout: Option<Duration>,
    ) -> Result<T, ApiError> {
        self.post(path, body, timeout)
            .and_then(|answer| typed(path, answer))
    }

    /// `POST /api/session/start`.
    pub fn start(
        &self,
        access_key: &str,
        session_id: Option<&str>,
        device_name: Option<&str>,
        fingerprint: Option<&str>,
    ) -> Result<StartAnswer, ApiError> {
        let body = StartBody {
            access_key: access_key.into(),
            session_id: session_id.map(str::to_owned),
            device: Some(DeviceBody {
                name: device_name.map(str::to_owned),
                fingerprint: fingerprint.map(str::to_owned),
            }),
            nonce: None,
        };
        self.call("/api/session/start", &body, None)
    }

    /// `POST /api/session/borrow` (with `session_id`, a live session of the
    /// key is borrowed).
    pub fn borrow(
        &self,
        access_key: &str,
        session_id: Option<&str>,
        device_name: Option<&str>,
        fingerprint: Option<&str>,
        hours: u32,
    ) -> Result<BorrowAnswer, ApiError> {
        let body = BorrowBody {
            access_key: access_key.into(),
            session_id: session_id.map(str::to_owned),
            device: Some(DeviceBody {
                name: device_name.map(str::to_owned),
                fingerprint: fingerprint.map(str::to_owned),
            }),
            hours,
            nonce: None,
        };
        self.call("/api/session/borrow", &body, None)
    }

    /// `POST /api/session/heartbeat`.
    pub fn heartbeat(
        &self,
        access_key: &str,
        session_id: &str,
        timeout: Option<Duration>,
    ) -> Result<HeartbeatAnswer, ApiError> {
        self.call(
            "/api/session/heartbeat",
            &session_body(access_key, session_id),
            timeout,
        )
    }

    /// `POST /api/session/heartbeat` with `wait_seconds`: held by the
    /// server until the wait is over or the session ends; the call's
    /// budget is the wait plus this API's timeout.
    pub fn heartbeat_held(
        &self,
        access_key: &str,
        session_id: &str,
        wait_seconds: u64,
    ) -> Result<HeartbeatAnswer, ApiError> {
        let body = HeartbeatBody {
            access_key: access_key.into(),
            session_id: session_id.into(),
            wait_seconds: Some(wait_seconds),
            nonce: None,
        };
        let budget = Duration::from_secs(wait_seconds) + self.timeout;
        self.post_within("/api/session/heartbeat", &body, budget)
            .and_then(|answer| typed("/api/session/heartbeat", answer))
    }

    /// `POST /api/session/end`.
    pub fn end(
        &self,
        access_key: &str,
        session_id: &str,
        timeout: Option<Duration>,
    ) -> Result<EndAnswer, ApiError> {
        self.call(
            "/api/session/end",
            &session_body(access_key, session_id),
            timeout,
        )
    }

    /// `POST /api/session/status`.
    pub fn status(&self, access_key: &str) -> Result<StatusAnswer, ApiError> {
        let body = StatusBody {
            access_key: access_key.into(),
            nonce: None,
        };
        self.call("/api/session/status", &body, None)
    }
}

fn session_body(access_key: &str, session_id: &str) -> SessionBody {
    SessionBody {
        access_key: access_key.into(),
        session_id: session_id.into(),
        nonce: None,
    }
}

/// A 2xx answer read as the route's shape. One that does not fit (a proxy's
/// page, another program on the port) is no answer from a keyseat server:
/// a transport failure, retried like one while the lease lasts.
fn typed<T: DeserializeOwned>(path: &str, answer: Value) -> Result<T, ApiError> {
    serde_json::from_value(answer).map_err(|e| {
        ApiError::Transport(format!(
            "the answer to {path} does not fit the contract: {e}"
        ))
    })
}

/// The agent of an API: errors are answers to read, every call bounded,
/// and the trust of [`tls::config`] (set for `http://` too: a redirect
/// may lead to `https://`).
fn agent(timeout: Duration, extra_roots: &[CertificateDer<'static>]) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .user_agent(concat!("keyseat-client/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls::config(extra_roots))
        .build()
        .into()
}

/// A call that got no answer: a refused certificate when that is why,
/// else a transport failure (retried while the lease lasts).
fn transport(e: ureq::Error) -> ApiError {
    match tls::certificate_problem(&e) {
        Some(problem) => ApiError::Certificate(problem),
        None => ApiError::Transport(e.to_string()),
    }
}

fn read(mut resp: ureq::http::Response<ureq::Body>) -> Result<Value, ApiError> {
    let (status, retry_after, text) = body_of(&mut resp)?;
    answer(status, retry_after, &text)
}

/// Status, `Retry-After` and body text of an answer.
fn body_of(
    resp: &mut ureq::http::Response<ureq::Body>,
) -> Result<(u16, Option<Duration>, String), ApiError> {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let text = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| ApiError::Transport(format!("reading the answer failed: {e}")))?;
    Ok((status, retry_after, text))
}

/// An answer's body on 2xx, the contract's error otherwise.
fn answer(status: u16, retry_after: Option<Duration>, text: &str) -> Result<Value, ApiError> {
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    if (200..300).contains(&status) {
        return parsed.ok_or_else(|| ApiError::Server {
            status,
            code: "invalid_response".into(),
            message: "the server's answer was not JSON".into(),
            error: Value::Null,
            retry_after,
        });
    }
    let error = parsed
        .as_ref()
        .map(|v| v["error"].clone())
        .filter(|e| e["code"].is_string())
        .unwrap_or(Value::Null);
    let code = error["code"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("http_{status}"));
    let message = error["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| text.chars().take(200).collect());
    Err(ApiError::Server {
        status,
        code,
        message,
        error,
        retry_after,
    })
}
