//! What every request handler can reach, the session and admin API's and
//! the dashboard's alike: the store (once it is open), the clock, the
//! timing, the admin token's digest and the rate limiters. It sits below
//! both [`crate::http`] and [`crate::dashboard`], so neither imports the
//! other for it.

use std::sync::{Arc, OnceLock};

use axum::extract::OriginalUri;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::clock::{Clock, Timestamp};
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::proxy::TrustedProxies;
use crate::ratelimit::{FailureLimiter, StartLimiter};
use crate::rules::Timing;
use crate::store::Storage;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    /// Set once the database is open and migrated; until then requests get
    /// 503 rather than a wrong answer.
    store: OnceLock<Arc<dyn Storage>>,
    clock: Arc<dyn Clock>,
    timing: Timing,
    /// SHA-256 of the admin token: compared in constant time with the
    /// digest of what a request presents, so neither length nor content
    /// leaks through timing.
    admin_token_digest: Option<[u8; 32]>,
    key_failures: FailureLimiter,
    admin_failures: FailureLimiter,
    starts_per_key: StartLimiter,
    trusted_proxies: TrustedProxies,
    /// Free slots for requests that need the database writer.
    write_slots: Arc<tokio::sync::Semaphore>,
    /// How long a client may take to send a request body.
    client_timeout: std::time::Duration,
    /// Whether `/metrics` is served on this (the main) listener.
    metrics_here: bool,
    /// The storage engine's name, for `/health`.
    backend: &'static str,
    /// The keys that sign answers (set once the store is open).
    signer: crate::signing::Signer,
    /// Heartbeats held until their session ends (`wait_seconds`).
    held: Arc<crate::held::Held>,
}

impl AppState {
    /// The storage engine: `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        self.inner.backend
    }

    /// State for a server with these settings, not yet ready.
    pub fn new(settings: &Settings, clock: Arc<dyn Clock>) -> Self {
        AppState {
            inner: Arc::new(Shared {
                store: OnceLock::new(),
                clock,
                timing: settings.timing(),
                admin_token_digest: settings
                    .admin_token
                    .as_ref()
                    .map(|t| Sha256::digest(t.expose().as_bytes()).into()),
                key_failures: FailureLimiter::new(
                    settings.rate_limits,
                    settings.failed_key_lookups_per_minute,
                ),
                admin_failures: FailureLimiter::new(
                    settings.rate_limits,
                    settings.admin_auth_failures_per_minute,
                ),
                starts_per_key: StartLimiter::new(
                    settings.rate_limits,
                    settings.starts_per_key_per_minute,
                ),
                trusted_proxies: settings.trusted_proxies.clone(),
                write_slots: Arc::new(tokio::sync::Semaphore::new(settings.max_pending_writes)),
                client_timeout: std::time::Duration::from_secs(settings.client_timeout_seconds),
                metrics_here: settings.metrics == crate::config::MetricsMode::Main,
                backend: settings.database.backend(),
                signer: crate::signing::Signer::default(),
                held: Arc::default(),
            }),
        }
    }

    /// Marks the server ready: requests are served from now on.
    pub fn set_ready(&self, store: Arc<dyn Storage>) {
        let held = self.inner.held.clone();
        store.on_session_end(Arc::new(move |ended: Option<&str>| match ended {
            Some(session_id) => held.ended(session_id),
            None => held.recheck_all(),
        }));
        let _ = self.inner.store.set(store);
    }

    /// Held heartbeats.
    pub fn held(&self) -> &Arc<crate::held::Held> {
        &self.inner.held
    }

    /// The store, or 503 while the server is still starting.
    pub(crate) fn store(&self) -> Result<Arc<dyn Storage>> {
        self.inner
            .store
            .get()
            .cloned()
            .ok_or_else(|| Error::Unavailable("the server is starting; retry shortly".into()))
    }

    /// The seat service over the store (503 while starting): changes with
    /// their log lines and counts.
    pub(crate) fn seats(&self) -> Result<crate::seats::Seats> {
        Ok(crate::seats::Seats::new(self.store()?, self.clock()))
    }

    /// The keys that sign answers.
    pub fn signer(&self) -> &crate::signing::Signer {
        &self.inner.signer
    }

    pub(crate) fn clock(&self) -> Arc<dyn Clock> {
        self.inner.clock.clone()
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    pub(crate) fn timing(&self) -> Timing {
        self.inner.timing
    }

    /// Whether an admin token is configured (the admin API and the
    /// dashboard exist only then).
    pub(crate) fn admin_enabled(&self) -> bool {
        self.inner.admin_token_digest.is_some()
    }

    /// The per-address limit on wrong admin tokens, shared by the admin API
    /// and the dashboard's sign-in.
    pub(crate) fn admin_failures(&self) -> &FailureLimiter {
        &self.inner.admin_failures
    }

    /// Whether `token` is the admin token: SHA-256 digests compared in
    /// constant time, so neither length nor content leaks through timing.
    /// Shared by the API's bearer check and the dashboard's sign-in.
    pub(crate) fn admin_token_matches(&self, token: &str) -> bool {
        let Some(expected) = self.inner.admin_token_digest else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        bool::from(digest.ct_eq(&expected))
    }

    /// The reverse proxies whose `X-Forwarded-For` is believed.
    pub(crate) fn trusted_proxies(&self) -> &TrustedProxies {
        &self.inner.trusted_proxies
    }

    /// The session API's limit on failed key lookups per address.
    pub(crate) fn key_failures(&self) -> &FailureLimiter {
        &self.inner.key_failures
    }

    /// The per-key limit on starts.
    pub(crate) fn starts_per_key(&self) -> &StartLimiter {
        &self.inner.starts_per_key
    }

    /// Free slots for requests that need the database writer.
    pub(crate) fn write_slots(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.inner.write_slots
    }

    /// How long a client may take to send a request body.
    pub(crate) fn client_timeout(&self) -> std::time::Duration {
        self.inner.client_timeout
    }

    /// Whether `/metrics` is served on this (the main) listener.
    pub(crate) fn metrics_here(&self) -> bool {
        self.inner.metrics_here
    }
}

/// A requested path as a 404 names it: the whole path the client asked for
/// (not a nested router's remainder), a key pasted into it cut to its
/// prefix.
pub(crate) fn shown_path(path: &str) -> String {
    crate::keys::redact_secret(path)
}

/// The 404 of the admin API and the dashboard when no admin token is set:
/// still 404 and nothing else about them, but it says how to turn them on.
pub(crate) fn admin_off(req: &axum::extract::Request) -> Error {
    let path = req
        .extensions()
        .get::<OriginalUri>()
        .map_or_else(|| req.uri().path(), |o| o.0.path());
    Error::NotFound(format!(
        "{} (the admin API and the dashboard are off: no admin_token is set)",
        shown_path(path)
    ))
}
