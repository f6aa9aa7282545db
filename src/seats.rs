//! The seat service: what every front end calls to change seats and keys.
//!
//! The session API, the admin API, the dashboard, the control socket (the
//! CLI beside a running server) and the sweep each end sessions and change
//! keys. What follows such a change is the same whoever asked: the log
//! line an operator greps for, and the metrics. They are written once,
//! here: [`Seats`] runs a change on the blocking pool
//! ([`crate::store::blocking`]) and then records it; callers already on a
//! blocking thread (the control socket) call the `record_*` functions
//! after the store.
//!
//! Nothing here decides anything: the rules are in [`crate::rules`], the
//! store applies them, and this module only reports what happened.

use std::sync::Arc;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::input::printable;
use crate::keys::AccessKey;
use crate::model::{Actor, EndReason, KeyStatus, Session};
use crate::rules::Timing;
use crate::store::{
    blocking, CreatedKey, EndOutcome, KeyChange, KeyPatch, NewKey, StartOutcome, StartRequest,
    Storage,
};

/// Who asked for a key change, for its log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The admin API.
    Api,
    /// The web dashboard.
    Dashboard,
    /// The command line, through the control socket.
    Cli,
}

impl Via {
    fn suffix(self) -> &'static str {
        match self {
            Via::Api => "",
            Via::Dashboard => " (dashboard)",
            Via::Cli => " (cli)",
        }
    }
}

/// A store with the side effects of its changes. Cheap to clone.
#[derive(Clone)]
pub struct Seats {
    store: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
}

impl Seats {
    /// The service over `store`, reading `clock` when each change runs (on
    /// the blocking thread, so a change queued behind others is decided at
    /// the time it is made).
    pub fn new(store: Arc<dyn Storage>, clock: Arc<dyn Clock>) -> Self {
        Seats { store, clock }
    }

    /// Takes a seat: `start_session`, then the start's log line and counts.
    pub async fn start(&self, req: StartRequest, timing: Timing) -> Result<StartOutcome> {
        let (store, clock) = self.parts();
        let outcome = blocking(move || {
            let result = store.start_session(&req, clock.now(), timing);
            if let Err(Error::SeatsFull { .. }) = &result {
                tracing::info!(key = %req.key.prefix(), device = req.device_name.as_deref().unwrap_or("-"),
                    "start rejected: all seats in use");
            }
            result
        })
        .await?;
        record_start(&outcome);
        Ok(outcome)
    }

    /// Gives a seat back (the app's `end`).
    pub async fn end(
        &self,
        key: AccessKey,
        session_id: String,
        actor: Actor,
    ) -> Result<EndOutcome> {
        let (store, clock) = self.parts();
        let outcome =
            blocking(move || store.end_session(&key, &session_id, clock.now(), &actor)).await?;
        record_end(&outcome, EndReason::Ended);
        Ok(outcome)
    }

    /// Ends a session for an admin (reason `revoked`).
    pub async fn kick(&self, session_id: String, actor: Actor) -> Result<EndOutcome> {
        let (store, clock) = self.parts();
        let outcome =
            blocking(move || store.kick_session(&session_id, clock.now(), &actor)).await?;
        record_end(&outcome, EndReason::Revoked);
        Ok(outcome)
    }

    /// Creates a key.
    pub async fn create_key(&self, new: NewKey, actor: Actor, via: Via) -> Result<CreatedKey> {
        let (store, clock) = self.parts();
        let created = blocking(move || store.create_key(&new, clock.now(), &actor)).await?;
        record_created(&created, via);
        Ok(created)
    }

    /// Changes a key; the sessions the change ends are logged as revoked.
    pub async fn update_key(
        &self,
        key_ref: String,
        patch: KeyPatch,
        actor: Actor,
        via: Via,
    ) -> Result<KeyChange> {
        let (store, clock) = self.parts();
        let verb = change_verb(&patch);
        let change =
            blocking(move || store.update_key(&key_ref, &patch, clock.now(), &actor)).await?;
        record_key_change(&change, verb, via);
        Ok(change)
    }

    /// Revokes a key for good, ending its live sessions.
    pub async fn revoke_key(&self, key_ref: String, actor: Actor, via: Via) -> Result<KeyChange> {
        let (store, clock) = self.parts();
        let change = blocking(move || store.revoke_key(&key_ref, clock.now(), &actor)).await?;
        record_key_change(&change, "revoked", via);
        Ok(change)
    }

    fn parts(&self) -> (Arc<dyn Storage>, Arc<dyn Clock>) {
        (self.store.clone(), self.clock.clone())
    }
}

/// After a start: counted (a retry of a live start is not a new one), the
/// sessions it found expired or superseded logged as ended, and one line
/// for the start itself.
pub fn record_start(outcome: &StartOutcome) {
    let s = &outcome.session;
    if !outcome.resumed {
        crate::metrics::global().session_started();
    }
    for ended in &outcome.expired {
        record_session_end(ended, EndReason::Expired);
    }
    for ended in &outcome.terminated {
        record_session_end(ended, EndReason::Superseded);
    }
    tracing::info!(
        key = %s.key_prefix,
        session = %s.session_id,
        device = s.device_name.as_deref().unwrap_or("-"),
        fence = s.fence,
        "session {}",
        if outcome.resumed { "start retried (same session)" } else { "started" }
    );
}

/// After an end or a kick: the session's end, when this call ended it.
pub fn record_end(outcome: &EndOutcome, reason: EndReason) {
    if let EndOutcome::Ended(s) = outcome {
        record_session_end(s, reason);
    }
}

/// After a key's creation.
pub fn record_created(created: &CreatedKey, via: Via) {
    let k = &created.key;
    tracing::info!(key = %k.prefix, key_id = %k.key_id, "key created{}", via.suffix());
}

/// What a patch does, for its log line: suspending and resuming are named,
/// anything else is an update.
pub fn change_verb(patch: &KeyPatch) -> &'static str {
    match patch.status {
        Some(KeyStatus::Suspended) => "suspended",
        Some(KeyStatus::Active) => "resumed",
        _ => "updated",
    }
}

/// After a key change: its line, and each session it ended (reason
/// `revoked`).
pub fn record_key_change(change: &KeyChange, verb: &str, via: Via) {
    let k = &change.key;
    tracing::info!(key = %k.prefix, key_id = %k.key_id, "key {verb}{}", via.suffix());
    for s in &change.ended {
        record_session_end(s, EndReason::Revoked);
    }
}

/// One session's end: counted by reason, and logged with its key prefix
/// (never the key), session and device.
pub fn record_session_end(session: &Session, reason: EndReason) {
    crate::metrics::global().session_ended(reason);
    tracing::info!(
        key = %session.key_prefix,
        session = %session.session_id,
        device = %printable(session.device_name.as_deref().unwrap_or("-")),
        reason = reason.as_str(),
        "session {}",
        reason.as_str()
    );
}
