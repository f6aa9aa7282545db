//! One case against the real server: each op sent through the API client
//! and its answer compared with the model's, then the key's audit log.

use keyseat::clock::Timestamp;
use keyseat::model::Key;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};

use crate::common::api::{Api, ApiErr};
use crate::common::TestServer;
use crate::contract::{error, EndKind, KeyState, Model};
use crate::ops::Op;
use crate::view::{case_t0, differing, error_view, ms, ms_of, tally};
use crate::TIMEOUT_MS;

/// One case against the server: a new key, the ops in order, every answer
/// compared with the model's.
pub struct Run<'a> {
    pub server: &'a TestServer,
    pub api: Api,
    pub key: String,
    pub key_id: String,
    /// Unique per case, so client-chosen ids never collide across cases.
    pub tag: String,
    pub model: Model,
    /// What happened so far, printed with a failure.
    pub log: Vec<String>,
    /// The other key of this case, for `StartElsewhere`.
    pub other_key: String,
    /// Sessions started on the other key, in order, with their last
    /// heartbeat: with one seat and takeover only the latest can be live.
    pub elsewhere: Vec<(String, i64)>,
}

impl Run<'_> {
    /// Milliseconds since the case began, on the server's clock.
    pub fn now(&self) -> i64 {
        self.server.now().millis() - case_t0()
    }

    pub fn client_sid(&self, n: u8) -> String {
        format!("{}-sid{n}", self.tag)
    }

    /// The session id an op with `s` aims at; `other` allows the other
    /// key's latest session.
    pub fn target(&self, s: u8, other: bool) -> String {
        let n = self.model.sessions.len();
        if s == 6 && other {
            if let Some((id, _)) = self.elsewhere.last() {
                return id.clone();
            }
        }
        if s == 7 || n == 0 {
            format!("{}-never-started", self.tag)
        } else {
            self.model.sessions[usize::from(s) % n].sid.clone()
        }
    }

    pub fn fail(
        &self,
        i: usize,
        op: &Op,
        what: &str,
        expected: &Value,
        got: &Value,
    ) -> TestCaseError {
        TestCaseError::fail(format!(
            "op #{i} {op:?}{what}\n  expected: {expected}\n  got:      {got}\n  \
             differs in: {}\n  key now: {} seat(s), {}\n  \
             history (times in ms since the case began):\n    {}",
            differing(expected, got),
            self.model.seats,
            self.model.policy.as_str(),
            self.log.join("\n    ")
        ))
    }

    pub async fn patch(&self, body: Value) -> Result<Key, ApiErr> {
        self.api.patch_key(&self.key_id, body).await
    }

    /// The admin view of the key the model predicts after a key change.
    pub fn key_view(&self) -> Value {
        let status = match self.model.state {
            KeyState::Active => "active",
            KeyState::Suspended => "suspended",
            KeyState::Revoked => "revoked",
        };
        json!({
            "status": 200,
            "key_status": status,
            "max_sessions": self.model.seats,
            "on_conflict": self.model.policy.as_str(),
            "max_borrow_hours": self.model.max_borrow_hours,
            "live_sessions": self.model.live().len(),
        })
    }

    pub fn key_view_of(answer: &Result<Key, ApiErr>) -> Value {
        let key = match answer {
            Ok(key) => key,
            Err(e) => return error_view(e),
        };
        json!({
            "status": 200,
            "key_status": key.status,
            "max_sessions": key.max_sessions,
            "on_conflict": key.on_conflict,
            "max_borrow_hours": key.max_borrow_hours,
            "live_sessions": key.live_sessions,
        })
    }

    /// Runs op `i` and checks its answer.
    pub async fn step(&mut self, i: usize, op: &Op) -> Result<(), TestCaseError> {
        let now = self.now();
        self.model.expire(now);
        let (expected, got, what) = match *op {
            Op::Advance { ms } => {
                self.server.clock.advance_millis(ms);
                self.log.push(format!("#{i} {op:?}"));
                return Ok(());
            }
            Op::Start { device, sid, fp } => return self.start(i, op, device, sid, fp, None).await,
            Op::Borrow {
                device,
                sid,
                fp,
                hours,
            } => return self.start(i, op, device, sid, fp, Some(hours)).await,
            Op::SetBorrow(hours) => {
                let key = self.patch(json!({"max_borrow_hours": hours})).await;
                let expected = if self.model.state == KeyState::Revoked {
                    error(409, "conflict")
                } else {
                    self.model.max_borrow_hours = hours;
                    self.key_view()
                };
                (expected, Self::key_view_of(&key), String::new())
            }
            Op::StartElsewhere { sid } => {
                let id = self.client_sid(sid);
                let answer = self.api.start(&self.other_key, Some(&id), None, None).await;
                let got = match answer {
                    Ok(a) => {
                        json!({"status": 200, "session_id": a.session_id, "resumed": a.resumed})
                    }
                    Err(e) => error_view(&e),
                };
                let latest_live = self
                    .elsewhere
                    .last()
                    .is_some_and(|(last, hb)| *last == id && now - hb < TIMEOUT_MS);
                let expected = if self.model.find(&id).is_some() {
                    error(409, "session_id_taken")
                } else if latest_live {
                    if let Some(last) = self.elsewhere.last_mut() {
                        last.1 = now;
                    }
                    json!({"status": 200, "session_id": id, "resumed": true})
                } else if self.elsewhere.iter().any(|(used, _)| *used == id) {
                    error(409, "session_id_taken")
                } else {
                    self.elsewhere.push((id.clone(), now));
                    json!({"status": 200, "session_id": id, "resumed": false})
                };
                (expected, got, format!(" as {id}"))
            }
            Op::Heartbeat { s } => {
                let sid = self.target(s, true);
                let answer = self.api.heartbeat(&self.key, &sid).await;
                let expected = self.heartbeat_expect(&sid, now);
                let got = match answer {
                    Ok(a) => json!({"status": 200, "session_id": a.session_id, "fence": a.fence,
                           "last_heartbeat": ms_of(a.last_heartbeat),
                           "expires_at": ms_of(a.expires_at)}),
                    Err(e) => error_view(&e),
                };
                (expected, got, format!(" on {sid}"))
            }
            Op::End { s } => {
                let sid = self.target(s, true);
                let answer = self.api.end(&self.key, &sid).await;
                let expected = self.end_expect(&sid, EndKind::Ended, false, now);
                let got = match answer {
                    Ok(a) => json!({"status": 200, "ended": a.ended, "reason": a.reason}),
                    Err(e) => error_view(&e),
                };
                (expected, got, format!(" on {sid}"))
            }
            Op::Kick { s } => {
                let sid = self.target(s, false);
                let answer = self.api.kick(&sid).await;
                let expected = self.end_expect(&sid, EndKind::Revoked("kicked"), true, now);
                let got = match answer {
                    Ok(a) => json!({"status": 200, "ended": a.ended, "reason": a.reason}),
                    Err(e) => error_view(&e),
                };
                (expected, got, format!(" on {sid}"))
            }
            Op::Status => {
                let answer = self.api.status(&self.key).await;
                let expected = self.status_expect();
                let got = match &answer {
                    Ok(a) => {
                        let mut sessions: Vec<Value> = a
                            .sessions
                            .iter()
                            .map(|s| {
                                json!({"session_id": s.session_id, "fence": s.fence,
                               "device_name": s.device_name,
                               "started_at": ms_of(s.started_at),
                               "last_heartbeat": ms_of(s.last_heartbeat),
                               "expires_at": ms_of(s.expires_at),
                               "borrowed_until": s.borrowed_until.map(ms_of)})
                            })
                            .collect();
                        // "Oldest start first": a start's fence orders it.
                        let in_order = sessions.windows(2).all(|w| {
                            w[0]["started_at"].as_i64() <= w[1]["started_at"].as_i64()
                                && w[0]["fence"].as_i64() < w[1]["fence"].as_i64()
                        });
                        if !in_order {
                            sessions.push(json!("NOT OLDEST START FIRST"));
                        }
                        json!({"status": 200, "active": a.active,
                           "max_sessions": a.max_sessions,
                           "on_conflict": a.on_conflict, "sessions": sessions})
                    }
                    Err(e) => error_view(e),
                };
                // The admin view of the key agrees on the live count.
                if expected == got {
                    let key = self.api.get_key(&self.key_id).await;
                    let (kexp, kgot) = (self.key_view(), Self::key_view_of(&key));
                    if kexp != kgot {
                        return Err(self.fail(i, op, " (GET key after it)", &kexp, &kgot));
                    }
                }
                (expected, got, String::new())
            }
            Op::Revoke => {
                let key = self.api.revoke_key(&self.key_id).await;
                self.model.state = KeyState::Revoked;
                self.end_all_live(EndKind::Revoked("key_revoked"), now);
                (self.key_view(), Self::key_view_of(&key), String::new())
            }
            Op::SetSeats(n) => {
                let key = self.patch(json!({"max_sessions": n})).await;
                let expected = if self.model.state == KeyState::Revoked {
                    error(409, "conflict")
                } else {
                    self.model.seats = n;
                    let live = self.model.live();
                    let excess = live.len().saturating_sub(n as usize);
                    // Online sessions first: a borrowed one is ended last.
                    let (away, online): (Vec<usize>, Vec<usize>) = live
                        .iter()
                        .partition(|&&i| self.model.sessions[i].borrowed_at(now));
                    let mut order = self.model.victims_order(&online);
                    order.extend(self.model.victims_order(&away));
                    for v in order.into_iter().take(excess) {
                        self.model.sessions[v].end = Some(EndKind::Revoked("seat_limit_lowered"));
                        self.model.sessions[v].ended_at = now;
                    }
                    self.key_view()
                };
                (expected, Self::key_view_of(&key), String::new())
            }
            Op::SetPolicy(p) => {
                let key = self.patch(json!({"on_conflict": p.as_str()})).await;
                let expected = if self.model.state == KeyState::Revoked {
                    error(409, "conflict")
                } else {
                    self.model.policy = p;
                    self.key_view()
                };
                (expected, Self::key_view_of(&key), String::new())
            }
            Op::ExpireKey { .. } | Op::ClearExpiry => {
                let at = match *op {
                    Op::ExpireKey { in_ms } => Some(now + in_ms),
                    _ => None,
                };
                let wire = at.map(|x| Timestamp(x + case_t0()).to_rfc3339());
                let key = self.patch(json!({ "expires_at": wire })).await;
                let expected = if self.model.state == KeyState::Revoked {
                    error(409, "conflict")
                } else {
                    self.model.expires_at = at;
                    self.model.expiry_applied = false;
                    if at.is_some_and(|x| x <= now) {
                        // "A time already past ends every live session."
                        self.model.expiry_applied = true;
                        self.end_all_live(EndKind::Revoked("key_expired"), now);
                    }
                    self.key_view()
                };
                (expected, Self::key_view_of(&key), String::new())
            }
            Op::Suspend | Op::Resume => {
                let suspend = matches!(op, Op::Suspend);
                let key = self
                    .patch(json!({"status": if suspend { "suspended" } else { "active" }}))
                    .await;
                let expected = if self.model.state == KeyState::Revoked {
                    error(409, "conflict")
                } else {
                    if suspend {
                        self.model.state = KeyState::Suspended;
                        self.end_all_live(EndKind::Revoked("key_suspended"), now);
                    } else {
                        self.model.state = KeyState::Active;
                    }
                    self.key_view()
                };
                (expected, Self::key_view_of(&key), String::new())
            }
        };
        self.log.push(format!("#{i} {op:?}{what} -> {got}"));
        tally(op, &got);
        if expected != got {
            return Err(self.fail(i, op, &what, &expected, &got));
        }
        Ok(())
    }

    /// After the last op: the key's audit log holds exactly the events the
    /// model's history implies (every start with its fence and the sessions
    /// it superseded, every end with its reason, time and cause, every
    /// refused start), once the sweep has recorded the leases that ran out.
    pub async fn check_audit_log(&mut self) -> Result<(), TestCaseError> {
        // The sweep files leases by the whole second they end in and takes
        // a second once it is wholly past: at a whole second it records
        // every lease that has run out.
        let into_second = self.server.now().millis().rem_euclid(1000);
        if into_second != 0 {
            self.server.clock.advance_millis(1000 - into_second);
        }
        let now = self.now();
        self.model.expire(now);
        let store = self.server.store();
        let at = self.server.now();
        keyseat::store::blocking(move || store.sweep(at, 30, false))
            .await
            .map_err(|e| TestCaseError::fail(format!("sweep failed: {e}")))?;
        let query = format!("key_id={}&limit=1000", self.key_id);
        let page = match self.api.events(&query).await {
            Ok(page) => page,
            Err(e) => return Err(TestCaseError::fail(format!("events: {e}"))),
        };
        let mut got: Vec<Value> = page
            .events
            .iter()
            .filter_map(|e| {
                let d = e.detail.clone().unwrap_or_default();
                let (kind, sid, at) = (json!(e.event_type), json!(e.session_id), ms_of(e.at));
                Some(match kind.as_str()? {
                    "session_started" => json!({"type": kind, "session_id": sid, "at": at,
                        "device_name": e.device_name, "fence": d["fence"],
                        "terminated": d["terminated"]}),
                    "session_superseded" => json!({"type": kind, "session_id": sid, "at": at,
                        "superseded_by": d["superseded_by"], "by_device_name": d["by_device_name"]}),
                    // Recorded by the sweep that notices it, so timed then.
                    "session_revoked" if d["cause"] == "key_expired" => {
                        json!({"type": kind, "session_id": sid, "cause": d["cause"]})
                    }
                    "session_revoked" => json!({"type": kind, "session_id": sid, "at": at,
                        "cause": d["cause"]}),
                    "session_ended" | "session_expired" => {
                        json!({"type": kind, "session_id": sid, "at": at})
                    }
                    "start_rejected" => json!({"type": kind}),
                    "session_borrowed" => json!({"type": kind, "session_id": sid, "at": at,
                        "fence": d["fence"], "borrowed_until": ms(&d["borrowed_until"])}),
                    _ => return None,
                })
            })
            .collect();
        let sessions = &self.model.sessions;
        let mut expected: Vec<Value> = vec![json!({"type": "start_rejected"}); self.model.rejected];
        expected.extend(self.model.borrows.iter().map(|b| {
            json!({"type": "session_borrowed", "session_id": b.sid, "at": b.at,
                   "fence": b.fence, "borrowed_until": b.until})
        }));
        for (i, s) in sessions.iter().enumerate() {
            let terminated: Vec<&str> = sessions
                .iter()
                .filter(|t| matches!(t.end, Some(EndKind::Superseded { by, .. }) if by == i))
                .map(|t| t.sid.as_str())
                .collect();
            expected.push(json!({"type": "session_started", "session_id": s.sid,
                "at": s.started_at, "device_name": s.device.name(), "fence": s.fence,
                "terminated": terminated}));
            let (sid, at) = (&s.sid, s.ended_at);
            expected.extend(s.end.map(|end| match end {
                EndKind::Ended => json!({"type": "session_ended", "session_id": sid, "at": at}),
                EndKind::Expired => json!({"type": "session_expired", "session_id": sid, "at": at}),
                EndKind::Superseded { by, by_device, .. } => json!({"type": "session_superseded",
                    "session_id": sid, "at": at, "superseded_by": sessions[by].sid,
                    "by_device_name": by_device.name()}),
                EndKind::Revoked("key_expired") => json!({"type": "session_revoked",
                    "session_id": sid, "cause": "key_expired"}),
                EndKind::Revoked(cause) => json!({"type": "session_revoked", "session_id": sid,
                    "at": at, "cause": cause}),
            }));
        }
        let text = |v: &Vec<Value>| {
            let mut t: Vec<String> = v.iter().map(Value::to_string).collect();
            t.sort();
            t
        };
        let (want, have) = (text(&expected), text(&got));
        if want != have {
            let missing: Vec<&String> = want.iter().filter(|w| !have.contains(w)).collect();
            let extra: Vec<&String> = have.iter().filter(|h| !want.contains(h)).collect();
            got.clear();
            return Err(TestCaseError::fail(format!(
                "after the last op, the audit log differs from the model's history\n  \
                 missing: {missing:#?}\n  unexpected: {extra:#?}\n  \
                 history (times in ms since the case began):\n    {}",
                self.log.join("\n    ")
            )));
        }
        Ok(())
    }
}
