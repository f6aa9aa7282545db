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
//!   waiting for a heartbeat interval to pass;
//! - over `https://` the server's certificate is checked against the
//!   operating system's trust store (`SSL_CERT_FILE`/`SSL_CERT_DIR`
//!   honoured) and any CA added with [`Client::ca_file`]; a refused
//!   certificate is [`ClientError::Certificate`] (a start) or
//!   [`LostReason::Certificate`] (a running session, lost at once), named
//!   (unknown issuer, another name, expired) and never retried.

mod api;
mod borrow;
mod error;
mod fingerprint;
mod session;
mod tls;

pub use crate::lease_token::{LeaseClaims, LeaseTokenError};
pub use api::{Api, ApiError};
pub use borrow::{verify_lease_token, Borrowed};
pub use error::{ClientError, LostReason};
pub use fingerprint::machine_fingerprint;
pub use session::Session;
pub use tls::CertificateProblem;

use session::{backoff, retry_after};

use std::sync::Arc;
use std::time::Duration;

use crate::keys::AccessKey;
use crate::wire::StartAnswer;

/// Default time budget of one HTTP call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

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
    waiting: bool,
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
            waiting: true,
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

    /// Trusts the CA certificates in the PEM file at `path` besides the
    /// operating system's store: for a server whose certificate comes from
    /// a private CA. A missing file or one with no PEM certificate is a
    /// [`ClientError::Config`] naming it.
    pub fn ca_file(mut self, path: impl AsRef<std::path::Path>) -> Result<Self, ClientError> {
        self.api = self
            .api
            .trusting(path.as_ref())
            .map_err(ClientError::Config)?;
        Ok(self)
    }

    /// The time budget of each HTTP call (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Result<Self, ClientError> {
        self.api = self.api.retimed(timeout).map_err(ClientError::Config)?;
        Ok(self)
    }

    /// Pins the server's public signing key (the base64url text `keyseat
    /// signing-key show` prints): every answer must then be signed by it
    /// for this request and this key, or it is refused
    /// ([`ClientError::Untrusted`], [`LostReason::Untrusted`]). Call it
    /// again to accept a second key during a rotation.
    pub fn public_key(mut self, key: &str) -> Result<Self, ClientError> {
        let key = crate::signing::PinnedKey::parse(key).map_err(ClientError::Config)?;
        self.api = self.api.pin(key);
        Ok(self)
    }

    /// Whether heartbeats are held by the server until the next is due
    /// (default on: a takeover reaches [`Session::on_lost`] within
    /// milliseconds; docs/api.md, "Waiting heartbeat"). Off: one plain
    /// heartbeat per interval, as against servers before v1.1 (which the
    /// client also notices by itself).
    pub fn waiting_heartbeats(mut self, on: bool) -> Self {
        self.waiting = on;
        self
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
        let body = self.retried(|| {
            self.api.start(
                &self.access_key,
                Some(&session_id),
                self.device_name.as_deref(),
                self.fingerprint.as_deref(),
            )
        })?;
        let info = parse_start(body);
        Session::begin(
            self.api.clone(),
            self.access_key.clone(),
            info,
            self.on_event.clone(),
            self.waiting,
        )
    }
}

impl Client {
    /// Runs a start-like call (start, borrow) up to `start_attempts` times
    /// while it fails transiently, with backoff; the caller passes the same
    /// session id each time, so the server treats the tries as one.
    fn retried<T>(&self, mut call: impl FnMut() -> Result<T, ApiError>) -> Result<T, ClientError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match call() {
                Ok(answer) => return Ok(answer),
                Err(e) if e.is_transient() && attempt < self.start_attempts => {
                    std::thread::sleep(backoff(attempt, Duration::from_secs(5), retry_after(&e)));
                }
                Err(e) => return Err(e.into()),
            }
        }
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

#[cfg(test)]
mod tests {
    use super::session::FIRST_RETRY;
    use super::*;
    use serde_json::Value;

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

    /// Held heartbeats follow each other at once; a server that answers
    /// at once (before v1.1) gets one per interval, never a tight loop.
    #[test]
    fn the_timing_rules_match_the_other_clients() {
        use super::session::{held_for, next_wait};
        let interval = Duration::from_secs(30);
        assert_eq!(held_for(interval), 25);
        assert_eq!(held_for(Duration::from_secs(2)), 1);
        assert_eq!(held_for(Duration::from_secs(1)), 0);
        assert_eq!(
            next_wait(25, Duration::from_secs(25), interval),
            Duration::ZERO
        );
        // Woken early by the end is not a 200; a quick 200 is an old server.
        assert_eq!(next_wait(25, Duration::from_millis(40), interval), interval);
        assert_eq!(next_wait(0, Duration::from_millis(40), interval), interval);
        // The defaults (60 s lease, 10 s calls): 25 s holds, 15 s when the
        // lease left after a held one is shorter; none for a short lease.
        use super::session::hold_for;
        let (s, call) = (Duration::from_secs, Duration::from_secs(10));
        assert_eq!(hold_for(interval, s(60), call), 25);
        assert_eq!(hold_for(interval, s(35), call), 15);
        assert_eq!(hold_for(interval, s(45), call), 25);
        assert_eq!(hold_for(s(10), s(15), call), 0);
        assert_eq!(hold_for(s(2), s(10), s(3)), 1);
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

    /// Every one-character change of a key fails the local checksum check
    /// with the contract's sentences; `Client::new` sends nothing, so a
    /// typo never reaches a server (none listens on port 9 here).
    #[test]
    fn a_typo_is_refused_locally() {
        const BASE62: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let key = AccessKey::generate();
        let key = key.expose_secret();
        assert!(Client::new("http://127.0.0.1:9", &format!("  {key}\n")).is_ok());
        for i in 3..key.len() {
            for c in BASE62.chars().filter(|c| *c != key.as_bytes()[i] as char) {
                let typo = format!("{}{c}{}", &key[..i], &key[i + 1..]);
                match Client::new("http://127.0.0.1:9", &typo) {
                    Err(ClientError::InvalidKeyFormat(why)) => assert_eq!(
                        why, "the access key's checksum does not match (is there a typo?)",
                        "{typo}"
                    ),
                    other => panic!("{typo}: {other:?}"),
                }
            }
        }
        let short = Client::new("http://127.0.0.1:9", "ks_notakey").unwrap_err();
        assert_eq!(
            short.to_string(),
            "the access key is not valid: an access key is `ks_` followed by 38 letters and digits"
        );
    }
}
