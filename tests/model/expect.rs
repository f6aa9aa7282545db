//! What the contract says each answer must be, given the model; the
//! model changes as the contract says.

use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};

use crate::contract::{error, EndKind, MBorrow, MSession, Model};
use crate::ops::{Device, Op, Policy};
use crate::run::Run;
use crate::view::{error_view, ms_of, tally};
use crate::{HOUR_MS, TIMEOUT_MS};

impl Run<'_> {
    pub fn end_all_live(&mut self, kind: EndKind, now: i64) {
        for i in self.model.live() {
            self.model.sessions[i].end = Some(kind);
            self.model.sessions[i].ended_at = now;
        }
    }

    pub fn heartbeat_expect(&mut self, sid: &str, now: i64) -> Value {
        if let Some(e) = self.model.key_error() {
            return e;
        }
        let Some(i) = self.model.find(sid) else {
            return error(404, "session_not_found");
        };
        let s = &mut self.model.sessions[i];
        if s.end.is_some() {
            return Model::dead_answer(s);
        }
        s.last_heartbeat = now;
        json!({"status": 200, "session_id": sid, "fence": s.fence,
               "last_heartbeat": now, "expires_at": s.lease()})
    }

    /// End (by the app) or kick (by an admin): the same answers, except
    /// that a kick ignores the key's state and marks the end `revoked`.
    pub fn end_expect(&mut self, sid: &str, kind: EndKind, admin: bool, now: i64) -> Value {
        if !admin {
            if let Some(e) = self.model.key_error() {
                return e;
            }
        }
        let Some(i) = self.model.find(sid) else {
            return error(404, "session_not_found");
        };
        let s = &mut self.model.sessions[i];
        match s.end {
            Some(done) => json!({"status": 200, "ended": false, "reason": done.reason()}),
            None => {
                s.end = Some(kind);
                s.ended_at = now;
                json!({"status": 200, "ended": true, "reason": null})
            }
        }
    }

    pub fn status_expect(&self) -> Value {
        if let Some(e) = self.model.key_error() {
            return e;
        }
        let live = self.model.live();
        let sessions: Vec<Value> = live
            .iter()
            .map(|&i| {
                let s = &self.model.sessions[i];
                json!({"session_id": s.sid, "fence": s.fence, "device_name": s.device.name(),
                       "started_at": s.started_at, "last_heartbeat": s.last_heartbeat,
                       "expires_at": s.lease(),
                       "borrowed_until": s.borrowed_until.filter(|_| s.borrowed_at(self.model.now))})
            })
            .collect();
        json!({"status": 200, "active": !live.is_empty(), "max_sessions": self.model.seats,
               "on_conflict": self.model.policy.as_str(), "sessions": sessions})
    }

    /// A start, or with `hours` a borrow: sent, predicted and compared.
    pub async fn start(
        &mut self,
        i: usize,
        op: &Op,
        device: Device,
        sid: Option<u8>,
        fp: bool,
        hours: Option<u32>,
    ) -> Result<(), TestCaseError> {
        let now = self.now();
        let client_sid = sid.map(|n| self.client_sid(n));
        let fingerprint = fp.then(|| format!("fp-{device:?}"));
        let (cs, name, fpr) = (client_sid.as_deref(), device.name(), fingerprint.as_deref());
        let answer = match hours {
            None => self
                .api
                .start(&self.key, cs, name, fpr)
                .await
                .map(|a| (a, None)),
            Some(h) => self
                .api
                .borrow(&self.key, cs, name, fpr, h)
                .await
                .map(|b| (b.session, Some(b.borrowed_until))),
        };
        let got = match answer {
            Ok((a, borrowed_until)) => {
                let mut got = json!({"status": 200, "session_id": a.session_id, "fence": a.fence,
                   "resumed": a.resumed, "started_at": ms_of(a.started_at),
                   "expires_at": ms_of(a.expires_at),
                   "previous_session_terminated": a.previous_session_terminated,
                   "terminated_sessions": a.terminated_sessions.iter().map(|t| json!({
                       "session_id": t.session_id, "device_name": t.device_name,
                       "last_heartbeat": ms_of(t.last_heartbeat)})).collect::<Vec<_>>()});
                if let Some(until) = borrowed_until {
                    got["borrowed_until"] = ms_of(until);
                }
                got
            }
            Err(e) => error_view(&e),
        };
        let expected = match hours {
            None => self.start_expect(device, client_sid.as_deref(), fp, now, &got, None),
            Some(h) => match self.borrow_refusal(h, now) {
                Some(refusal) => Ok(refusal),
                None => {
                    let until = self.borrow_end(h, now);
                    self.start_expect(device, client_sid.as_deref(), fp, now, &got, Some(until))
                }
            },
        };
        self.log.push(format!("#{i} {op:?} -> {got}"));
        tally(op, &got);
        match expected {
            Ok(expected) if expected == got => Ok(()),
            Ok(expected) => Err(self.fail(i, op, "", &expected, &got)),
            Err(problem) => Err(self.fail(i, op, "", &json!(problem), &got)),
        }
    }

    /// Why a borrow of `hours` is refused before any seat is looked at:
    /// the hours' range (before the key), the key, borrowing off, the
    /// key's limit.
    pub fn borrow_refusal(&self, hours: u32, _now: i64) -> Option<Value> {
        if hours == 0 {
            return Some(error(400, "invalid_request"));
        }
        if let Some(e) = self.model.key_error() {
            return Some(e);
        }
        if self.model.max_borrow_hours == 0 {
            return Some(error(403, "borrow_not_allowed"));
        }
        (hours > self.model.max_borrow_hours).then(|| error(400, "invalid_request"))
    }

    /// The end of a borrow of `hours` made at `now`: never past the key's
    /// own expiry.
    pub fn borrow_end(&self, hours: u32, now: i64) -> i64 {
        let until = now + i64::from(hours) * HOUR_MS;
        self.model.expires_at.map_or(until, |x| until.min(x))
    }

    /// What a start must answer; updates the model as the contract says.
    /// A new session's fence and a server-chosen id cannot be predicted,
    /// only checked: the fence above every earlier one of the key (and 1
    /// for the key's first), the id never seen before. `Err` is a broken
    /// rule of that kind.
    pub fn start_expect(
        &mut self,
        device: Device,
        client_sid: Option<&str>,
        fp: bool,
        now: i64,
        got: &Value,
        borrow: Option<i64>,
    ) -> Result<Value, String> {
        if let Some(e) = self.model.key_error() {
            return Ok(e);
        }
        if let Some(id) = client_sid {
            if let Some(i) = self.model.find(id) {
                let s = &mut self.model.sessions[i];
                if s.end.is_some() {
                    return Ok(error(409, "session_id_taken"));
                }
                // A retry while live: the same session, a renewed lease,
                // nothing terminated; a borrow of it keeps the later end.
                s.last_heartbeat = now;
                let mut answer = json!({"status": 200, "session_id": id, "fence": s.fence,
                    "resumed": true, "started_at": s.started_at, "expires_at": 0,
                    "previous_session_terminated": false, "terminated_sessions": []});
                if let Some(until) = borrow {
                    let until = s.borrowed_until.map_or(until, |b| b.max(until));
                    s.borrowed_until = Some(until);
                    answer["borrowed_until"] = json!(until);
                    let (sid, fence) = (s.sid.clone(), s.fence);
                    self.model.borrows.push(MBorrow {
                        sid,
                        at: now,
                        fence,
                        until,
                    });
                }
                let s = &self.model.sessions[i];
                answer["expires_at"] = json!(s.lease());
                return Ok(answer);
            }
            if self.elsewhere.iter().any(|(used, _)| used == id) {
                return Ok(error(409, "session_id_taken"));
            }
        }
        let live = self.model.live();
        let mut victim = None;
        if live.len() >= self.model.seats as usize {
            // A borrowed session's device cannot be told: never a victim.
            let movable: Vec<usize> = live
                .iter()
                .copied()
                .filter(|&i| !self.model.sessions[i].borrowed_at(now))
                .collect();
            let same_device: Vec<usize> = movable
                .iter()
                .copied()
                .filter(|&i| {
                    fp && self.model.sessions[i].fingerprint
                        && self.model.sessions[i].device == device
                })
                .collect();
            if let Some(&v) = self.model.victims_order(&same_device).first() {
                victim = Some(v);
            } else if self.model.policy == Policy::Takeover && !movable.is_empty() {
                victim = self.model.victims_order(&movable).first().copied();
            } else {
                self.model.rejected += 1;
                let mut e = error(409, "seats_full");
                e["max_sessions"] = json!(self.model.seats);
                return Ok(e);
            }
        }
        // The server's own choices, checked before the model takes them.
        let fence = got["fence"].as_i64().ok_or("a 200 with a numeric fence")?;
        let want_first = self.model.last_fence == 0;
        if (want_first && fence != 1) || fence <= self.model.last_fence {
            return Err(format!(
                "fence {} for a new session (last was {})",
                if want_first {
                    "1".to_owned()
                } else {
                    "above the last".to_owned()
                },
                self.model.last_fence
            ));
        }
        let sid = match client_sid {
            Some(id) => id.to_owned(),
            None => {
                let id = got["session_id"]
                    .as_str()
                    .ok_or("a 200 with a session_id")?;
                if self.model.find(id).is_some() {
                    return Err(format!("a fresh session id, not {id}"));
                }
                id.to_owned()
            }
        };
        self.model.last_fence = fence;
        let new_index = self.model.sessions.len();
        let terminated: Vec<Value> = victim
            .map(|v| {
                let s = &mut self.model.sessions[v];
                s.end = Some(EndKind::Superseded {
                    by: new_index,
                    by_device: device,
                    by_started_at: now,
                });
                s.ended_at = now;
                vec![json!({"session_id": s.sid, "device_name": s.device.name(),
                            "last_heartbeat": s.last_heartbeat})]
            })
            .unwrap_or_default();
        self.model.sessions.push(MSession {
            sid: sid.clone(),
            device,
            fingerprint: fp,
            fence,
            started_at: now,
            last_heartbeat: now,
            end: None,
            ended_at: 0,
            borrowed_until: borrow,
        });
        let mut answer = json!({"status": 200, "session_id": sid, "fence": fence,
            "resumed": false, "started_at": now,
            "expires_at": borrow.map_or(now + TIMEOUT_MS, |u| u.max(now + TIMEOUT_MS)),
            "previous_session_terminated": !terminated.is_empty(),
            "terminated_sessions": terminated});
        if let Some(until) = borrow {
            answer["borrowed_until"] = json!(until);
            self.model.borrows.push(MBorrow {
                sid,
                at: now,
                fence,
                until,
            });
        }
        Ok(answer)
    }
}
