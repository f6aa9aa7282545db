//! A typed client of keyseat's HTTP API for the tests: one method per
//! route, sending the wire bodies ([`keyseat::wire`]) and parsing the wire
//! answers, so a test reads `answer.fence`, not `body["fence"]`.
//!
//! Anything but the route's documented success (an error of the contract,
//! a 503 from `/health` while starting, an answer that does not parse as
//! its wire type, or no answer at all) comes back as an [`ApiErr`] that
//! keeps the status, the code, the message, the `Retry-After` header and
//! the whole body, so a test can still look at `superseded_by` or
//! `reason`.

use std::fmt;
use std::time::Duration;

use keyseat::model::Key;
use keyseat::wire::{
    BorrowAnswer, BorrowBody, CreatedKey, DeviceBody, EndAnswer, EventPage, HealthAnswer,
    HeartbeatAnswer, KeyPage, KickAnswer, SessionBody, SessionList, StartAnswer, StartBody,
    StatusAnswer, StatusBody,
};
use reqwest::{Method, RequestBuilder};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// A server's API at `url`, with an admin token for the admin routes.
#[derive(Clone)]
pub struct Api {
    url: String,
    admin_token: Option<String>,
    http: reqwest::Client,
}

/// What came back instead of the answer asked for.
#[derive(Debug, Clone)]
pub struct ApiErr {
    /// The HTTP status; 0 when no answer arrived (refused, reset, timed
    /// out: `message` says which).
    pub status: u16,
    /// `error.code`; empty when the body has none.
    pub code: String,
    /// `error.message`, or what went wrong when the body has none.
    pub message: String,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// The whole body (`Null` when empty or not JSON).
    pub body: Value,
}

impl ApiErr {
    /// The `error` object, for its extra fields (`superseded_by`, `reason`,
    /// `max_sessions`).
    pub fn error(&self) -> &Value {
        &self.body["error"]
    }

    /// 503 `unavailable` with the contract's error shape.
    pub fn is_unavailable(&self) -> bool {
        self.status == 503 && self.code == "unavailable" && self.error()["message"].is_string()
    }

    /// No answer arrived: the connection failed or the request timed out.
    pub fn no_answer(&self) -> bool {
        self.status == 0
    }

    fn unanswered(e: reqwest::Error) -> ApiErr {
        ApiErr {
            status: 0,
            code: String::new(),
            message: format!("no answer: {e}"),
            retry_after: None,
            body: Value::Null,
        }
    }
}

impl fmt::Display for ApiErr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.no_answer() {
            write!(f, "{}", self.message)
        } else if self.body.is_null() {
            write!(f, "{} ({})", self.status, self.message)
        } else {
            write!(f, "{} {}", self.status, self.body)
        }
    }
}

impl Api {
    /// The API at `url` (`http://127.0.0.1:PORT`), without an admin token.
    pub fn new(url: &str) -> Api {
        Api {
            url: url.trim_end_matches('/').to_owned(),
            admin_token: None,
            http: reqwest::Client::new(),
        }
    }

    /// The same, sending `token` on the admin routes.
    pub fn with_admin(mut self, token: &str) -> Api {
        self.admin_token = Some(token.to_owned());
        self
    }

    /// The same, giving up on a request after `limit`.
    pub fn with_timeout(mut self, limit: Duration) -> Api {
        self.http = reqwest::Client::builder()
            .timeout(limit)
            .build()
            .expect("HTTP client");
        self
    }

    /// `GET /health`: 200 when ready; a 503 (body `{"status": "starting"}`
    /// or `"error"`) is an [`ApiErr`].
    pub async fn health(&self) -> Result<HealthAnswer, ApiErr> {
        self.call(self.request(Method::GET, "/health"), 200).await
    }

    /// `POST /api/session/start`; the device is sent when it has a name or
    /// a fingerprint.
    pub async fn start(
        &self,
        key: &str,
        session_id: Option<&str>,
        device_name: Option<&str>,
        fingerprint: Option<&str>,
    ) -> Result<StartAnswer, ApiErr> {
        let device = (device_name.is_some() || fingerprint.is_some()).then(|| DeviceBody {
            name: device_name.map(str::to_owned),
            fingerprint: fingerprint.map(str::to_owned),
        });
        let body = StartBody {
            access_key: key.to_owned(),
            session_id: session_id.map(str::to_owned),
            device,
            nonce: None,
        };
        self.post("/api/session/start", &body).await
    }

    /// `POST /api/session/borrow`; the device is sent as for a start.
    pub async fn borrow(
        &self,
        key: &str,
        session_id: Option<&str>,
        device_name: Option<&str>,
        fingerprint: Option<&str>,
        hours: u32,
    ) -> Result<BorrowAnswer, ApiErr> {
        let device = (device_name.is_some() || fingerprint.is_some()).then(|| DeviceBody {
            name: device_name.map(str::to_owned),
            fingerprint: fingerprint.map(str::to_owned),
        });
        let body = BorrowBody {
            access_key: key.to_owned(),
            session_id: session_id.map(str::to_owned),
            device,
            hours,
            nonce: None,
        };
        self.post("/api/session/borrow", &body).await
    }

    /// `POST /api/session/heartbeat`.
    pub async fn heartbeat(&self, key: &str, session_id: &str) -> Result<HeartbeatAnswer, ApiErr> {
        self.post("/api/session/heartbeat", &session_body(key, session_id))
            .await
    }

    /// `POST /api/session/end`.
    pub async fn end(&self, key: &str, session_id: &str) -> Result<EndAnswer, ApiErr> {
        self.post("/api/session/end", &session_body(key, session_id))
            .await
    }

    /// `POST /api/session/status`.
    pub async fn status(&self, key: &str) -> Result<StatusAnswer, ApiErr> {
        let body = StatusBody {
            access_key: key.to_owned(),
            nonce: None,
        };
        self.post("/api/session/status", &body).await
    }

    /// `POST /api/admin/keys` with `body` (`label`, `max_sessions`,
    /// `on_conflict`, `expires_at`); success is 201.
    pub async fn create_key(&self, body: Value) -> Result<CreatedKey, ApiErr> {
        let req = self.admin(Method::POST, "/api/admin/keys").json(&body);
        self.call(req, 201).await
    }

    /// `GET /api/admin/keys?{query}` (`limit`, `after`).
    pub async fn list_keys(&self, query: &str) -> Result<KeyPage, ApiErr> {
        let path = with_query("/api/admin/keys", query);
        self.call(self.admin(Method::GET, &path), 200).await
    }

    /// `GET /api/admin/keys/{key_id}`.
    pub async fn get_key(&self, key_id: &str) -> Result<Key, ApiErr> {
        let path = format!("/api/admin/keys/{key_id}");
        self.call(self.admin(Method::GET, &path), 200).await
    }

    /// `PATCH /api/admin/keys/{key_id}` with `body` (the fields to change).
    pub async fn patch_key(&self, key_id: &str, body: Value) -> Result<Key, ApiErr> {
        let path = format!("/api/admin/keys/{key_id}");
        let req = self.admin(Method::PATCH, &path).json(&body);
        self.call(req, 200).await
    }

    /// `POST /api/admin/keys/{key_id}/revoke`.
    pub async fn revoke_key(&self, key_id: &str) -> Result<Key, ApiErr> {
        let path = format!("/api/admin/keys/{key_id}/revoke");
        self.call(self.admin(Method::POST, &path), 200).await
    }

    /// `GET /api/admin/sessions?{query}` (`key_id`).
    pub async fn sessions(&self, query: &str) -> Result<SessionList, ApiErr> {
        let path = with_query("/api/admin/sessions", query);
        self.call(self.admin(Method::GET, &path), 200).await
    }

    /// `DELETE /api/admin/sessions/{session_id}`.
    pub async fn kick(&self, session_id: &str) -> Result<KickAnswer, ApiErr> {
        let path = format!("/api/admin/sessions/{session_id}");
        self.call(self.admin(Method::DELETE, &path), 200).await
    }

    /// `GET /api/admin/events?{query}` (`key_id`, `type`, `since`,
    /// `before`, `limit`).
    pub async fn events(&self, query: &str) -> Result<EventPage, ApiErr> {
        let path = with_query("/api/admin/events", query);
        self.call(self.admin(Method::GET, &path), 200).await
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.url))
    }

    fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self.request(method, path);
        match &self.admin_token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ApiErr> {
        self.call(self.request(Method::POST, path).json(body), 200)
            .await
    }

    /// Sends `req`; `want` is the route's success status.
    async fn call<T: DeserializeOwned>(&self, req: RequestBuilder, want: u16) -> Result<T, ApiErr> {
        let resp = req.send().await.map_err(ApiErr::unanswered)?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.text().await.map_err(ApiErr::unanswered)?;
        let parsed = if status == want {
            match serde_json::from_str::<T>(&text) {
                Ok(answer) => return Ok(answer),
                Err(e) => Some(format!(
                    "not a {}: {e}",
                    std::any::type_name::<T>().rsplit("::").next().unwrap_or("")
                )),
            }
        } else {
            None
        };
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let error = &body["error"];
        let field = |name: &str| error[name].as_str().unwrap_or("").to_owned();
        let message = match parsed {
            Some(why) => why,
            None if body.is_null() => format!("not JSON: {text}"),
            None => field("message"),
        };
        Err(ApiErr {
            status,
            code: field("code"),
            message,
            retry_after,
            body,
        })
    }
}

fn session_body(key: &str, session_id: &str) -> SessionBody {
    SessionBody {
        access_key: key.to_owned(),
        session_id: session_id.to_owned(),
        nonce: None,
    }
}

/// `.answer(what)`: the answer, or a panic with `what` and the status and
/// body that came instead (`unwrap` would show the error's fields).
pub trait Answered<T> {
    fn answer(self, what: &str) -> T;

    /// The error, asserted to be the contract's shape with `status` and
    /// `code` and a message (as [`super::assert_error`] checks).
    fn refused(self, status: u16, code: &str) -> ApiErr;
}

impl<T> Answered<T> for Result<T, ApiErr> {
    #[track_caller]
    fn answer(self, what: &str) -> T {
        self.unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    #[track_caller]
    fn refused(self, status: u16, code: &str) -> ApiErr {
        let Err(e) = self else {
            panic!("succeeded; expected {status} {code}");
        };
        assert_eq!(e.status, status, "status for {e}");
        assert_eq!(e.code, code, "code in {e}");
        assert!(e.error()["message"].is_string(), "message in {e}");
        assert!(!e.message.is_empty(), "message in {e}");
        e
    }
}

/// `path?query`, or `path` when the query is empty.
fn with_query(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}
