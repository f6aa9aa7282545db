//! Crash loop against the real binary: nothing acknowledged is ever lost.
//!
//! Each iteration starts `keyseat serve` on the same database file, runs
//! load from several concurrent clients (starts on `takeover` and `reject`
//! keys, heartbeats, ends, admin key creation, revocation and kicks), and
//! SIGKILLs the server at a random moment: usually under load, sometimes
//! while it is still starting (recovery itself interrupted). With the server
//! down it opens the file and checks:
//!
//! - `PRAGMA integrity_check` is `ok`;
//! - every acknowledged (2xx received) start has its session row with the
//!   fence the client was given and a `session_started` event; every
//!   acknowledged end, supersede and kick has the reason the client was
//!   told; every acknowledged key creation has its key, and every
//!   acknowledged revocation left the key revoked with no open session;
//! - the seat invariant: replaying the audit log in commit order (event
//!   ids), no key ever has more live sessions than seats (as
//!   `tests/concurrency.rs` decides it).
//!
//! Then it restarts the server and, while it starts, probes it with
//! requests whose right answer is known (health, status of a good and of a
//! revoked key, a heartbeat of an ended session): every answer must be that
//! right answer or 503 `unavailable`. Once ready, every operation
//! acknowledged in the iteration just killed is checked again over HTTP
//! (ended sessions answer their reason, revoked keys `key_revoked`, created
//! keys work, sessions acknowledged live are never `session_not_found`),
//! and the live sessions per key are within the seat limit.
//!
//! Any 5xx other than 503 `unavailable`, any panic in the server log, or a
//! dropped connection before the kill fails the test.
//!
//! Length: `KEYSEAT_CRASH_ITERATIONS` (default 20, about 30-60 s in a debug
//! build on a loaded 2-core machine); `KEYSEAT_CRASH_SEED` replays a run
//! (the seed is printed). A longer run:
//! `KEYSEAT_CRASH_ITERATIONS=200 cargo test --test crash_loop -- --nocapture`.

mod common;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const ADMIN_TOKEN: &str = "crash-loop-admin-token-0123456789";
const WORKERS: usize = 4;

// ---------------------------------------------------------------------------
// The real server

struct Proc {
    child: Child,
    url: String,
    log: PathBuf,
}

/// Spawns `keyseat serve` on `db` at a fresh port; does not wait for it.
fn spawn(db: &Path, log: &Path) -> Proc {
    let port = common::free_port();
    let mut cmd = common::serve_command(db, port);
    cmd.env("KEYSEAT_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("KEYSEAT_RATE_LIMITS", "off")
        // Long enough that nothing expires during the run: every answer
        // can be predicted from acknowledged operations alone.
        .env("KEYSEAT_SESSION_TIMEOUT_SECONDS", "3600")
        .env("KEYSEAT_HEARTBEAT_INTERVAL_SECONDS", "30")
        // Frequent background writes (sweep marks, heartbeat flushes), so
        // kills also land in the middle of those.
        .env("KEYSEAT_SWEEP_INTERVAL_SECONDS", "1")
        .env("KEYSEAT_HEARTBEAT_PERSIST_SECONDS", "1")
        .env("KEYSEAT_LOG", "warn")
        .stderr(File::create(log).unwrap());
    Proc {
        child: cmd.spawn().expect("spawn keyseat serve"),
        url: format!("http://127.0.0.1:{port}"),
        log: log.to_owned(),
    }
}

fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// What the clients were told (acknowledged = a 2xx answer arrived)

#[derive(Debug, Clone)]
struct KeyRec {
    access_key: String,
    key_id: String,
    max: usize,
    /// A revoke was sent (answered or not).
    revoke_sent: bool,
    /// A revoke was acknowledged.
    revoked: bool,
}

#[derive(Debug, Clone)]
struct SessRec {
    key: usize,
    fence: i64,
    /// The end reason a client was told (acknowledged), if any.
    ended: Option<String>,
    end_sent: bool,
    kick_sent: bool,
    /// The worker that owns it (heartbeats and ends it).
    owner: usize,
}

#[derive(Default)]
struct Model {
    keys: Vec<KeyRec>,
    sessions: HashMap<String, SessRec>,
    /// Operations acknowledged, by kind.
    acked: HashMap<&'static str, usize>,
    /// Acknowledged operations of the current iteration (for the HTTP
    /// re-check after restart): (kind, session id or key index).
    recent: Vec<(&'static str, String)>,
    /// Wrong answers seen (the test fails on any).
    errors: Vec<String>,
}

impl Model {
    fn ack(&mut self, kind: &'static str, what: String) {
        *self.acked.entry(kind).or_default() += 1;
        self.recent.push((kind, what));
    }

    /// A client was told this session ended with `reason`; that is final.
    fn told_ended(&mut self, id: &str, reason: &str) {
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

type Shared = Arc<Mutex<Model>>;

fn lock(m: &Shared) -> std::sync::MutexGuard<'_, Model> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn reason_of(code: &str) -> Option<&'static str> {
    Some(match code {
        "session_ended" => "ended",
        "session_superseded" => "superseded",
        "session_revoked" => "revoked",
        "session_expired" => "expired",
        _ => return None,
    })
}

async fn send(req: reqwest::RequestBuilder) -> Result<(u16, Value), reqwest::Error> {
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// A 5xx is only ever 503 `unavailable` with the JSON error shape.
fn check_5xx(m: &Shared, what: &str, status: u16, body: &Value) {
    if status >= 500 && !(status == 503 && code(body) == "unavailable") {
        lock(m).errors.push(format!(
            "{what}: {status} {body} (only 503 unavailable is allowed)"
        ));
    }
}

// ---------------------------------------------------------------------------
// Load

struct Load {
    client: reqwest::Client,
    url: String,
    model: Shared,
    killed: Arc<AtomicBool>,
    iteration: usize,
    worker: usize,
    sent: Arc<AtomicUsize>,
}

impl Load {
    fn post(&self, path: &str, body: Value) -> reqwest::RequestBuilder {
        self.client.post(format!("{}{path}", self.url)).json(&body)
    }

    fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(ADMIN_TOKEN)
    }

    /// Sends; `None` when the connection failed (unknown outcome), which
    /// is only allowed once the kill is under way.
    async fn go(&self, what: &str, req: reqwest::RequestBuilder) -> Option<(u16, Value)> {
        self.sent.fetch_add(1, Ordering::Relaxed);
        match send(req).await {
            Ok((status, body)) => {
                check_5xx(&self.model, what, status, &body);
                Some((status, body))
            }
            Err(e) => {
                if !self.killed.load(Ordering::SeqCst) {
                    lock(&self.model)
                        .errors
                        .push(format!("{what}: connection failed before the kill: {e}"));
                }
                None
            }
        }
    }

    async fn run(self, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
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
        let Some((status, body)) = self
            .go(
                "start",
                self.post(
                    "/api/session/start",
                    json!({"access_key": access_key, "session_id": id,
                           "device": {"name": format!("w{}", self.worker)}}),
                ),
            )
            .await
        else {
            return false;
        };
        let mut m = lock(&self.model);
        match (status, code(&body)) {
            (200, _) => {
                if body["session_id"] != json!(id) || body["resumed"] != json!(false) {
                    m.errors
                        .push(format!("start {id}: unexpected answer {body}"));
                }
                m.sessions.insert(
                    id.clone(),
                    SessRec {
                        key: k,
                        fence: body["fence"].as_i64().unwrap_or(-1),
                        ended: None,
                        end_sent: false,
                        kick_sent: false,
                        owner: self.worker,
                    },
                );
                for t in body["terminated_sessions"].as_array().into_iter().flatten() {
                    if let Some(tid) = t["session_id"].as_str() {
                        m.told_ended(tid, "superseded");
                    }
                }
                m.ack("start", id);
            }
            (409, "seats_full") | (403, "key_revoked") | (503, _) => {}
            _ if m.keys[k].revoke_sent && status == 403 => {}
            _ => m.errors.push(format!("start {id}: {status} {body}")),
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
        let Some((status, body)) = self
            .go(
                "heartbeat",
                self.post(
                    "/api/session/heartbeat",
                    json!({"access_key": key, "session_id": id}),
                ),
            )
            .await
        else {
            return false;
        };
        let mut m = lock(&self.model);
        // Another worker may have revoked the key since this one picked it.
        let revoked = m
            .sessions
            .get(&id)
            .is_some_and(|s| m.keys[s.key].revoke_sent);
        match (status, reason_of(code(&body))) {
            (200, _) | (503, _) => {}
            (403, _) if revoked && code(&body) == "key_revoked" => {}
            (409 | 410, Some(reason)) => m.told_ended(&id, reason),
            _ => m.errors.push(format!("heartbeat {id}: {status} {body}")),
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
        let Some((status, body)) = self
            .go(
                "end",
                self.post(
                    "/api/session/end",
                    json!({"access_key": key, "session_id": id}),
                ),
            )
            .await
        else {
            return false;
        };
        let mut m = lock(&self.model);
        // Another worker may have revoked the key since this one picked it.
        let revoked = m
            .sessions
            .get(&id)
            .is_some_and(|s| m.keys[s.key].revoke_sent);
        match status {
            403 if revoked && code(&body) == "key_revoked" => {}
            200 if body["ended"] == json!(true) => {
                m.told_ended(&id, "ended");
                m.ack("end", id);
            }
            200 => {
                let reason = body["reason"].as_str().unwrap_or("?").to_owned();
                m.told_ended(&id, &reason);
            }
            503 => {}
            _ => m.errors.push(format!("end {id}: {status} {body}")),
        }
        true
    }

    async fn create_key(&self, rng: &mut StdRng) -> bool {
        let max = rng.gen_range(1..=3usize);
        let policy = if rng.gen_bool(0.5) {
            "takeover"
        } else {
            "reject"
        };
        let Some((status, body)) = self
            .go(
                "create key",
                self.admin(reqwest::Method::POST, "/api/admin/keys")
                    .json(&json!({"max_sessions": max, "on_conflict": policy})),
            )
            .await
        else {
            return false;
        };
        let mut m = lock(&self.model);
        match status {
            201 => {
                let rec = KeyRec {
                    access_key: body["access_key"].as_str().unwrap_or_default().to_owned(),
                    key_id: body["key_id"].as_str().unwrap_or_default().to_owned(),
                    max,
                    revoke_sent: false,
                    revoked: false,
                };
                let what = rec.key_id.clone();
                m.keys.push(rec);
                m.ack("create key", what);
            }
            503 => {}
            _ => m.errors.push(format!("create key: {status} {body}")),
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
        let Some((status, body)) = self
            .go(
                "revoke",
                self.admin(
                    reqwest::Method::POST,
                    &format!("/api/admin/keys/{key_id}/revoke"),
                ),
            )
            .await
        else {
            return false;
        };
        let mut m = lock(&self.model);
        match status {
            200 if body["status"] == json!("revoked") => {
                if let Some(k) = m.keys.iter_mut().find(|k| k.key_id == key_id) {
                    k.revoked = true;
                }
                m.ack("revoke", key_id);
            }
            503 => {}
            _ => m.errors.push(format!("revoke {key_id}: {status} {body}")),
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
        let Some((status, body)) = self
            .go(
                "kick",
                self.admin(
                    reqwest::Method::DELETE,
                    &format!("/api/admin/sessions/{id}"),
                ),
            )
            .await
        else {
            return false;
        };
        let mut m = lock(&self.model);
        // Another worker may have revoked the key since this one picked it.
        let revoked = m
            .sessions
            .get(&id)
            .is_some_and(|s| m.keys[s.key].revoke_sent);
        match status {
            403 if revoked && code(&body) == "key_revoked" => {}
            200 if body["ended"] == json!(true) => {
                m.told_ended(&id, "revoked");
                m.ack("kick", id);
            }
            200 => {
                let reason = body["reason"].as_str().unwrap_or("?").to_owned();
                m.told_ended(&id, &reason);
            }
            503 => {}
            _ => m.errors.push(format!("kick {id}: {status} {body}")),
        }
        true
    }
}

// ---------------------------------------------------------------------------
// Checks with the server down: the file itself

/// Checks the file against everything acknowledged; returns the number of
/// acknowledged facts checked.
fn check_file(db: &Path, m: &Model) -> usize {
    let conn = rusqlite::Connection::open(db).expect("open the database");
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok", "integrity_check");

    let mut checked = 0;
    let mut max_of: HashMap<String, usize> = HashMap::new();
    {
        let mut q = conn
            .prepare("SELECT key_id, max_sessions, status FROM keys")
            .unwrap();
        let rows = q
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .unwrap();
        let mut status_of = HashMap::new();
        for row in rows {
            let (id, max, status) = row.unwrap();
            max_of.insert(id.clone(), max as usize);
            status_of.insert(id, status);
        }
        for k in &m.keys {
            let status = status_of
                .get(&k.key_id)
                .unwrap_or_else(|| panic!("acknowledged key {} is missing", k.key_id));
            assert_eq!(max_of[&k.key_id], k.max, "seats of {}", k.key_id);
            if k.revoked {
                assert_eq!(status, "revoked", "acknowledged revocation of {}", k.key_id);
                checked += 1;
            }
            checked += 1;
        }
    }

    let mut rows: HashMap<String, (String, i64, Option<String>)> = HashMap::new();
    {
        let mut q = conn
            .prepare("SELECT session_id, key_id, fence, end_reason FROM sessions")
            .unwrap();
        for row in q
            .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))
            .unwrap()
        {
            let (id, rest): (String, _) = row.unwrap();
            rows.insert(id, rest);
        }
    }
    let mut started_events = HashSet::new();
    {
        let mut q = conn
            .prepare("SELECT session_id FROM events WHERE type = 'session_started'")
            .unwrap();
        for row in q.query_map([], |r| r.get::<_, String>(0)).unwrap() {
            started_events.insert(row.unwrap());
        }
    }
    for (id, s) in &m.sessions {
        let key = &m.keys[s.key];
        let (key_id, fence, reason) = rows
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged start of {id} is missing"));
        assert_eq!(key_id, &key.key_id, "key of {id}");
        assert_eq!(*fence, s.fence, "fence of {id}");
        assert!(
            started_events.contains(id),
            "no session_started event for {id}"
        );
        checked += 1;
        if let Some(told) = &s.ended {
            assert_eq!(
                reason.as_deref(),
                Some(told.as_str()),
                "{id} was acknowledged as ended ({told})"
            );
            checked += 1;
        }
        if key.revoked {
            assert!(reason.is_some(), "{id} is open on revoked key {key_id}");
        }
    }

    // The seat invariant over the whole history, in commit order.
    let mut live: HashMap<String, HashSet<String>> = HashMap::new();
    let mut q = conn
        .prepare("SELECT id, type, key_id, session_id FROM events ORDER BY id")
        .unwrap();
    let events = q
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })
        .unwrap();
    for e in events {
        let (eid, kind, key, session) = e.unwrap();
        let (Some(key), Some(session)) = (key, session) else {
            continue;
        };
        let set = live.entry(key.clone()).or_default();
        match kind.as_str() {
            "session_started" => {
                assert!(
                    set.insert(session.clone()),
                    "event {eid}: {session} started twice"
                );
                assert!(
                    set.len() <= max_of[&key],
                    "event {eid}: key {key} has {} live sessions on {} seats",
                    set.len(),
                    max_of[&key]
                );
            }
            "session_ended" | "session_superseded" | "session_expired" | "session_revoked" => {
                assert!(
                    set.remove(&session),
                    "event {eid}: {kind} for {session}, which was not live"
                );
            }
            _ => {}
        }
    }
    // Open rows and the replayed history agree.
    for (id, (key_id, _, reason)) in &rows {
        let open_in_history = live.get(key_id).is_some_and(|s| s.contains(id));
        assert_eq!(
            reason.is_none(),
            open_in_history,
            "session {id}: row and audit log disagree on whether it is open"
        );
    }
    checked
}

// ---------------------------------------------------------------------------
// Checks with the server up

/// Probes the starting server until it is ready: every answer must be the
/// right one or 503 `unavailable`. Returns how many 503s it saw.
async fn probe_start_up(p: &mut Proc, m: &Model) -> usize {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
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
        let health = send(client.get(format!("{}/health", p.url))).await;
        let Ok((hs, hb)) = health else {
            // Not listening yet.
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        };
        let mut answers = vec![("health", hs, hb.clone(), 200, "")];
        let (s, b) = send(
            client
                .post(format!("{}/api/session/status", p.url))
                .json(&json!({"access_key": good})),
        )
        .await
        .unwrap();
        answers.push(("status of a good key", s, b, 200, ""));
        if let Some(k) = &revoked {
            let (s, b) = send(
                client
                    .post(format!("{}/api/session/status", p.url))
                    .json(&json!({"access_key": k.access_key})),
            )
            .await
            .unwrap();
            answers.push(("status of a revoked key", s, b, 403, "key_revoked"));
        }
        if let Some((id, key)) = &ended {
            let (s, b) = send(
                client
                    .post(format!("{}/api/session/heartbeat", p.url))
                    .json(&json!({"access_key": key, "session_id": id})),
            )
            .await
            .unwrap();
            answers.push(("heartbeat of an ended session", s, b, 410, "session_ended"));
        }
        for (what, status, body, want, want_code) in &answers {
            if *status == 503 && *what == "health" {
                // /health has its own shape (docs/api.md, "Before ready").
                assert_eq!(body["status"], "starting", "{what} while starting: {body}");
                unavailable += 1;
            } else if *status == 503 {
                assert_eq!(code(body), "unavailable", "{what} while starting: {body}");
                unavailable += 1;
            } else if *what == "health" {
                assert_eq!(*status, 200, "{what}: {body}");
                assert_eq!(body["status"], "ok", "{what}: {body}");
            } else {
                assert_eq!(*status, *want, "{what} while starting: {body}");
                assert_eq!(code(body), *want_code, "{what} while starting: {body}");
            }
        }
        if hs == 200 {
            return unavailable;
        }
    }
}

/// Re-checks over HTTP what the last iteration acknowledged; returns the
/// number of checks.
async fn check_over_http(url: &str, m: &Model) -> usize {
    let client = reqwest::Client::new();
    let mut checked = 0;
    for (kind, what) in &m.recent {
        match *kind {
            "start" | "end" | "kick" => {
                let s = &m.sessions[what];
                let key = &m.keys[s.key];
                let (status, body) = send(
                    client
                        .post(format!("{url}/api/session/heartbeat"))
                        .json(&json!({"access_key": key.access_key, "session_id": what})),
                )
                .await
                .unwrap();
                let c = code(&body);
                let ok = match (&s.ended, status) {
                    _ if key.revoke_sent && status == 403 && c == "key_revoked" => true,
                    _ if key.revoked => false,
                    (Some(r), 409 | 410) => reason_of(c) == Some(r.as_str()),
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
                     after restart: heartbeat {status} {body}",
                    s.ended, s.end_sent, s.kick_sent, key.revoke_sent
                );
            }
            "create key" | "revoke" => {
                let key = m.keys.iter().find(|k| &k.key_id == what).unwrap();
                let (status, body) = send(
                    client
                        .post(format!("{url}/api/session/status"))
                        .json(&json!({"access_key": key.access_key})),
                )
                .await
                .unwrap();
                if key.revoked {
                    assert_eq!(
                        (status, code(&body)),
                        (403, "key_revoked"),
                        "{what}: {body}"
                    );
                } else if !(key.revoke_sent && status == 403 && code(&body) == "key_revoked") {
                    assert_eq!(status, 200, "created key {what} after restart: {body}");
                    assert_eq!(body["max_sessions"], key.max, "{what}: {body}");
                }
            }
            _ => unreachable!(),
        }
        checked += 1;
    }
    // Live sessions per key within the seat limit.
    let (status, body) = send(
        client
            .get(format!("{url}/api/admin/sessions"))
            .bearer_auth(ADMIN_TOKEN),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let mut per_key: HashMap<String, usize> = HashMap::new();
    for s in body["sessions"].as_array().unwrap() {
        *per_key
            .entry(s["key_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    for (key_id, n) in per_key {
        if let Some(k) = m.keys.iter().find(|k| k.key_id == key_id) {
            assert!(n <= k.max, "{key_id}: {n} live sessions on {} seats", k.max);
        }
    }
    checked
}

async fn create_initial_keys(url: &str, m: &Shared) {
    let client = reqwest::Client::new();
    for (max, policy) in [
        (1, "takeover"),
        (1, "reject"),
        (3, "takeover"),
        (2, "reject"),
        (1, "takeover"),
        (3, "reject"),
    ] {
        let (status, body) = send(
            client
                .post(format!("{url}/api/admin/keys"))
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({"max_sessions": max, "on_conflict": policy})),
        )
        .await
        .unwrap();
        assert_eq!(status, 201, "{body}");
        let mut m = lock(m);
        m.keys.push(KeyRec {
            access_key: body["access_key"].as_str().unwrap().to_owned(),
            key_id: body["key_id"].as_str().unwrap().to_owned(),
            max,
            revoke_sent: false,
            revoked: false,
        });
        m.ack("create key", body["key_id"].as_str().unwrap().to_owned());
    }
}

fn kill(p: &mut Proc) {
    p.child.kill().expect("SIGKILL");
    p.child.wait().unwrap();
    let log = log_text(&p.log);
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    let iterations: usize = std::env::var("KEYSEAT_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("KEYSEAT_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("crash loop: {iterations} iterations, KEYSEAT_CRASH_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keyseat.db");
    let model: Shared = Arc::default();
    let began = Instant::now();
    let mut facts_checked = 0;
    let mut http_checked = 0;
    let mut unavailable_seen = 0;
    let mut kills_in_start_up = 0;
    let mut requests = 0;

    for iteration in 0..iterations {
        let log = dir.path().join(format!("server-{iteration}.log"));
        let mut p = spawn(&db, &log);

        if iteration > 0 && rng.gen_bool(0.2) {
            // Kill it while it opens the file and recovers, then start
            // again: an interrupted recovery must lose nothing either.
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..60))).await;
            kill(&mut p);
            kills_in_start_up += 1;
            facts_checked += check_file(&db, &lock(&model));
            p = spawn(&db, &log);
        }

        let snapshot = {
            let m = lock(&model);
            Model {
                keys: m.keys.clone(),
                sessions: m.sessions.clone(),
                recent: m.recent.clone(),
                ..Model::default()
            }
        };
        if iteration == 0 {
            // Nothing to probe yet: wait for readiness, then make keys.
            let client = reqwest::Client::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            while !matches!(
                send(client.get(format!("{}/health", p.url))).await,
                Ok((200, _))
            ) {
                assert!(Instant::now() < deadline, "{}", log_text(&p.log));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            create_initial_keys(&p.url, &model).await;
        } else {
            unavailable_seen += probe_start_up(&mut p, &snapshot).await;
            http_checked += check_over_http(&p.url, &snapshot).await;
        }
        lock(&model).recent.clear();

        // Load, then SIGKILL at a random moment.
        let killed = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let workers: Vec<_> = (0..WORKERS)
            .map(|worker| {
                let load = Load {
                    client: client.clone(),
                    url: p.url.clone(),
                    model: model.clone(),
                    killed: killed.clone(),
                    iteration,
                    worker,
                    sent: sent.clone(),
                };
                tokio::spawn(load.run(rng.gen()))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..1500))).await;
        killed.store(true, Ordering::SeqCst);
        kill(&mut p);
        for w in workers {
            w.await.unwrap();
        }
        requests += sent.load(Ordering::Relaxed);
        let m = lock(&model);
        assert!(
            m.errors.is_empty(),
            "wrong answers:\n{}",
            m.errors.join("\n")
        );
        facts_checked += check_file(&db, &m);
    }

    // A last start and check of everything that was ever acknowledged.
    let log = dir.path().join("server-final.log");
    let mut p = spawn(&db, &log);
    let snapshot = {
        let m = lock(&model);
        Model {
            keys: m.keys.clone(),
            sessions: m.sessions.clone(),
            recent: m.recent.clone(),
            ..Model::default()
        }
    };
    unavailable_seen += probe_start_up(&mut p, &snapshot).await;
    http_checked += check_over_http(&p.url, &snapshot).await;
    kill(&mut p);

    let m = lock(&model);
    let acked: usize = m.acked.values().sum();
    let mut kinds: Vec<_> = m.acked.iter().collect();
    kinds.sort();
    println!(
        "crash loop: {iterations} iterations ({kills_in_start_up} extra kills during start-up) in {:.1} s, \
         {requests} requests; acknowledged operations: {acked} ({kinds:?}); \
         facts checked on disk: {facts_checked}; re-checked over HTTP after restart: {http_checked}; \
         503 answers while starting: {unavailable_seen}; lost = 0",
        began.elapsed().as_secs_f64()
    );
    assert!(
        m.acked.get("start").copied().unwrap_or(0) > iterations,
        "too little load to mean anything"
    );
}
