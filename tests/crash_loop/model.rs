//! What the clients were told (acknowledged = a 2xx answer arrived): the
//! keys and sessions the checks compare the file and the restarted server
//! with.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct KeyRec {
    pub access_key: String,
    pub key_id: String,
    pub max: usize,
    /// A revoke was sent (answered or not).
    pub revoke_sent: bool,
    /// A revoke was acknowledged.
    pub revoked: bool,
}

#[derive(Debug, Clone)]
pub struct SessRec {
    pub key: usize,
    pub fence: i64,
    /// The end reason a client was told (acknowledged), if any.
    pub ended: Option<String>,
    pub end_sent: bool,
    pub kick_sent: bool,
    /// The worker that owns it (heartbeats and ends it).
    pub owner: usize,
}

#[derive(Default)]
pub struct Model {
    pub keys: Vec<KeyRec>,
    pub sessions: HashMap<String, SessRec>,
    /// Operations acknowledged, by kind.
    pub acked: HashMap<&'static str, usize>,
    /// Acknowledged operations of the current iteration (for the HTTP
    /// re-check after restart): (kind, session id or key index).
    pub recent: Vec<(&'static str, String)>,
    /// Wrong answers seen (the test fails on any).
    pub errors: Vec<String>,
}

impl Model {
    /// What a probe checks against: the keys, sessions and recent
    /// acknowledgements, without the counters and errors.
    pub fn snapshot(&self) -> Model {
        Model {
            keys: self.keys.clone(),
            sessions: self.sessions.clone(),
            recent: self.recent.clone(),
            ..Model::default()
        }
    }

    pub fn ack(&mut self, kind: &'static str, what: String) {
        *self.acked.entry(kind).or_default() += 1;
        self.recent.push((kind, what));
    }

    /// A client was told this session ended with `reason`; that is final.
    pub fn told_ended(&mut self, id: &str, reason: &str) {
        if let Some(s) = self.sessions.get_mut(id) {
            match &s.ended {
                Some(r) if r != reason => self.errors.push(format!(
                    "session {id} was reported ended as {r}, now as {reason}"
                )),
                Some(_) => {}
                None => s.ended = Some(reason.to_owned()),
            }
        }
    }
}

pub type Shared = Arc<Mutex<Model>>;

pub fn lock(m: &Shared) -> std::sync::MutexGuard<'_, Model> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn reason_of(code: &str) -> Option<&'static str> {
    Some(match code {
        "session_ended" => "ended",
        "session_superseded" => "superseded",
        "session_revoked" => "revoked",
        "session_expired" => "expired",
        _ => return None,
    })
}
