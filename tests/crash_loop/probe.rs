//! The checks with the server up again: probes while it starts (every
//! answer right or 503 `unavailable`), then everything the last iteration
//! acknowledged, over HTTP.

use std::collections::HashMap;
use std::fmt::Debug;
use std::time::{Duration, Instant};

use keyseat::wire::HealthStatus;
use serde_json::json;

use crate::common::api::{Answered, ApiErr};
use crate::model::{lock, reason_of, KeyRec, Model, Shared};
use crate::{log_text, Proc};

/// An answer as status, error code (empty on success) and how to show it;
/// panics when no answer came.
fn seen<T: Debug>(answer: Result<T, ApiErr>) -> (u16, String, String) {
    match answer {
        Ok(a) => (200, String::new(), format!("200 {a:?}")),
        Err(e) => {
            assert!(!e.no_answer(), "{e}");
            (e.status, e.code.clone(), e.to_string())
        }
    }
}

/// Probes the starting server until it is ready: every answer must be the
/// right one or 503 `unavailable`. Returns how many 503s it saw.
pub async fn probe_start_up(p: &mut Proc, m: &Model) -> usize {
    let api = p.api().with_timeout(Duration::from_secs(20));
    let good = m.keys[0].access_key.clone();
    let revoked = m.keys.iter().find(|k| k.revoked).cloned();
    let ended = m
        .sessions
        .iter()
        .find(|(_, s)| s.ended.as_deref() == Some("ended") && !m.keys[s.key].revoke_sent)
        .map(|(id, s)| (id.clone(), m.keys[s.key].access_key.clone()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut unavailable = 0;
    loop {
        if let Some(status) = p.child.try_wait().unwrap() {
            panic!(
                "the server exited while starting ({status}):\n{}",
                log_text(&p.log)
            );
        }
        assert!(Instant::now() < deadline, "the server never became ready");
        let health = api.health().await;
        if matches!(&health, Err(e) if e.no_answer()) {
            // Not listening yet.
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        let mut answers = vec![(
            "status of a good key",
            seen(api.status(&good).await),
            200,
            "",
        )];
        if let Some(k) = &revoked {
            let status = seen(api.status(&k.access_key).await);
            answers.push(("status of a revoked key", status, 403, "key_revoked"));
        }
        if let Some((id, key)) = &ended {
            let beat = seen(api.heartbeat(key, id).await);
            answers.push(("heartbeat of an ended session", beat, 410, "session_ended"));
        }
        match &health {
            // /health has its own shape (docs/api.md, "Before ready").
            Err(e) if e.status == 503 => {
                assert_eq!(e.body["status"], "starting", "health while starting: {e}");
                unavailable += 1;
            }
            Err(e) => panic!("health: {e}"),
            Ok(h) => assert_eq!(h.status, HealthStatus::Ok, "health: {h:?}"),
        }
        for (what, (status, code, shown), want, want_code) in &answers {
            if *status == 503 {
                assert_eq!(code, "unavailable", "{what} while starting: {shown}");
                unavailable += 1;
            } else {
                assert_eq!(*status, *want, "{what} while starting: {shown}");
                assert_eq!(code, want_code, "{what} while starting: {shown}");
            }
        }
        if health.is_ok() {
            return unavailable;
        }
    }
}

/// Re-checks over HTTP what the last iteration acknowledged; returns the
/// number of checks.
pub async fn check_over_http(p: &Proc, m: &Model) -> usize {
    let api = p.api();
    let mut checked = 0;
    for (kind, what) in &m.recent {
        match *kind {
            "start" | "end" | "kick" => {
                let s = &m.sessions[what];
                let key = &m.keys[s.key];
                let (status, c, shown) = seen(api.heartbeat(&key.access_key, what).await);
                let ok = match (&s.ended, status) {
                    _ if key.revoke_sent && status == 403 && c == "key_revoked" => true,
                    _ if key.revoked => false,
                    (Some(r), 409 | 410) => reason_of(&c) == Some(r.as_str()),
                    (Some(_), _) => false,
                    (None, 200) => true,
                    (None, 409) => c == "session_superseded",
                    (None, 410) => {
                        (c == "session_ended" && s.end_sent)
                            || (c == "session_revoked" && (s.kick_sent || key.revoke_sent))
                    }
                    (None, _) => false,
                };
                assert!(
                    ok,
                    "{kind} of {what} (told {:?}, end sent {}, kick sent {}, key revoke sent {}) \
                     after restart: heartbeat {shown}",
                    s.ended, s.end_sent, s.kick_sent, key.revoke_sent
                );
            }
            "create key" | "revoke" => {
                let key = m.keys.iter().find(|k| &k.key_id == what).unwrap();
                let answer = api.status(&key.access_key).await;
                let max = answer.as_ref().map(|a| a.max_sessions as usize).ok();
                let (status, c, shown) = seen(answer);
                if key.revoked {
                    assert_eq!(
                        (status, c.as_str()),
                        (403, "key_revoked"),
                        "{what}: {shown}"
                    );
                } else if !(key.revoke_sent && status == 403 && c == "key_revoked") {
                    assert_eq!(status, 200, "created key {what} after restart: {shown}");
                    assert_eq!(max, Some(key.max), "{what}: {shown}");
                }
            }
            _ => unreachable!(),
        }
        checked += 1;
    }
    // Live sessions per key within the seat limit.
    let list = api.sessions("").await.answer("sessions");
    let mut per_key: HashMap<String, usize> = HashMap::new();
    for s in list.sessions {
        *per_key.entry(s.key_id).or_default() += 1;
    }
    for (key_id, n) in per_key {
        if let Some(k) = m.keys.iter().find(|k| k.key_id == key_id) {
            assert!(n <= k.max, "{key_id}: {n} live sessions on {} seats", k.max);
        }
    }
    checked
}

/// The keys the first iteration starts with, one of each kind.
pub async fn create_initial_keys(p: &Proc, m: &Shared) {
    let api = p.api();
    for (max, policy) in [
        (1, "takeover"),
        (1, "reject"),
        (3, "takeover"),
        (2, "reject"),
        (1, "takeover"),
        (3, "reject"),
    ] {
        let body = json!({"max_sessions": max, "on_conflict": policy});
        let created = api.create_key(body).await.answer("create key");
        let mut m = lock(m);
        let key_id = created.key.key_id;
        m.keys.push(KeyRec {
            access_key: created.access_key,
            key_id: key_id.clone(),
            max,
            revoke_sent: false,
            revoked: false,
        });
        m.ack("create key", key_id);
    }
}
