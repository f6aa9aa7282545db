//! The checker: whether a recorded history is one the contract allows
//! (the rules are in the binary's doc, tests/history/main.rs).

use std::collections::{HashMap, HashSet};

use keyseat::clock::Timestamp;
use serde_json::Value;

use super::{Kind, Rec, KEYS};

/// What the checker counted.
#[derive(Debug, Default)]
pub struct Stats {
    pub ops: usize,
    pub starts_ok: usize,
    pub rejected: usize,
    pub superseded: usize,
    pub expired: usize,
    pub events: usize,
    pub max_certainly_live: Vec<usize>,
    pub max_live_in_log: Vec<usize>,
    pub shed: usize,
    /// Borrows answered (new or of a live session).
    pub borrowed: usize,
    /// Events of each type, per key.
    pub by_type: Vec<std::collections::BTreeMap<String, usize>>,
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

pub fn check(recs: &[Rec], events: &[Value], key_ids: &[String], v: &mut Vec<String>) -> Stats {
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
    // Starts with no answer, or 503: each may or may not have been
    // committed (a server killed after its commit, a deadline passed
    // during one), so each may have left a `start_rejected` no client saw.
    let mut unanswered_starts = [0usize; 3];
    for (i, r) in recs.iter().enumerate() {
        match r.status {
            0 | 503 | 429 => {
                if matches!(r.kind, Kind::Start | Kind::Borrow) && r.status != 429 {
                    unanswered_starts[r.key] += 1;
                }
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
            (Kind::Start | Kind::Borrow, 200) => {
                if r.kind == Kind::Borrow {
                    st.borrowed += 1;
                    if ts(&r.body["borrowed_until"]) != ts(&r.body["expires_at"]) {
                        v.push(format!("a borrow's lease is not its borrow: {}", r.short()));
                    }
                }
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
            (Kind::Start | Kind::Borrow, 409) if r.code() == "session_id_taken" => {
                dead(&mut seen, &sid)
            }
            (Kind::Start | Kind::Borrow, 409) if r.code() == "seats_full" => {
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
    // The end of each session's borrow, from `session_borrowed`.
    let mut borrowed_until: HashMap<String, i64> = HashMap::new();
    let last_at = events
        .iter()
        .filter_map(|e| ts(&e["at"]))
        .max()
        .unwrap_or(0);
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
                    if borrowed_until.get(&t).is_some_and(|&u| u > at) {
                        v.push(format!("{sid} superseded {t}, which was borrowed"));
                    }
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
            "session_borrowed" => {
                if !live[k].contains(&sid) {
                    v.push(format!("{sid} borrowed but not live in the log"));
                }
                let until = ts(&e["detail"]["borrowed_until"]).unwrap_or(0);
                let before = borrowed_until.insert(sid.clone(), until);
                if before.is_some_and(|b| b > until) {
                    v.push(format!(
                        "{sid}: a borrow shortened to {until} from {before:?}"
                    ));
                }
            }
            _ => {}
        }
    }
    st.max_live_in_log = max_live.to_vec();
    for (k, l) in live.iter_mut().enumerate() {
        // A seat still borrowed at the final sweep is rightly held (its
        // client's early return got no answer, or the run ended first).
        l.retain(|sid| borrowed_until.get(sid).is_none_or(|&u| u <= last_at));
        if !l.is_empty() {
            v.push(format!(
                "key {k}: sessions with no end after the final sweep: {l:?}"
            ));
        }
    }
    let explained = (0..3).all(|k| {
        rejected_logged[k] >= rejected[k]
            && rejected_logged[k] <= rejected[k] + unanswered_starts[k]
    });
    if !explained {
        v.push(format!(
            "seats_full answers per key {rejected:?} but start_rejected events {rejected_logged:?} \
             (starts without an answer: {unanswered_starts:?})"
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
        if matches!(r.kind, Kind::Start | Kind::Borrow) && r.status == 200 {
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
