//! Concurrent history check: many clients hammer three keys over real HTTP
//! for a few seconds; every request is recorded with the instant it was
//! sent and the instant its answer arrived (one shared monotonic clock);
//! then a checker decides whether the recorded history is one the contract
//! allows. See docs/correctness.md for the same explanation with figures.
//!
//! The keys: 1 seat `takeover`, 2 seats `reject`, 3 seats `takeover`. The
//! server runs with heartbeat 1 s and timeout 2 s (the smallest the config
//! accepts) on a manual clock that a ticker moves five times faster than
//! real time, so sessions whose client pauses expire during the run.
//!
//! How the checker decides. Each operation took effect at one instant
//! between its send and its answer (that is all a client can know), and a
//! session's life is one interval: it starts once, and once it is not live
//! it never is again.
//!
//! (a) Never more live sessions than seats, checked twice:
//!   1. From the clients' side. A session is *certainly live* from the
//!      answer to its start until the send of the last request that saw it
//!      live (a heartbeat or start retry answered 200, an end or kick
//!      answered `ended: true`, a status listing it): the start took effect
//!      before its answer, that request took effect after its send, and a
//!      life has no gaps. If more sessions of a key than it has seats are
//!      certainly live at one instant, the server broke the invariant,
//!      whatever the real order was. (Sound but not complete: it can only
//!      miss violations, never invent one.)
//!   2. Exactly, from the server's audit log, replayed in commit order
//!      (event ids). A `session_started` adds a session, an end event
//!      removes it; an expiry is written by the sweep some time after the
//!      lease ran out, so at each start the sessions whose lease had run
//!      out by that start's time (the `session_expired` event's `at`) do not
//!      count. At every start the count, the new session included, must be
//!      at most the seats. After the run the clock is moved past every lease
//!      and the sweep run, so every session must have exactly one end.
//!
//! (b) No heartbeat success after the session's end was acknowledged: once
//!   any client received an answer saying a session is over (its end or
//!   kick answered, a start answer listing it as terminated, a heartbeat
//!   answered 409/410, a start retry answered `session_id_taken`, a status
//!   sent after its start not listing it), no request *sent after that
//!   answer arrived* may see it live.
//!
//! (c) Fences: strictly increasing per key in commit order of the starts,
//!   hence unique; what each client was told equals the logged fence; and a
//!   start sent after another start of the key was answered has the higher
//!   fence (real-time order).
//!
//! Also checked: every start answered 200 is in the log; every supersede a
//! start reported is logged as superseded by that start; every
//! `seats_full` answer is a `start_rejected` event; an expired session's
//! expiry is exactly the lease the last successful heartbeat announced
//! (never early, never late); no 5xx other than 503, no 404 for a session
//! that was started.
//!
//! `HISTORY_SECONDS` (default 4) sets the length of the run.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TestServer, ADMIN_TOKEN};
use keyseat::clock::Timestamp;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const CLIENTS: usize = 24;
/// The manual clock moves this many milliseconds...
const TICK_SERVER_MS: i64 = 25;
/// ...every this many real milliseconds (5x real time).
const TICK_REAL_MS: u64 = 5;
const TIMEOUT_MS: i64 = 2_000;

/// (seats, policy) of each key.
const KEYS: [(usize, &str); 3] = [(1, "takeover"), (2, "reject"), (3, "takeover")];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Start,
    Heartbeat,
    End,
    Kick,
    Status,
}

/// One request and its answer. Times are nanoseconds since the run began,
/// from one monotonic clock shared by all clients.
#[derive(Debug, Clone)]
struct Rec {
    client: usize,
    key: usize,
    kind: Kind,
    /// The session it is about (a start: the id it asked for or was given).
    sid: Option<String>,
    send: u64,
    recv: u64,
    /// 0 when no answer came (connection error).
    status: u16,
    body: Value,
}

impl Rec {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    fn short(&self) -> String {
        format!(
            "client {} {:?} key {} {} [{:.3}..{:.3} ms] -> {} {}",
            self.client,
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

/// A client's connection to the server, recording everything it does.
struct Recorder {
    client: usize,
    http: reqwest::Client,
    url: String,
    t0: Instant,
    recs: Vec<Rec>,
}

impl Recorder {
    fn now(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    async fn call(
        &mut self,
        key: usize,
        kind: Kind,
        sid: Option<String>,
        req: reqwest::RequestBuilder,
    ) -> Rec {
        let send = self.now();
        let answer = req.send().await;
        let (status, body) = match answer {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                (status, serde_json::from_str(&text).unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        };
        let recv = self.now();
        let sid = sid.or_else(|| body["session_id"].as_str().map(str::to_owned));
        let rec = Rec {
            client: self.client,
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

    async fn post(
        &mut self,
        key: usize,
        kind: Kind,
        sid: Option<String>,
        path: &str,
        body: Value,
    ) -> Rec {
        let req = self.http.post(format!("{}{path}", self.url)).json(&body);
        self.call(key, kind, sid, req).await
    }

    async fn kick(&mut self, key: usize, sid: &str) -> Rec {
        let req = self
            .http
            .delete(format!("{}/api/admin/sessions/{sid}", self.url))
            .bearer_auth(ADMIN_TOKEN);
        self.call(key, Kind::Kick, Some(sid.to_owned()), req).await
    }
}

/// One client: starts sessions on random keys, heartbeats them for a while,
/// then ends them, has them kicked, lets them expire or just abandons them
/// (a ghost for its next start, which may carry the same fingerprint).
async fn client(
    id: usize,
    seed: u64,
    url: String,
    keys: Arc<Vec<String>>,
    known: Arc<Mutex<Vec<(usize, String)>>>,
    t0: Instant,
    until: Instant,
) -> Vec<Rec> {
    let mut rng = StdRng::seed_from_u64(seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut r = Recorder {
        client: id,
        http: reqwest::Client::new(),
        url,
        t0,
        recs: Vec::new(),
    };
    let mut n = 0;
    let pause = |rng: &mut StdRng, max: u64| Duration::from_millis(rng.gen_range(0..=max));
    while Instant::now() < until {
        let k = rng.gen_range(0..keys.len());
        let access_key = keys[k].clone();
        let mut body = json!({"access_key": access_key, "device": {"name": format!("dev-{id}")}});
        if rng.gen_bool(0.3) {
            body["device"]["fingerprint"] = json!(format!("fp-{id}"));
        }
        let own_sid = rng.gen_bool(0.5).then(|| {
            n += 1;
            format!("hist-{id}-{n}")
        });
        if let Some(sid) = &own_sid {
            body["session_id"] = json!(sid);
        }
        let start = r
            .post(
                k,
                Kind::Start,
                own_sid.clone(),
                "/api/session/start",
                body.clone(),
            )
            .await;
        if start.status != 200 {
            tokio::time::sleep(pause(&mut rng, 20)).await;
            continue;
        }
        let sid = start.sid.clone().expect("a started session has an id");
        known.lock().unwrap().push((k, sid.clone()));
        let session = json!({"access_key": access_key, "session_id": sid});
        let mut over = false;
        for _ in 0..rng.gen_range(1..8) {
            // Now and then a pause near the timeout (400 ms real): the
            // heartbeat races the lease running out and the sweep.
            let wait = if rng.gen_bool(0.1) {
                Duration::from_millis(rng.gen_range(300..500))
            } else {
                pause(&mut rng, 20)
            };
            tokio::time::sleep(wait).await;
            let roll = rng.gen_range(0..100);
            if roll < 75 {
                let hb = r
                    .post(
                        k,
                        Kind::Heartbeat,
                        Some(sid.clone()),
                        "/api/session/heartbeat",
                        session.clone(),
                    )
                    .await;
                if hb.status != 200 {
                    over = true;
                    break;
                }
            } else if roll < 85 && own_sid.is_some() {
                // A retry of the start with the same id.
                let again = r
                    .post(
                        k,
                        Kind::Start,
                        own_sid.clone(),
                        "/api/session/start",
                        body.clone(),
                    )
                    .await;
                if again.status != 200 {
                    over = true;
                    break;
                }
            } else if roll < 92 {
                r.post(
                    k,
                    Kind::Status,
                    None,
                    "/api/session/status",
                    json!({"access_key": access_key}),
                )
                .await;
            } else {
                // An admin kicks someone's session on this key.
                let victim = {
                    let known = known.lock().unwrap();
                    let of_key: Vec<&String> = known
                        .iter()
                        .filter(|(kk, _)| *kk == k)
                        .map(|(_, s)| s)
                        .collect();
                    of_key[rng.gen_range(0..of_key.len())].clone()
                };
                r.kick(k, &victim).await;
            }
        }
        if over {
            continue;
        }
        match rng.gen_range(0..100) {
            0..=49 => {
                r.post(
                    k,
                    Kind::End,
                    Some(sid.clone()),
                    "/api/session/end",
                    session.clone(),
                )
                .await;
            }
            50..=64 => {
                r.kick(k, &sid).await;
            }
            65..=84 => {
                // Goes quiet around the timeout (400 ms real), then asks.
                tokio::time::sleep(Duration::from_millis(rng.gen_range(300..900))).await;
                r.post(
                    k,
                    Kind::Heartbeat,
                    Some(sid.clone()),
                    "/api/session/heartbeat",
                    session.clone(),
                )
                .await;
            }
            _ => {} // abandons it: a ghost
        }
    }
    r.recs
}

/// What the checker counted.
#[derive(Debug, Default)]
struct Stats {
    ops: usize,
    starts_ok: usize,
    rejected: usize,
    superseded: usize,
    expired: usize,
    events: usize,
    max_certainly_live: Vec<usize>,
    max_live_in_log: Vec<usize>,
    shed: usize,
    /// Events of each type, per key.
    by_type: Vec<std::collections::BTreeMap<String, usize>>,
}

/// Per session, what the clients saw.
#[derive(Default)]
struct Seen {
    key: usize,
    /// Answer to the start that created it.
    started: Option<u64>,
    fence: Option<i64>,
    /// The last send of a request that found it live, and which.
    live_until: Option<(u64, usize)>,
    /// The first answer saying it is over, and which.
    dead_from: Option<(u64, usize)>,
    /// The latest lease a successful start or heartbeat announced.
    lease: Option<i64>,
    /// A request about it got no answer: the lease is not known exactly.
    unsure: bool,
}

fn ts(v: &Value) -> Option<i64> {
    v.as_str()
        .and_then(Timestamp::parse_rfc3339)
        .map(|t| t.millis())
}

fn check(recs: &[Rec], events: &[Value], key_ids: &[String], v: &mut Vec<String>) -> Stats {
    let mut st = Stats {
        ops: recs.len(),
        events: events.len(),
        ..Stats::default()
    };
    let key_of: HashMap<&str, usize> = key_ids
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_str(), i))
        .collect();

    // ---- the clients' side: what each session was seen to be, and when.
    let mut seen: HashMap<String, Seen> = HashMap::new();
    let mut new_starts: Vec<usize> = Vec::new();
    let mut statuses: Vec<usize> = Vec::new();
    let mut rejected = [0usize; 3];
    for (i, r) in recs.iter().enumerate() {
        match r.status {
            0 | 503 | 429 => {
                st.shed += 1;
                if let Some(sid) = &r.sid {
                    seen.entry(sid.clone()).or_default().unsure = true;
                }
                continue;
            }
            s if s >= 500 => v.push(format!("server error: {}", r.short())),
            _ => {}
        }
        let live = |seen: &mut HashMap<String, Seen>, sid: &str| {
            let e = seen.entry(sid.to_owned()).or_default();
            if e.live_until.is_none_or(|(t, _)| r.send > t) {
                e.live_until = Some((r.send, i));
            }
        };
        let dead = |seen: &mut HashMap<String, Seen>, sid: &str| {
            let e = seen.entry(sid.to_owned()).or_default();
            if e.dead_from.is_none_or(|(t, _)| r.recv < t) {
                e.dead_from = Some((r.recv, i));
            }
        };
        let sid = r.sid.clone().unwrap_or_default();
        match (r.kind, r.status) {
            (Kind::Start, 200) => {
                let lease = ts(&r.body["expires_at"]);
                let e = seen.entry(sid.clone()).or_default();
                e.key = r.key;
                e.lease = e.lease.max(lease);
                if r.body["resumed"] == true {
                    live(&mut seen, &sid);
                } else {
                    st.starts_ok += 1;
                    if e.started.is_some() {
                        v.push(format!("a second new start of one id: {}", r.short()));
                    }
                    e.started = Some(r.recv);
                    e.fence = r.body["fence"].as_i64();
                    new_starts.push(i);
                }
                for t in r.body["terminated_sessions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    dead(&mut seen, t["session_id"].as_str().unwrap_or_default());
                }
            }
            (Kind::Start, 409) if r.code() == "session_id_taken" => dead(&mut seen, &sid),
            (Kind::Start, 409) if r.code() == "seats_full" => {
                st.rejected += 1;
                rejected[r.key] += 1;
            }
            (Kind::Heartbeat, 200) => {
                live(&mut seen, &sid);
                let e = seen.entry(sid.clone()).or_default();
                e.lease = e.lease.max(ts(&r.body["expires_at"]));
                if r.body["fence"].as_i64() != e.fence {
                    v.push(format!(
                        "heartbeat fence differs from the start's: {}",
                        r.short()
                    ));
                }
            }
            (Kind::Heartbeat, 409 | 410) => dead(&mut seen, &sid),
            (Kind::End | Kind::Kick, 200) => {
                if r.body["ended"] == true {
                    live(&mut seen, &sid);
                }
                dead(&mut seen, &sid);
            }
            (Kind::Status, 200) => {
                statuses.push(i);
                let listed = r.body["sessions"].as_array().cloned().unwrap_or_default();
                if listed.len() > KEYS[r.key].0 {
                    v.push(format!(
                        "status lists more sessions than seats: {}",
                        r.short()
                    ));
                }
                for s in &listed {
                    live(&mut seen, s["session_id"].as_str().unwrap_or_default());
                }
            }
            _ => v.push(format!("unexpected answer: {}", r.short())),
        }
    }
    // A status sent after a session's start was answered, not listing it,
    // says it was over by then.
    for &i in &statuses {
        let r = &recs[i];
        let listed: HashSet<&str> = r.body["sessions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["session_id"].as_str())
            .collect();
        for (sid, e) in seen.iter_mut() {
            if e.key == r.key
                && e.started.is_some_and(|t| t < r.send)
                && !listed.contains(sid.as_str())
                && e.dead_from.is_none_or(|(t, _)| r.recv < t)
            {
                e.dead_from = Some((r.recv, i));
            }
        }
    }

    // (b) nothing sees a session live after its end was acknowledged.
    for (sid, e) in &seen {
        if let (Some((dead_at, d)), Some((live_at, l))) = (e.dead_from, e.live_until) {
            if live_at > dead_at {
                v.push(format!(
                    "{sid} seen live by a request sent after its end was acknowledged:\n    \
                     end known: {}\n    live:      {}",
                    recs[d].short(),
                    recs[l].short()
                ));
            }
        }
    }

    // (a1) never more sessions certainly live than seats.
    for (k, &(seats, _)) in KEYS.iter().enumerate() {
        let mut edges: Vec<(u64, i32, &str)> = Vec::new();
        for (sid, e) in seen.iter().filter(|(_, e)| e.key == k) {
            if let (Some(from), Some((until, _))) = (e.started, e.live_until) {
                if from <= until {
                    edges.push((from, 1, sid));
                    edges.push((until, -1, sid));
                }
            }
        }
        // Closed intervals: at equal instants, arrivals before departures.
        edges.sort_by_key(|&(t, d, _)| (t, -d));
        let (mut n, mut max) = (0i32, 0i32);
        let mut open: HashSet<&str> = HashSet::new();
        for (t, d, sid) in edges {
            n += d;
            if d > 0 {
                open.insert(sid);
            } else {
                open.remove(sid);
            }
            if n > max {
                max = n;
            }
            if n as usize > seats {
                v.push(format!(
                    "key {k} ({seats} seat(s)): {n} sessions certainly live at {:.3} ms: {open:?}",
                    t as f64 / 1e6
                ));
            }
        }
        st.max_certainly_live.push(max as usize);
    }

    // ---- the server's side: the audit log in commit order.
    let expired_at: HashMap<&str, i64> = events
        .iter()
        .filter(|e| e["type"] == "session_expired")
        .filter_map(|e| Some((e["session_id"].as_str()?, ts(&e["at"])?)))
        .collect();
    let mut live: Vec<HashSet<String>> = vec![HashSet::new(); 3];
    let mut ended: HashSet<String> = HashSet::new();
    let mut by_start: HashMap<String, String> = HashMap::new(); // superseded -> by
    let mut logged_fence: HashMap<String, i64> = HashMap::new();
    let mut last_fence = [0i64; 3];
    let mut max_live = [0usize; 3];
    let mut rejected_logged = [0usize; 3];
    let mut device: HashMap<String, Value> = HashMap::new();
    let mut started_at: HashMap<String, i64> = HashMap::new();
    for e in events {
        let Some(&k) = e["key_id"].as_str().and_then(|id| key_of.get(id)) else {
            continue;
        };
        let sid = e["session_id"].as_str().unwrap_or_default().to_owned();
        let at = ts(&e["at"]).unwrap_or(0);
        if st.by_type.len() < KEYS.len() {
            st.by_type.resize_with(KEYS.len(), Default::default);
        }
        *st.by_type[k]
            .entry(e["type"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
        match e["type"].as_str().unwrap_or_default() {
            "session_started" => {
                let fence = e["detail"]["fence"].as_i64().unwrap_or(0);
                if fence <= last_fence[k] {
                    v.push(format!(
                        "key {k}: fence {fence} of {sid} not above the previous {}",
                        last_fence[k]
                    ));
                }
                last_fence[k] = last_fence[k].max(fence);
                if logged_fence.insert(sid.clone(), fence).is_some() {
                    v.push(format!("{sid} started twice in the log"));
                }
                device.insert(sid.clone(), e["device_name"].clone());
                started_at.insert(sid.clone(), at);
                for t in e["detail"]["terminated"].as_array().into_iter().flatten() {
                    let t = t.as_str().unwrap_or_default().to_owned();
                    if !live[k].remove(&t) && !ended.contains(&t) {
                        v.push(format!("{sid} superseded {t}, which was not live"));
                    }
                    ended.insert(t.clone());
                    by_start.insert(t, sid.clone());
                }
                live[k].insert(sid.clone());
                let n = live[k]
                    .iter()
                    .filter(|s| expired_at.get(s.as_str()).is_none_or(|&x| x > at))
                    .count();
                max_live[k] = max_live[k].max(n);
                if n > KEYS[k].0 {
                    v.push(format!(
                        "key {k} ({} seat(s)): {n} sessions live when {sid} started (event {})",
                        KEYS[k].0, e["id"]
                    ));
                }
            }
            "session_superseded" => {
                let by = e["detail"]["superseded_by"].as_str().unwrap_or_default();
                if by_start.get(&sid).is_some_and(|b| b == by) {
                    continue; // already removed by the start that did it
                }
                if !live[k].remove(&sid) {
                    v.push(format!("{sid} superseded but not live in the log"));
                }
                ended.insert(sid.clone());
                by_start.insert(sid, by.to_owned());
            }
            "session_ended" | "session_expired" | "session_revoked" => {
                if !live[k].remove(&sid) {
                    v.push(format!(
                        "{sid} ended ({}) but not live in the log",
                        e["type"]
                    ));
                }
                ended.insert(sid);
            }
            "start_rejected" => rejected_logged[k] += 1,
            _ => {}
        }
    }
    st.max_live_in_log = max_live.to_vec();
    for (k, l) in live.iter().enumerate() {
        if !l.is_empty() {
            v.push(format!(
                "key {k}: sessions with no end after the final sweep: {l:?}"
            ));
        }
    }
    if rejected_logged != rejected {
        v.push(format!(
            "seats_full answers per key {rejected:?} but start_rejected events {rejected_logged:?}"
        ));
    }
    st.superseded = by_start.len();
    st.expired = expired_at.len();

    // (c) and the rest: what clients were told agrees with the log.
    for (sid, e) in &seen {
        let Some(fence) = e.fence else { continue };
        match logged_fence.get(sid) {
            None => v.push(format!("{sid}: acknowledged start missing from the log")),
            Some(&f) if f != fence => v.push(format!("{sid}: told fence {fence}, logged {f}")),
            _ => {}
        }
        if let (Some(&x), Some(lease), false) = (expired_at.get(sid.as_str()), e.lease, e.unsure) {
            if x != lease {
                v.push(format!(
                    "{sid} expired at {x} but its last lease announced {lease} ({:+} ms)",
                    x - lease
                ));
            }
        }
    }
    for r in recs {
        let sid = r.sid.as_deref().unwrap_or_default();
        if r.kind == Kind::Start && r.status == 200 {
            for t in r.body["terminated_sessions"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let t = t["session_id"].as_str().unwrap_or_default();
                if by_start.get(t).map(String::as_str) != Some(sid) {
                    v.push(format!(
                        "{t}: reported superseded by {sid}, not so in the log"
                    ));
                }
            }
        }
        if r.code() == "session_superseded" {
            let by = by_start.get(sid);
            let want = by.and_then(|b| device.get(b));
            let want_at = by.and_then(|b| started_at.get(b)).copied();
            let got = &r.body["error"]["superseded_by"];
            if want != Some(&got["device_name"]) || want_at != ts(&got["started_at"]) {
                v.push(format!(
                    "superseded_by does not name the start that did it ({by:?}): {}",
                    r.short()
                ));
            }
        }
        if r.status == 404 && matches!(r.kind, Kind::Heartbeat | Kind::End | Kind::Kick) {
            v.push(format!("a started session not found: {}", r.short()));
        }
    }
    // Real-time order: a start sent after another start of the key was
    // answered gets the higher fence.
    for k in 0..KEYS.len() {
        let mut by_recv: Vec<(u64, i64)> = new_starts
            .iter()
            .map(|&i| &recs[i])
            .filter(|r| r.key == k)
            .filter_map(|r| Some((r.recv, r.body["fence"].as_i64()?)))
            .collect();
        by_recv.sort();
        let mut best_before: Vec<i64> = Vec::with_capacity(by_recv.len());
        let mut best = 0;
        for &(_, f) in &by_recv {
            best = best.max(f);
            best_before.push(best);
        }
        for &i in new_starts.iter().filter(|&&i| recs[i].key == k) {
            let r = &recs[i];
            let n = by_recv.partition_point(|&(t, _)| t < r.send);
            if n > 0 && r.body["fence"].as_i64().unwrap_or(0) <= best_before[n - 1] {
                v.push(format!(
                    "fence not above an earlier answered start's ({}): {}",
                    best_before[n - 1],
                    r.short()
                ));
            }
        }
    }
    st
}

/// Every event, oldest first (commit order), through the paged admin API.
async fn all_events(s: &TestServer) -> Vec<Value> {
    let mut out = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let path = match before {
            Some(b) => format!("/api/admin/events?limit=1000&before={b}"),
            None => "/api/admin/events?limit=1000".to_owned(),
        };
        let (status, body) = s.admin("GET", &path, None).await;
        assert_eq!(status, 200, "{body}");
        let page = body["events"].as_array().cloned().unwrap_or_default();
        out.extend(page);
        match body["next_before"].as_i64() {
            Some(b) => before = Some(b),
            None => break,
        }
    }
    out.reverse();
    let ids: Vec<i64> = out.iter().filter_map(|e| e["id"].as_i64()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "event ids in commit order"
    );
    out
}

/// Many clients on three keys for a few seconds; the recorded history must
/// never show more live sessions than seats, a heartbeat success after an
/// acknowledged end, or a fence out of order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_history_keeps_the_seat_invariant() {
    let secs: f64 = std::env::var("HISTORY_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4.0);
    let seed: u64 = std::env::var("HISTORY_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    let s = TestServer::start_with(|c| {
        c.heartbeat_interval_seconds = 1;
        c.session_timeout_seconds = (TIMEOUT_MS / 1000) as u64;
        c.sweep_interval_seconds = 1;
    })
    .await;
    let mut keys = Vec::new();
    let mut key_ids = Vec::new();
    for (seats, policy) in KEYS {
        let (key, created) = s
            .create_key(json!({"max_sessions": seats, "on_conflict": policy}))
            .await;
        keys.push(key);
        key_ids.push(created["key_id"].as_str().unwrap().to_owned());
    }

    // The server's clock runs 5x faster than real time.
    let ticking = Arc::new(AtomicBool::new(true));
    let ticker = {
        let (clock, ticking) = (s.clock.clone(), ticking.clone());
        std::thread::spawn(move || {
            while ticking.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(TICK_REAL_MS));
                clock.advance_millis(TICK_SERVER_MS);
            }
        })
    };

    let began = Instant::now();
    let server_began = s.now();
    let until = began + Duration::from_secs_f64(secs);
    let keys = Arc::new(keys);
    let known = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|id| {
            tokio::spawn(client(
                id,
                seed,
                s.url.clone(),
                keys.clone(),
                known.clone(),
                began,
                until,
            ))
        })
        .collect();
    let mut recs = Vec::new();
    for t in tasks {
        recs.extend(t.await.expect("client task"));
    }
    ticking.store(false, Ordering::Relaxed);
    ticker.join().unwrap();
    let server_secs = (s.now().millis() - server_began.millis()) as f64 / 1e3;
    let real_secs = began.elapsed().as_secs_f64();

    // Every lease runs out; the sweep records each expiry.
    s.clock.advance_millis(TIMEOUT_MS + 1_000);
    let store = s.store();
    let now = s.now();
    keyseat::store::blocking(move || store.sweep(now, 30, false))
        .await
        .expect("sweep");
    let events = all_events(&s).await;

    let mut violations = Vec::new();
    let stats = check(&recs, &events, &key_ids, &mut violations);
    eprintln!(
        "history: {} ops by {CLIENTS} clients in {real_secs:.1} s (server clock: \
         {server_secs:.1} s) checked against {} events (seed {seed}); {} starts ok, {} rejected, {} superseded, {} expired, {} shed; \
         max live per key: certain {:?}, in log {:?}, seats {:?}",
        stats.ops,
        stats.events,
        stats.starts_ok,
        stats.rejected,
        stats.superseded,
        stats.expired,
        stats.shed,
        stats.max_certainly_live,
        stats.max_live_in_log,
        KEYS.map(|(n, _)| n),
    );
    for (k, types) in stats.by_type.iter().enumerate() {
        eprintln!("  key {k} {:?}: {types:?}", KEYS[k]);
    }
    assert!(
        violations.is_empty(),
        "{} violation(s) (HISTORY_SEED={seed} to rerun the same clients):\n{}",
        violations.len(),
        violations
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The run must have exercised what it checks.
    assert!(
        stats.starts_ok > 50 && stats.superseded > 5 && stats.rejected > 5 && stats.expired > 0,
        "too little happened to prove anything: {stats:?}"
    );
}

// The checker itself must be able to fail: hand-made histories that break
// each rule, and one that only looks like a violation.

fn rec(kind: Kind, sid: &str, send: u64, recv: u64, status: u16, body: Value) -> Rec {
    Rec {
        client: 0,
        key: 0,
        kind,
        sid: Some(sid.to_owned()),
        send,
        recv,
        status,
        body,
    }
}

fn started(sid: &str, send: u64, recv: u64, fence: i64) -> Rec {
    rec(
        Kind::Start,
        sid,
        send,
        recv,
        200,
        json!({"session_id": sid, "fence": fence, "resumed": false, "terminated_sessions": []}),
    )
}

fn beat(sid: &str, send: u64, recv: u64, fence: i64) -> Rec {
    rec(
        Kind::Heartbeat,
        sid,
        send,
        recv,
        200,
        json!({"fence": fence}),
    )
}

fn event(id: i64, kind: &str, sid: &str, at_ms: i64, detail: Value) -> Value {
    json!({"id": id, "type": kind, "key_id": "k0", "session_id": sid,
           "at": Timestamp(1_800_000_000_000 + at_ms).to_rfc3339(), "detail": detail})
}

fn violations(recs: &[Rec], events: &[Value]) -> Vec<String> {
    let mut v = Vec::new();
    let keys = ["k0", "k1", "k2"].map(String::from);
    check(recs, events, &keys, &mut v);
    v
}

#[test]
fn checker_sees_two_sessions_certainly_live_on_one_seat() {
    // b's start was answered at 20 and b seen live by a heartbeat sent at
    // 40; a was still seen live by a heartbeat sent at 50: both were live
    // over [20, 40].
    let recs = [
        started("a", 0, 10, 1),
        started("b", 15, 20, 2),
        beat("b", 40, 45, 2),
        beat("a", 50, 60, 1),
    ];
    let v = violations(&recs, &[]);
    assert!(v.iter().any(|m| m.contains("certainly live")), "{v:#?}");
}

#[test]
fn checker_sees_a_heartbeat_success_after_an_acknowledged_end() {
    let recs = [
        started("a", 0, 10, 1),
        rec(Kind::End, "a", 20, 30, 200, json!({"ended": true})),
        beat("a", 40, 50, 1),
    ];
    let v = violations(&recs, &[]);
    assert!(
        v.iter()
            .any(|m| m.contains("after its end was acknowledged")),
        "{v:#?}"
    );
    // The same heartbeat sent before the end's answer arrived is allowed
    // (it may have taken effect first).
    let recs = [
        started("a", 0, 10, 1),
        rec(Kind::End, "a", 20, 30, 200, json!({"ended": true})),
        beat("a", 25, 50, 1),
    ];
    let v = violations(&recs, &[]);
    assert!(
        !v.iter().any(|m| m.contains("end was acknowledged")),
        "{v:#?}"
    );
}

#[test]
fn checker_replays_the_log_exactly() {
    // Two starts on a one-seat key with no end between them, fences out
    // of order.
    let events = [
        event(
            1,
            "session_started",
            "a",
            0,
            json!({"fence": 2, "terminated": []}),
        ),
        event(
            2,
            "session_started",
            "b",
            10,
            json!({"fence": 1, "terminated": []}),
        ),
    ];
    let v = violations(&[], &events);
    assert!(
        v.iter()
            .any(|m| m.contains("2 sessions live when b started")),
        "{v:#?}"
    );
    assert!(
        v.iter().any(|m| m.contains("not above the previous")),
        "{v:#?}"
    );
    assert!(
        v.iter().any(|m| m.contains("no end after the final sweep")),
        "{v:#?}"
    );
}

#[test]
fn checker_counts_an_expiry_from_when_the_lease_ran_out() {
    // a's lease ran out at 2000; b started at 2500; the sweep wrote a's
    // expiry only after b's start. Not a violation.
    let events = [
        event(
            1,
            "session_started",
            "a",
            0,
            json!({"fence": 1, "terminated": []}),
        ),
        event(
            2,
            "session_started",
            "b",
            2_500,
            json!({"fence": 2, "terminated": []}),
        ),
        event(3, "session_expired", "a", 2_000, Value::Null),
        event(4, "session_ended", "b", 3_000, Value::Null),
    ];
    assert_eq!(violations(&[], &events), Vec::<String>::new());
    // Had the lease run out after b's start, both were live.
    let mut late = events.clone();
    late[2] = event(3, "session_expired", "a", 2_600, Value::Null);
    let v = violations(&[], &late);
    assert!(v.iter().any(|m| m.contains("2 sessions live")), "{v:#?}");
}
