//! The load the server is killed under: each worker starts sessions on
//! random keys, heartbeats and ends its own, creates and revokes keys and
//! kicks sessions, and records in the model what it was told.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::Rng;
use serde_json::json;

use crate::common::api::{Api, ApiErr};
use crate::model::{lock, reason_of, KeyRec, Model, SessRec, Shared};
use keyseat::model::{EndReason, KeyStatus};

/// A 5xx is only ever 503 `unavailable` with the JSON error shape.
fn check_5xx(m: &Shared, what: &str, e: &ApiErr) {
    if e.status >= 500 && !(e.status == 503 && e.code == "unavailable") {
        lock(m)
            .errors
            .push(format!("{what}: {e} (only 503 unavailable is allowed)"));
    }
}

/// Whether the key of session `id` had a revoke sent: another worker may
/// have revoked it since this one picked the session.
fn revoke_sent(m: &Model, id: &str) -> bool {
    m.sessions
        .get(id)
        .is_some_and(|s| m.keys[s.key].revoke_sent)
}

/// Records the answer (`ended`, `reason`) to an end or a kick (`kind`),
/// which ends a live session as `reason`.
fn record_end(
    m: &mut Model,
    kind: &'static str,
    reason: &str,
    id: String,
    answer: Result<(bool, Option<EndReason>), ApiErr>,
) {
    let revoked = revoke_sent(m, &id);
    match answer {
        Err(e) if revoked && e.status == 403 && e.code == "key_revoked" => {}
        Ok((true, _)) => {
            m.told_ended(&id, reason);
            m.ack(kind, id);
        }
        Ok((false, already)) => m.told_ended(&id, &reason_name(already)),
        Err(e) if e.status == 503 => {}
        Err(e) => m.errors.push(format!("{kind} {id}: {e}")),
    }
}

/// The name of an end reason, as the model records it.
fn reason_name(reason: Option<EndReason>) -> String {
    reason
        .and_then(|r| json!(r).as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

pub struct Load {
    pub api: Api,
    pub model: Shared,
    pub killed: Arc<AtomicBool>,
    pub iteration: usize,
    pub worker: usize,
    pub sent: Arc<AtomicUsize>,
}

impl Load {
    /// Sends; `None` when no answer came (unknown outcome), which is only
    /// allowed once the kill is under way.
    async fn go<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = Result<T, ApiErr>>,
    ) -> Option<Result<T, ApiErr>> {
        self.sent.fetch_add(1, Ordering::Relaxed);
        match call.await {
            Err(e) if e.no_answer() => {
                if !self.killed.load(Ordering::SeqCst) {
                    lock(&self.model)
                        .errors
                        .push(format!("{what}: connection failed before the kill: {e}"));
                }
                None
            }
            Err(e) => {
                check_5xx(&self.model, what, &e);
                Some(Err(e))
            }
            answer => Some(answer),
        }
    }

    pub async fn run(self, seed: u64) {
        let mut rng = <StdRng as rand::SeedableRng>::seed_from_u64(seed);
        let mut n = 0u64;
        while !self.killed.load(Ordering::SeqCst) {
            n += 1;
            let roll = rng.gen_range(0..100);
            let ok = match roll {
                0..=39 => self.start(&mut rng, n).await,
                40..=62 => self.heartbeat(&mut rng).await,
                63..=77 => self.end(&mut rng).await,
                78..=84 => self.create_key(&mut rng).await,
                85..=87 => self.revoke(&mut rng).await,
                _ => self.kick(&mut rng).await,
            };
            if !ok {
                return;
            }
        }
    }

    async fn start(&self, rng: &mut StdRng, n: u64) -> bool {
        let (k, access_key) = {
            let m = lock(&self.model);
            let k = rng.gen_range(0..m.keys.len());
            (k, m.keys[k].access_key.clone())
        };
        let id = format!("crash-{}-{}-{n}", self.iteration, self.worker);
        let device = format!("w{}", self.worker);
        let call = self.api.start(&access_key, Some(&id), Some(&device), None);
        let Some(answer) = self.go("start", call).await else {
            return false;
        };
        let mut m = lock(&self.model);
        match answer {
            Ok(a) => {
                if a.session_id != id || a.resumed {
                    m.errors
                        .push(format!("start {id}: unexpected answer {a:?}"));
                }
                m.sessions.insert(
                    id.clone(),
                    SessRec {
                        key: k,
                        fence: a.fence,
                        ended: None,
                        end_sent: false,
                        kick_sent: false,
                        owner: self.worker,
                    },
                );
                for t in &a.terminated_sessions {
                    m.told_ended(&t.session_id, "superseded");
                }
                m.ack("start", id);
            }
            Err(e) => match (e.status, e.code.as_str()) {
                (409, "seats_full") | (403, "key_revoked") | (503, _) => {}
                _ if m.keys[k].revoke_sent && e.status == 403 => {}
                _ => m.errors.push(format!("start {id}: {e}")),
            },
        }
        true
    }

    /// A live session of this worker's, if any.
    fn own_live(&self, rng: &mut StdRng) -> Option<(String, String)> {
        let m = lock(&self.model);
        let mine: Vec<_> = m
            .sessions
            .iter()
            .filter(|(_, s)| s.owner == self.worker && s.ended.is_none() && !s.end_sent)
            .filter(|(_, s)| !m.keys[s.key].revoke_sent)
            .map(|(id, s)| (id.clone(), m.keys[s.key].access_key.clone()))
            .collect();
        if mine.is_empty() {
            None
        } else {
            Some(mine[rng.gen_range(0..mine.len())].clone())
        }
    }

    async fn heartbeat(&self, rng: &mut StdRng) -> bool {
        let Some((id, key)) = self.own_live(rng) else {
            return true;
        };
        let Some(answer) = self.go("heartbeat", self.api.heartbeat(&key, &id)).await else {
            return false;
        };
        let mut m = lock(&self.model);
        let revoked = revoke_sent(&m, &id);
        let Err(e) = answer else {
            return true;
        };
        match (e.status, reason_of(&e.code)) {
            (503, _) => {}
            (403, _) if revoked && e.code == "key_revoked" => {}
            (409 | 410, Some(reason)) => m.told_ended(&id, reason),
            _ => m.errors.push(format!("heartbeat {id}: {e}")),
        }
        true
    }

    async fn end(&self, rng: &mut StdRng) -> bool {
        let Some((id, key)) = self.own_live(rng) else {
            return true;
        };
        if let Some(s) = lock(&self.model).sessions.get_mut(&id) {
            s.end_sent = true;
        }
        let Some(answer) = self.go("end", self.api.end(&key, &id)).await else {
            return false;
        };
        let answer = answer.map(|a| (a.ended, a.reason));
        record_end(&mut lock(&self.model), "end", "ended", id, answer);
        true
    }

    async fn create_key(&self, rng: &mut StdRng) -> bool {
        let max = rng.gen_range(1..=3usize);
        let policy = if rng.gen_bool(0.5) {
            "takeover"
        } else {
            "reject"
        };
        let body = json!({"max_sessions": max, "on_conflict": policy});
        let Some(answer) = self.go("create key", self.api.create_key(body)).await else {
            return false;
        };
        let mut m = lock(&self.model);
        match answer {
            Ok(created) => {
                let rec = KeyRec {
                    access_key: created.access_key,
                    key_id: created.key.key_id,
                    max,
                    revoke_sent: false,
                    revoked: false,
                };
                let what = rec.key_id.clone();
                m.keys.push(rec);
                m.ack("create key", what);
            }
            Err(e) if e.status == 503 => {}
            Err(e) => m.errors.push(format!("create key: {e}")),
        }
        true
    }

    async fn revoke(&self, rng: &mut StdRng) -> bool {
        let key_id = {
            let mut m = lock(&self.model);
            // The first keys stay usable for the start-up probes.
            let candidates: Vec<usize> = (2..m.keys.len())
                .filter(|&k| !m.keys[k].revoke_sent)
                .collect();
            if candidates.len() < 4 {
                return true;
            }
            let k = candidates[rng.gen_range(0..candidates.len())];
            m.keys[k].revoke_sent = true;
            m.keys[k].key_id.clone()
        };
        let Some(answer) = self.go("revoke", self.api.revoke_key(&key_id)).await else {
            return false;
        };
        let mut m = lock(&self.model);
        match answer {
            Ok(key) if key.status == KeyStatus::Revoked => {
                if let Some(k) = m.keys.iter_mut().find(|k| k.key_id == key_id) {
                    k.revoked = true;
                }
                m.ack("revoke", key_id);
            }
            Err(e) if e.status == 503 => {}
            Ok(key) => m
                .errors
                .push(format!("revoke {key_id}: 200 {}", json!(key))),
            Err(e) => m.errors.push(format!("revoke {key_id}: {e}")),
        }
        true
    }

    async fn kick(&self, rng: &mut StdRng) -> bool {
        let id = {
            let mut m = lock(&self.model);
            let live: Vec<String> = m
                .sessions
                .iter()
                .filter(|(_, s)| s.ended.is_none() && !s.end_sent)
                .map(|(id, _)| id.clone())
                .collect();
            if live.is_empty() {
                return true;
            }
            let id = live[rng.gen_range(0..live.len())].clone();
            if let Some(s) = m.sessions.get_mut(&id) {
                s.kick_sent = true;
            }
            id
        };
        let Some(answer) = self.go("kick", self.api.kick(&id)).await else {
            return false;
        };
        let answer = answer.map(|a| (a.ended, a.reason));
        record_end(&mut lock(&self.model), "kick", "revoked", id, answer);
        true
    }
}
