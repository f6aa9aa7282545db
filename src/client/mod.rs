//! The device side: what a vendor puts in their app.
//!
//! A blocking API (no async runtime needed) whose heartbeats run on a
//! background thread:
//!
//! ```no_run
//! use keyseat::client::{Client, LostReason};
//!
//! let client = Client::new("https://licenses.example.com", "ks_…")?
//!     .device_name("Ana's laptop");
//! let session = client.start()?;
//! if session.info().previous_session_terminated {
//!     println!("Previous session on another device was disconnected");
//! }
//! session.on_lost(|reason: LostReason| eprintln!("licence lost: {reason}"));
//! // … the app runs; `session.state()` can be polled at any time …
//! session.end()?;
//! # Ok::<(), keyseat::client::ClientError>(())
//! ```
//!
//! What it gets right so the app does not have to:
//! - the start is retried with the same client-chosen session id, which the
//!   server treats as the same start, so a lost answer never costs a seat;
//! - heartbeats follow the interval the server returns; transient failures
//!   (no connection, timeouts, 5xx, 429 with `Retry-After`) are retried with
//!   backoff and jitter while the lease the server last granted lasts, so a
//!   server restart or short outage never loses the session; only when the
//!   lease runs out is it lost as [`LostReason::Unreachable`];
//! - a terminal answer (superseded, expired, ended, revoked, key refused)
//!   stops the heartbeats at once and reaches the app through
//!   [`Session::on_lost`], [`Session::wait_lost`] and [`Session::state`];
//! - [`Session::end`] and dropping the session end it on the server without
//!   waiting for a heartbeat interval to pass.

mod api;
mod fingerprint;

pub use api::{Api, ApiError};
pub use fingerprint::machine_fingerprint;

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::Value;

use crate::keys::AccessKey;
use crate::wire::StartAnswer;

/// Default time budget of one HTTP call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long dropping a session waits for its `end` call.
const DROP_END_TIMEOUT: Duration = Duration::from_secs(2);
/// First retry delay after a failed heartbeat; doubles per failure.
const FIRST_RETRY: Duration = Duration::from_millis(500);

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// The access key is malformed (checked locally, no request sent).
    #[error("the access key is not valid: {0}")]
    InvalidKeyFormat(String),
    /// The server URL or another setting is unusable.
    #[error("{0}")]
    Config(String),
    /// The server refused (a contract error code such as `invalid_key`,
    /// `key_revoked`, `seats_full`).
    #[error("{status} {code}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The contract's error code.
        code: String,
        /// The server's message.
        message: String,
    },
    /// No usable answer from the server after retrying.
    #[error("server unreachable: {0}")]
    Unreachable(String),
}

impl From<ApiError> for ClientError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Transport(msg) => ClientError::Unreachable(msg),
            ApiError::Server {
                status,
                code,
                message,
                ..
            } if status >= 500 => ClientError::Unreachable(format!("{status} {code}: {message}")),
            ApiError::Server {
                status,
                code,
                message,
                ..
            } => ClientError::Refused {
                status,
                code,
                message,
            },
        }
    }
}

/// Why a session is no longer usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LostReason {
    /// Another device started with the same key and took this seat.
    Superseded {
        /// That device's name, if it gave one.
        by_device: Option<String>,
        /// When it started (RFC 3339, server time).
        at: Option<String>,
    },
    /// The server had no heartbeat for a whole timeout.
    Expired,
    /// The session was ended by another call (e.g. another process).
    Ended,
    /// An administrator ended the session.
    Revoked,
    /// The key was refused: `key_revoked`, `key_suspended`, `key_expired`
    /// or `invalid_key`.
    KeyRefused {
        /// The contract's error code.
        code: String,
        /// The server's message.
        message: String,
    },
    /// The server does not know the session (history pruned, or another
    /// server).
    NotFound,
    /// No answer from the server until the lease it last granted ran out.
    Unreachable {
        /// The last transport error.
        last_error: String,
    },
    /// Another refusal the client does not expect (a bug on either side).
    Rejected {
        /// The contract's error code.
        code: String,
        /// The server's message.
        message: String,
    },
}

impl std::fmt::Display for LostReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LostReason::Superseded {
                by_device: Some(d), ..
            } => {
                write!(
                    f,
                    "superseded: device \"{d}\" started with the same access key"
                )
            }
            LostReason::Superseded {
                by_device: None, ..
            } => {
                write!(
                    f,
                    "superseded: another device started with the same access key"
                )
            }
            LostReason::Expired => write!(f, "expired: the server missed this device's heartbeats"),
            LostReason::Ended => write!(f, "ended elsewhere"),
            LostReason::Revoked => write!(f, "revoked by an administrator"),
            LostReason::KeyRefused { code, message } => {
                write!(f, "key refused ({code}): {message}")
            }
            LostReason::NotFound => write!(f, "the server no longer knows this session"),
            LostReason::Unreachable { last_error } => {
                write!(f, "unreachable: no answer from the server before the lease ran out ({last_error})")
            }
            LostReason::Rejected { code, message } => write!(f, "rejected ({code}): {message}"),
        }
    }
}

impl LostReason {
    /// The reason for a terminal (non-transient) error answer.
    fn from_refusal(code: &str, message: &str, error: &Value) -> LostReason {
        match code {
            "session_superseded" => LostReason::Superseded {
                by_device: error["superseded_by"]["device_name"]
                    .as_str()
                    .map(str::to_owned),
                at: error["superseded_by"]["started_at"]
                    .as_str()
                    .map(str::to_owned),
            },
            "session_expired" => LostReason::Expired,
            "session_ended" => LostReason::Ended,
            "session_revoked" => LostReason::Revoked,
            "session_not_found" => LostReason::NotFound,
            "invalid_key" | "key_revoked" | "key_suspended" | "key_expired" => {
                LostReason::KeyRefused {
                    code: code.into(),
                    message: message.into(),
                }
            }
            _ => LostReason::Rejected {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}

/// What a session is doing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionState {
    /// Heartbeats are succeeding.
    Active,
    /// Heartbeats are failing transiently; the session is still valid
    /// until the lease runs out.
    Retrying {
        /// Failed attempts in a row.
        failed_attempts: u32,
        /// Time left on the lease.
        lease_left: Duration,
    },
    /// The session is over; the app should stop licensed work.
    Lost(LostReason),
    /// The app ended it.
    Ended,
}

/// Something the heartbeat thread noticed, for apps that show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// A heartbeat failed transiently and will be retried.
    HeartbeatFailed {
        /// Failed attempts in a row.
        attempt: u32,
        /// What went wrong.
        error: String,
        /// Time left on the lease.
        lease_left: Duration,
    },
    /// A heartbeat succeeded after failures.
    Recovered {
        /// How many attempts had failed.
        failed_attempts: u32,
    },
    /// The session was lost.
    Lost(LostReason),
}

/// A device whose session a start ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminatedDevice {
    /// Its session id.
    pub session_id: String,
    /// Its name, if it gave one.
    pub device_name: Option<String>,
    /// Its last heartbeat (RFC 3339, server time).
    pub last_heartbeat: Option<String>,
}

/// What the server said when the session started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartInfo {
    /// The session id.
    pub session_id: String,
    /// The fence: strictly increasing per key, so work from a superseded
    /// device can be told apart.
    pub fence: i64,
    /// Whether starting here ended another device's session.
    pub previous_session_terminated: bool,
    /// The sessions it ended.
    pub terminated: Vec<TerminatedDevice>,
    /// How often the server wants heartbeats.
    pub heartbeat_interval: Duration,
    /// How long the server keeps a silent session.
    pub session_timeout: Duration,
}

type EventHook = Arc<dyn Fn(&SessionEvent) + Send + Sync>;
type LostHook = Box<dyn FnOnce(LostReason) + Send>;

/// Connection settings for one access key. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    api: Api,
    access_key: String,
    device_name: Option<String>,
    fingerprint: Option<String>,
    start_attempts: u32,
    on_event: Option<EventHook>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.api.base())
            .field("key", &crate::keys::redact(&self.access_key))
            .field("device_name", &self.device_name)
            .finish()
    }
}

impl Client {
    /// A client for `server_url` and `access_key`. The key's checksum is
    /// checked here, so a typo fails at once without a request.
    pub fn new(server_url: &str, access_key: &str) -> Result<Client, ClientError> {
        let key = AccessKey::parse(access_key.trim())
            .map_err(|e| ClientError::InvalidKeyFormat(e.to_string()))?;
        Ok(Client {
            api: Api::new(server_url, DEFAULT_TIMEOUT).map_err(ClientError::Config)?,
            access_key: key.expose_secret().to_owned(),
            device_name: None,
            fingerprint: None,
            start_attempts: 3,
            on_event: None,
        })
    }

    /// The name shown to the other device when this one takes over, and to
    /// operators.
    pub fn device_name(mut self, name: impl Into<String>) -> Self {
        self.device_name = Some(name.into());
        self
    }

    /// A stable device fingerprint (see [`machine_fingerprint`]): lets the
    /// same device restart at once on a `reject`-policy key.
    pub fn fingerprint(mut self, fingerprint: impl Into<String>) -> Self {
        self.fingerprint = Some(fingerprint.into());
        self
    }

    /// The time budget of each HTTP call (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Result<Self, ClientError> {
        self.api = Api::new(self.api.base(), timeout).map_err(ClientError::Config)?;
        Ok(self)
    }

    /// How many times a start is tried on transient failures (default 3).
    pub fn start_attempts(mut self, attempts: u32) -> Self {
        self.start_attempts = attempts.max(1);
        self
    }

    /// A hook called from the heartbeat thread for every [`SessionEvent`]
    /// of sessions started after this call. Keep it quick; hand work to
    /// your UI thread.
    pub fn on_event(mut self, hook: impl Fn(&SessionEvent) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(hook));
        self
    }

    /// The low-level API, for calls this type does not wrap.
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// Starts a session and its heartbeat thread. Transient failures are
    /// retried with the same session id, which the server treats as the
    /// same start.
    pub fn start(&self) -> Result<Session, ClientError> {
        let session_id = uuid::Uuid::new_v4().to_string();
        let mut attempt = 0;
        let body = loop {
            attempt += 1;
            match self.api.start(
                &self.access_key,
                Some(&session_id),
                self.device_name.as_deref(),
                self.fingerprint.as_deref(),
            ) {
                Ok(body) => break body,
                Err(e) if e.is_transient() && attempt < self.start_attempts => {
                    std::thread::sleep(backoff(attempt, Duration::from_secs(5), retry_after(&e)));
                }
                Err(e) => return Err(e.into()),
            }
        };
        let info = parse_start(body);
        let shared = Arc::new(Shared {
            api: self.api.clone(),
            access_key: self.access_key.clone(),
            info: info.clone(),
            inner: Mutex::new(Inner {
                state: SessionState::Active,
                stop: false,
                interval: info.heartbeat_interval,
                lease_deadline: Instant::now() + info.session_timeout,
                on_lost: None,
            }),
            changed: Condvar::new(),
            on_event: self.on_event.clone(),
        });
        let worker = shared.clone();
        std::thread::Builder::new()
            .name("keyseat-heartbeat".into())
            .spawn(move || heartbeat_loop(worker))
            .map_err(|e| ClientError::Config(format!("cannot start the heartbeat thread: {e}")))?;
        Ok(Session {
            shared,
            finished: false,
        })
    }
}

fn parse_start(answer: StartAnswer) -> StartInfo {
    StartInfo {
        session_id: answer.session_id,
        fence: answer.fence,
        previous_session_terminated: answer.previous_session_terminated,
        terminated: answer
            .terminated_sessions
            .into_iter()
            .map(|t| TerminatedDevice {
                session_id: t.session_id,
                device_name: t.device_name,
                last_heartbeat: Some(t.last_heartbeat.to_string()),
            })
            .collect(),
        heartbeat_interval: Duration::from_secs(answer.heartbeat_interval_seconds.max(1)),
        session_timeout: Duration::from_secs(answer.session_timeout_seconds),
    }
}

fn retry_after(e: &ApiError) -> Option<Duration> {
    match e {
        ApiError::Server { retry_after, .. } => *retry_after,
        ApiError::Transport(_) => None,
    }
}

/// Exponential backoff with "equal jitter" (half fixed, half random), capped,
/// and never shorter than a server's `Retry-After`.
fn backoff(attempt: u32, cap: Duration, retry_after: Option<Duration>) -> Duration {
    let exp = FIRST_RETRY.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let base = exp.min(cap);
    let half = base / 2;
    let jitter = rand::thread_rng().gen_range(0..=half.as_millis() as u64);
    let delay = half + Duration::from_millis(jitter);
    retry_after.map_or(delay, |r| delay.max(r))
}

struct Shared {
    api: Api,
    access_key: String,
    info: StartInfo,
    inner: Mutex<Inner>,
    changed: Condvar,
    on_event: Option<EventHook>,
}

struct Inner {
    state: SessionState,
    stop: bool,
    interval: Duration,
    lease_deadline: Instant,
    on_lost: Option<LostHook>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, event: &SessionEvent) {
        if let Some(hook) = &self.on_event {
            hook(event);
        }
    }

    /// Records a loss (once) unless the app already ended the session.
    fn lose(&self, reason: LostReason) {
        let hook = {
            let mut inner = self.lock();
            if inner.stop || matches!(inner.state, SessionState::Lost(_) | SessionState::Ended) {
                return;
            }
            inner.state = SessionState::Lost(reason.clone());
            inner.stop = true;
            inner.on_lost.take()
        };
        self.changed.notify_all();
        self.emit(&SessionEvent::Lost(reason.clone()));
        if let Some(hook) = hook {
            hook(reason);
        }
    }
}

/// The heartbeat thread: sleeps an interval (woken at once by a stop),
/// heartbeats, retries transient failures within the lease, and reports a
/// terminal answer once.
fn heartbeat_loop(shared: Arc<Shared>) {
    let mut failures: u32 = 0;
    let mut wait = shared.lock().interval;
    loop {
        {
            let inner = shared.lock();
            let (inner, _) = shared
                .changed
                .wait_timeout_while(inner, wait, |i| !i.stop)
                .unwrap_or_else(|p| p.into_inner());
            if inner.stop {
                return;
            }
            if failures > 0 && Instant::now() >= inner.lease_deadline {
                drop(inner);
                let last_error = match shared.lock().state.clone() {
                    SessionState::Retrying { .. } => "heartbeats kept failing".to_owned(),
                    _ => "no answer".to_owned(),
                };
                shared.lose(LostReason::Unreachable { last_error });
                return;
            }
        }
        let sent_at = Instant::now();
        let lease_left = shared
            .lock()
            .lease_deadline
            .saturating_duration_since(sent_at);
        // A call never outlives the lease: past it the session is lost anyway.
        let budget = lease_left.max(Duration::from_millis(500));
        match shared
            .api
            .heartbeat(&shared.access_key, &shared.info.session_id, Some(budget))
        {
            Ok(body) => {
                let interval = Duration::from_secs(body.heartbeat_interval_seconds.max(1));
                {
                    let mut inner = shared.lock();
                    if inner.stop {
                        return;
                    }
                    inner.lease_deadline = sent_at + shared.info.session_timeout;
                    inner.interval = interval;
                    inner.state = SessionState::Active;
                }
                if failures > 0 {
                    shared.emit(&SessionEvent::Recovered {
                        failed_attempts: failures,
                    });
                }
                failures = 0;
                wait = interval;
            }
            Err(e) if e.is_transient() => {
                failures += 1;
                let (lease_left, interval) = {
                    let mut inner = shared.lock();
                    if inner.stop {
                        return;
                    }
                    let left = inner
                        .lease_deadline
                        .saturating_duration_since(Instant::now());
                    inner.state = SessionState::Retrying {
                        failed_attempts: failures,
                        lease_left: left,
                    };
                    (left, inner.interval)
                };
                if lease_left.is_zero() {
                    shared.lose(LostReason::Unreachable {
                        last_error: e.to_string(),
                    });
                    return;
                }
                shared.emit(&SessionEvent::HeartbeatFailed {
                    attempt: failures,
                    error: e.to_string(),
                    lease_left,
                });
                // Retry sooner than the interval, but never past the lease.
                wait = backoff(failures, interval, retry_after(&e)).min(lease_left);
            }
            Err(ApiError::Server {
                code,
                message,
                error,
                ..
            }) => {
                shared.lose(LostReason::from_refusal(&code, &message, &error));
                return;
            }
            Err(ApiError::Transport(_)) => unreachable!("transport errors are transient"),
        }
    }
}

/// A live session. Ends itself on the server when dropped.
pub struct Session {
    shared: Arc<Shared>,
    finished: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("session_id", &self.shared.info.session_id)
            .field("fence", &self.shared.info.fence)
            .field("state", &self.state())
            .finish()
    }
}

impl Session {
    /// What the server said at the start.
    pub fn info(&self) -> &StartInfo {
        &self.shared.info
    }

    /// The session id.
    pub fn id(&self) -> &str {
        &self.shared.info.session_id
    }

    /// The fence (strictly increasing per key).
    pub fn fence(&self) -> i64 {
        self.shared.info.fence
    }

    /// The state now.
    pub fn state(&self) -> SessionState {
        self.shared.lock().state.clone()
    }

    /// Whether licensed work may continue (active, or retrying within the
    /// lease).
    pub fn is_usable(&self) -> bool {
        matches!(
            self.state(),
            SessionState::Active | SessionState::Retrying { .. }
        )
    }

    /// Calls `hook` once, from the heartbeat thread, when the session is
    /// lost (at once, on this thread, if it already is). Not called when the
    /// app ends the session itself.
    pub fn on_lost(&self, hook: impl FnOnce(LostReason) + Send + 'static) {
        let already = {
            let mut inner = self.shared.lock();
            match &inner.state {
                SessionState::Lost(reason) => Some(reason.clone()),
                _ => {
                    inner.on_lost = Some(Box::new(hook));
                    return;
                }
            }
        };
        if let Some(reason) = already {
            hook(reason);
        }
    }

    /// Blocks until the session is lost (returning why), the app ends it
    /// (`None`), or `timeout` passes (`None`; wait forever with `None`).
    pub fn wait_lost(&self, timeout: Option<Duration>) -> Option<LostReason> {
        let done = |i: &mut Inner| !matches!(i.state, SessionState::Lost(_) | SessionState::Ended);
        let inner = self.shared.lock();
        let inner = match timeout {
            Some(t) => {
                self.shared
                    .changed
                    .wait_timeout_while(inner, t, done)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
            None => self
                .shared
                .changed
                .wait_while(inner, done)
                .unwrap_or_else(|p| p.into_inner()),
        };
        match &inner.state {
            SessionState::Lost(reason) => Some(reason.clone()),
            _ => None,
        }
    }

    /// Ends the session: stops the heartbeats at once and tells the server.
    /// Returns whether the server still had it live (`false` if it had
    /// already ended, e.g. superseded).
    pub fn end(mut self) -> Result<bool, ClientError> {
        self.finished = true;
        self.finish(None)
    }

    fn finish(&self, timeout: Option<Duration>) -> Result<bool, ClientError> {
        let was_lost = {
            let mut inner = self.shared.lock();
            let lost = matches!(inner.state, SessionState::Lost(_));
            let ended = matches!(inner.state, SessionState::Ended);
            inner.stop = true;
            if !lost {
                inner.state = SessionState::Ended;
            }
            if ended {
                return Ok(false);
            }
            lost
        };
        self.shared.changed.notify_all();
        // A lost session may still be live on the server (unreachable):
        // ending it frees the seat as soon as the server is back.
        let result = self.shared.api.end(
            &self.shared.access_key,
            &self.shared.info.session_id,
            timeout,
        );
        match result {
            Ok(body) => Ok(body.ended),
            Err(_) if was_lost => Ok(false),
            Err(ApiError::Server { code, .. })
                if code.starts_with("key_")
                    || code == "invalid_key"
                    || code == "session_not_found" =>
            {
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.finish(Some(DROP_END_TIMEOUT));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_respects_retry_after() {
        let cap = Duration::from_secs(8);
        for attempt in 1..10 {
            let d = backoff(attempt, cap, None);
            let exp = FIRST_RETRY.saturating_mul(1 << (attempt - 1)).min(cap);
            assert!(d >= exp / 2 && d <= exp, "attempt {attempt}: {d:?}");
        }
        assert!(backoff(1, cap, Some(Duration::from_secs(3))) >= Duration::from_secs(3));
    }

    #[test]
    fn refusals_map_to_precise_reasons() {
        let e = serde_json::json!({"superseded_by": {"device_name": "B", "started_at": "t"}});
        assert_eq!(
            LostReason::from_refusal("session_superseded", "m", &e),
            LostReason::Superseded {
                by_device: Some("B".into()),
                at: Some("t".into())
            }
        );
        assert_eq!(
            LostReason::from_refusal("session_expired", "", &Value::Null),
            LostReason::Expired
        );
        assert!(matches!(
            LostReason::from_refusal("key_revoked", "", &Value::Null),
            LostReason::KeyRefused { .. }
        ));
    }

    #[test]
    fn a_typo_fails_locally() {
        assert!(matches!(
            Client::new("http://127.0.0.1:9", "ks_notakey"),
            Err(ClientError::InvalidKeyFormat(_))
        ));
        let key = AccessKey::generate();
        assert!(matches!(
            Client::new("ftp://x", key.expose_secret()),
            Err(ClientError::Config(_))
        ));
        let c = Client::new("http://127.0.0.1:9/", key.expose_secret()).unwrap();
        assert!(!format!("{c:?}").contains(&key.expose_secret()[11..]));
    }
}
