//! The recorded history of many clients on three keys and its checker,
//! shared by `tests/history` (one in-process server on a manual clock) and
//! `tests/several_servers` (several real servers on one PostgreSQL
//! database). The rules the checker applies are in `tests/history/main.rs`.
//!
//! Include with `#[path = "../common/history/mod.rs"] mod history;` beside
//! `mod common;` (it uses `crate::common::api`).

pub mod check;

use std::future::Future;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::api::{Answered, Api, ApiErr};
use keyseat::model::Event;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::Value;

/// (seats, policy) of each key.
pub const KEYS: [(usize, &str); 3] = [(1, "takeover"), (2, "reject"), (3, "takeover")];

/// The admin API body that creates key `(seats, policy)`: each allows
/// borrowing for an hour, which the runs never outlast.
pub fn key_body(seats: usize, policy: &str) -> Value {
    serde_json::json!({"max_sessions": seats, "on_conflict": policy, "max_borrow_hours": 1})
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Start,
    /// A start that borrows the seat for an hour (or a retry of one).
    Borrow,
    Heartbeat,
    End,
    Kick,
    Status,
}

/// One request and its answer. Times are nanoseconds since the run began,
/// from one monotonic clock shared by all clients.
#[derive(Debug, Clone)]
pub struct Rec {
    pub client: usize,
    /// Which server it was sent to (an index into the clients' servers).
    pub server: usize,
    pub key: usize,
    pub kind: Kind,
    /// The session it is about (a start: the id it asked for or was given).
    pub sid: Option<String>,
    pub send: u64,
    pub recv: u64,
    /// 0 when no answer came (connection error).
    pub status: u16,
    pub body: Value,
}

impl Rec {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    pub fn short(&self) -> String {
        format!(
            "client {} (server {}) {:?} key {} {} [{:.3}..{:.3} ms] -> {} {}",
            self.client,
            self.server,
            self.kind,
            self.key,
            self.sid.as_deref().unwrap_or("-"),
            self.send as f64 / 1e6,
            self.recv as f64 / 1e6,
            self.status,
            self.body
        )
    }
}

/// A client's connection to the servers, recording everything it does.
pub struct Recorder {
    client: usize,
    t0: Instant,
    recs: Vec<Rec>,
}

impl Recorder {
    fn now(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    /// Sends `request` (not sent until awaited here) and records it with
    /// its answer as JSON.
    async fn call<T: Serialize>(
        &mut self,
        (server, key): (usize, usize),
        kind: Kind,
        sid: Option<String>,
        request: impl Future<Output = Result<T, ApiErr>>,
    ) -> Rec {
        let send = self.now();
        let (status, body) = match request.await {
            Ok(answer) => (
                200,
                serde_json::to_value(answer).expect("an answer is JSON"),
            ),
            Err(e) => (e.status, e.body),
        };
        let recv = self.now();
        let sid = sid.or_else(|| body["session_id"].as_str().map(str::to_owned));
        let rec = Rec {
            client: self.client,
            server,
            key,
            kind,
            sid,
            send,
            recv,
            status,
            body,
        };
        self.recs.push(rec.clone());
        rec
    }
}

/// How long a client pauses where it means to race the session timeout,
/// in real milliseconds: near it now and then between heartbeats, and
/// around it when it goes quiet before a last heartbeat.
#[derive(Debug, Clone)]
pub struct Pace {
    /// The chance of such a pause before each request about a session.
    pub near_timeout_chance: f64,
    pub near_timeout: Range<u64>,
    pub quiet: Range<u64>,
}

/// What every client shares: the servers (each request goes to a random
/// one), the access keys, the sessions started so far (for kicks), the
/// run's start (the zero of every recorded time) and its end.
#[derive(Clone)]
pub struct Run {
    pub servers: Arc<Vec<Api>>,
    pub keys: Arc<Vec<String>>,
    pub known: Arc<Mutex<Vec<(usize, String)>>>,
    pub t0: Instant,
    pub until: Instant,
    pub pace: Pace,
}

/// One client: starts sessions on random keys, heartbeats them for a while,
/// then ends them, has them kicked, lets them expire or just abandons them
/// (a ghost for its next start, which may carry the same fingerprint).
pub async fn client(id: usize, seed: u64, run: Run) -> Vec<Rec> {
    let mut rng = StdRng::seed_from_u64(seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut r = Recorder {
        client: id,
        t0: run.t0,
        recs: Vec::new(),
    };
    let servers = run.servers.clone();
    let pick = |rng: &mut StdRng| rng.gen_range(0..servers.len());
    let mut n = 0;
    let pause = |rng: &mut StdRng, max: u64| Duration::from_millis(rng.gen_range(0..=max));
    while Instant::now() < run.until {
        let k = rng.gen_range(0..run.keys.len());
        let access_key = run.keys[k].clone();
        let device = format!("dev-{id}");
        let fingerprint = rng.gen_bool(0.3).then(|| format!("fp-{id}"));
        let own_sid = rng.gen_bool(0.5).then(|| {
            n += 1;
            format!("hist-{id}-{n}")
        });
        // Now and then the seat is borrowed: held without heartbeats and
        // never superseded, so the client always gives it back early.
        let borrow = rng.gen_bool(0.08);
        let kind = if borrow { Kind::Borrow } else { Kind::Start };
        let start_it = |api: &'_ Api| {
            let (sid, fp) = (own_sid.clone(), fingerprint.clone());
            let (api, key, device) = (api.clone(), access_key.clone(), device.clone());
            async move {
                let (sid, fp, device) = (sid.as_deref(), fp.as_deref(), Some(device.as_str()));
                if borrow {
                    let b = api.borrow(&key, sid, device, fp, 1).await?;
                    // The start's fields and the borrow's end, as recorded.
                    let mut answer = serde_json::to_value(&b.session).expect("JSON");
                    answer["borrowed_until"] =
                        serde_json::to_value(b.borrowed_until).expect("JSON");
                    Ok(answer)
                } else {
                    let a = api.start(&key, sid, device, fp).await?;
                    Ok(serde_json::to_value(a).expect("JSON"))
                }
            }
        };
        let s = pick(&mut rng);
        let start = r
            .call((s, k), kind, own_sid.clone(), start_it(&servers[s]))
            .await;
        if start.status != 200 {
            tokio::time::sleep(pause(&mut rng, 20)).await;
            continue;
        }
        let sid = start.sid.clone().expect("a started session has an id");
        run.known.lock().unwrap().push((k, sid.clone()));
        let mut over = false;
        for _ in 0..rng.gen_range(1..8) {
            // Now and then a pause near the timeout: the heartbeat races
            // the lease running out and the sweep.
            let wait = if rng.gen_bool(run.pace.near_timeout_chance) {
                Duration::from_millis(rng.gen_range(run.pace.near_timeout.clone()))
            } else {
                pause(&mut rng, 20)
            };
            tokio::time::sleep(wait).await;
            let roll = rng.gen_range(0..100);
            let s = pick(&mut rng);
            let api = &servers[s];
            if roll < 75 {
                let beat = api.heartbeat(&access_key, &sid);
                let hb = r
                    .call((s, k), Kind::Heartbeat, Some(sid.clone()), beat)
                    .await;
                if hb.status != 200 {
                    over = true;
                    break;
                }
            } else if roll < 85 && own_sid.is_some() {
                // A retry of the start with the same id.
                let again = r.call((s, k), kind, own_sid.clone(), start_it(api)).await;
                if again.status != 200 {
                    over = true;
                    break;
                }
            } else if roll < 92 {
                r.call((s, k), Kind::Status, None, api.status(&access_key))
                    .await;
            } else {
                // An admin kicks someone's session on this key.
                let victim = {
                    let known = run.known.lock().unwrap();
                    let of_key: Vec<&String> = known
                        .iter()
                        .filter(|(kk, _)| *kk == k)
                        .map(|(_, s)| s)
                        .collect();
                    of_key[rng.gen_range(0..of_key.len())].clone()
                };
                r.call((s, k), Kind::Kick, Some(victim.clone()), api.kick(&victim))
                    .await;
            }
        }
        if over {
            continue;
        }
        let s = pick(&mut rng);
        let api = &servers[s];
        // A borrowed seat is given back early (end) or kicked, never left.
        let last = if borrow {
            rng.gen_range(0..65)
        } else {
            rng.gen_range(0..100)
        };
        match last {
            0..=49 => {
                let end = api.end(&access_key, &sid);
                r.call((s, k), Kind::End, Some(sid.clone()), end).await;
            }
            50..=64 => {
                r.call((s, k), Kind::Kick, Some(sid.clone()), api.kick(&sid))
                    .await;
            }
            65..=84 => {
                // Goes quiet around the timeout, then asks.
                let quiet = rng.gen_range(run.pace.quiet.clone());
                tokio::time::sleep(Duration::from_millis(quiet)).await;
                let beat = api.heartbeat(&access_key, &sid);
                r.call((s, k), Kind::Heartbeat, Some(sid.clone()), beat)
                    .await;
            }
            _ => {} // abandons it: a ghost
        }
    }
    r.recs
}

/// Every event, oldest first (commit order), through the paged admin API.
pub async fn all_events(api: &Api) -> Vec<Value> {
    let mut out: Vec<Event> = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let query = match before {
            Some(b) => format!("limit=1000&before={b}"),
            None => "limit=1000".to_owned(),
        };
        let page = api.events(&query).await.answer("events");
        out.extend(page.events);
        match page.next_before {
            Some(b) => before = Some(b),
            None => break,
        }
    }
    out.reverse();
    assert!(
        out.windows(2).all(|w| w[0].id < w[1].id),
        "event ids in commit order"
    );
    let json = out.iter().map(serde_json::to_value);
    json.collect::<Result<_, _>>().expect("events are JSON")
}
