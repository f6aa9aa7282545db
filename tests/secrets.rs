//! Secrets are never stored or shown (contract, "Words": a key "is shown
//! once, when created, and stored only as a SHA-256 hash"; issue 6: no
//! full access key or admin token in the database, the WAL, the logs or
//! any error body).
//!
//! The real binary runs with the most verbose logging (`KEYSEAT_LOG=trace`,
//! every crate at every level) and its stdout and stderr go to files. Keys
//! are created by the CLI and by the admin API, then used every way a
//! client or an operator might: starts, heartbeats, status, ends; unknown
//! keys with valid checksums; typos; malformed bodies that contain a full
//! key in every field; starts with a revoked key; admin calls with wrong
//! tokens (one of them an access key); CLI commands and the reference
//! `check` given a full key where a key id is expected. Then the database,
//! its WAL (while the server runs, and after it stops), the logs, every
//! HTTP response and every CLI output except the one creation answer are
//! searched for every full key and the admin token.
//!
//! So that the search means something, it also checks that each creation
//! answer does contain its key, that the logs contain the key prefixes
//! (the logs were captured, and at a level that names keys), and that the
//! database and the WAL contain the prefixes and a known label (the files
//! were read and hold the data).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use keyseat::keys::AccessKey;
use serde_json::{json, Value};

const ADMIN_TOKEN: &str = "secrets-test-admin-token-Zq8vN3xK0pLm";
const LABEL: &str = "secrets-test-label";

/// `keyseat` with a clean environment (no inherited `KEYSEAT_*`), the
/// most verbose log filter and rate limits off (this test sends many
/// failures from one address on purpose).
fn keyseat(db: &Path) -> Command {
    let mut cmd = common::keyseat_command();
    cmd.env("KEYSEAT_LOG", "trace")
        .env("KEYSEAT_RATE_LIMITS", "off")
        .env("NO_COLOR", "1")
        .arg("--database")
        .arg(db)
        .stdin(Stdio::null());
    cmd
}

/// Everything the test saw, to be searched at the end.
#[derive(Default)]
struct Seen {
    /// (what, text, the HTTP request it answered): responses, CLI
    /// outputs, logs.
    texts: Vec<(String, String, Option<String>)>,
}

impl Seen {
    fn add(&mut self, what: impl Into<String>, text: impl Into<String>) {
        self.texts.push((what.into(), text.into(), None));
    }

    fn add_output(&mut self, what: &str, out: &Output) {
        self.add(format!("{what} (stdout)"), lossy(&out.stdout));
        self.add(format!("{what} (stderr)"), lossy(&out.stderr));
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every file of the database (main, -wal, -shm, journals) as it is now.
fn database_files(db: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = db.parent().unwrap();
    let name = db.file_name().unwrap().to_string_lossy().into_owned();
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&name))
        .map(|e| {
            let p = e.path();
            let bytes = std::fs::read(&p).unwrap_or_default();
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    let n = needle.as_bytes();
    !n.is_empty() && haystack.windows(n.len()).any(|w| w == n)
}

/// The server's address from its "listening on http://…" log line.
fn wait_for_address(log: &Path, child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(i) = text.find("listening on http://") {
            let rest = &text[i + "listening on ".len()..];
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            return rest[..end].to_owned();
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("server exited ({status}) before listening:\n{text}");
        }
        assert!(Instant::now() < deadline, "server not ready:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One request: returns status and body text, recording the body.
async fn call(
    seen: &mut Seen,
    client: &reqwest::Client,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut req = client.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_owned());
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = format!("{:?}", resp.headers());
    let text = resp.text().await.expect("body");
    let request = format!(
        "{method} {url} {} {}",
        token.unwrap_or(""),
        body.unwrap_or("")
    );
    seen.texts.push((
        format!("{method} {url} -> {status} (headers)"),
        headers,
        Some(request.clone()),
    ));
    seen.texts.push((
        format!("{method} {url} -> {status}"),
        text.clone(),
        Some(request),
    ));
    (status, text)
}

/// Percent-encodes a query value.
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Signs in to the dashboard with the admin token: the session cookie
/// header and the CSRF token of its forms.
async fn dashboard_sign_in(http: &reqwest::Client, base: &str) -> (String, String) {
    let cookie_of = |resp: &reqwest::Response, name: &str| -> String {
        resp.headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.split(';').next())
            .unwrap_or_else(|| panic!("no {name} cookie"))
            .to_owned()
    };
    let csrf_of = |body: &str| -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = body.find(marker).expect("a csrf field") + marker.len();
        body[start..start + body[start..].find('"').unwrap()].to_owned()
    };
    let form = http
        .get(format!("{base}/admin/sign-in"))
        .send()
        .await
        .unwrap();
    let signin = cookie_of(&form, "keyseat_signin");
    let csrf = csrf_of(&form.text().await.unwrap());
    let resp = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{base}/admin/sign-in"))
        .header("cookie", format!("keyseat_signin={signin}"))
        .form(&[("csrf", csrf.as_str()), ("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303, "dashboard sign-in");
    let session = format!("keyseat_session={}", cookie_of(&resp, "keyseat_session"));
    let home = http
        .get(format!("{base}/admin"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    let csrf = csrf_of(&home.text().await.unwrap());
    (session, csrf)
}

/// One dashboard request (a GET, or a POST of `form`), not following
/// redirects: returns status and body, recording body and headers.
async fn dashboard_call(
    seen: &mut Seen,
    base: &str,
    cookie: &(String, String),
    path: &str,
    form: Option<&str>,
) -> (u16, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = format!("{base}{path}");
    let req = match form {
        Some(f) => client
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(f.to_owned()),
        None => client.get(&url),
    };
    let resp = req
        .header("cookie", &cookie.0)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let headers = format!("{:?}", resp.headers());
    let text = resp.text().await.expect("body");
    let request = format!("{path} {}", form.unwrap_or(""));
    // The request as sent is percent-encoded; decode it so an echo of
    // what it carried is told apart from a leak.
    let request = percent_decode(&request);
    let what = format!(
        "dashboard {} {path} -> {status}",
        if form.is_some() { "POST" } else { "GET" }
    );
    seen.texts
        .push((format!("{what} (headers)"), headers, Some(request.clone())));
    seen.texts.push((what, text.clone(), Some(request)));
    (status, text)
}

fn percent_decode(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A key with one character changed (a typo: fails the checksum).
fn typo(key: &str) -> String {
    let mut b = key.as_bytes().to_vec();
    b[20] = if b[20] == b'a' { b'b' } else { b'a' };
    String::from_utf8(b).unwrap()
}

/// Bodies that are wrong in every way while carrying `key` somewhere.
fn bad_bodies_with(key: &str) -> Vec<String> {
    let k = serde_json::to_string(key).unwrap();
    vec![
        format!("{{\"access_key\": {k}"),
        format!("{{\"access_key\": {k},}}"),
        format!("{{\"access_key\": [{k}]}}"),
        format!("{{\"access_key\": {{\"k\": {k}}}}}"),
        format!("{{\"access_key\": 5, \"session_id\": {k}}}"),
        format!("{{\"access_key\": {k}, \"session_id\": 7}}"),
        format!("{{\"access_key\": {k}, \"session_id\": \"short\"}}"),
        format!("{{\"access_key\": {k}, \"device\": {k}}}"),
        format!("{{\"access_key\": {k}, \"device\": {{\"name\": 5, \"fingerprint\": {k}}}}}"),
        format!("{{\"access_key\": {k}, \"device\": [{k}, {k}, {k}]}}"),
        // well-formed, but the key pasted into a field that is stored and
        // logged
        format!("{{\"access_key\": {k}, \"session_id\": {k}}}"),
        format!("{{\"access_key\": {k}, \"device\": {{\"name\": {k}}}}}"),
        format!("{{\"access_key\": {k}, \"device\": {{\"fingerprint\": {k}}}}}"),
        format!("{{\"access_key\": {k}, \"device\": {{\"name\": \"my {key}\"}}}}"),
        format!("{{\"access_key\": \" {key} x\"}}"),
        format!("{{\"access_key\": \"{}\"}}", key.repeat(7)),
        format!("[{k}]"),
        k.clone(),
        key.to_owned(),
        format!("access_key={key}"),
    ]
}

/// Admin bodies that are wrong and carry `key` in each field.
fn bad_admin_bodies_with(key: &str) -> Vec<String> {
    let k = serde_json::to_string(key).unwrap();
    vec![
        format!("{{\"label\": {k}, \"max_sessions\": {k}}}"),
        format!("{{\"max_sessions\": {k}}}"),
        format!("{{\"on_conflict\": {k}}}"),
        format!("{{\"expires_at\": {k}}}"),
        format!("{{\"expires_at\": \"x{key}\"}}"),
        format!("{{\"status\": {k}}}"),
        format!("{{\"label\": [{k}]}}"),
        format!("{{\"label\": {k}"),
        k,
    ]
}

/// What the search found.
struct Found {
    /// A secret where it must never be: the database or WAL, a log, a CLI
    /// output, or an HTTP answer to a request that did not carry it.
    leaks: Vec<String>,
    /// A secret in an HTTP error answering the very request that carried
    /// it in some other field (serde's "invalid type: string \"ks_…\""):
    /// the client gets back only what it sent, but the contract says no
    /// error body shows a key. Known bug, see below.
    echoes: Vec<String>,
}

/// No full access key or admin token is stored, logged, or shown to
/// anyone who did not send it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_is_stored_logged_or_shown() {
    let found = scenario().await;
    assert!(
        found.leaks.is_empty(),
        "{} leak(s):\n{}",
        found.leaks.len(),
        found.leaks.join("\n")
    );
    assert!(
        found.echoes.is_empty(),
        "{} echo(es) of a key back to the client that sent it:\n{}",
        found.echoes.len(),
        found.echoes.join("\n")
    );
}

/// Found by this file (fixed in the PATCH handler, which quotes the value
/// through `keys::redact_secret`): `{"status": "ks_…"}` was answered
/// "status must be `active` or `suspended` (got `ks_…`)", echoing the key
/// to the client that sent it. serde's own messages (`invalid type: string
/// "ks_…"`) are redacted in `parse_json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_bodies_never_echo_a_key_sent_in_another_field() {
    let found = scenario().await;
    assert!(
        found.echoes.is_empty(),
        "{} echo(es):\n{}",
        found.echoes.len(),
        found.echoes.join("\n")
    );
}

async fn scenario() -> Found {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("secrets.db");
    let server_log = dir.path().join("server.stderr");
    let server_out = dir.path().join("server.stdout");
    let mut seen = Seen::default();
    // The one answer allowed to show each secret, kept apart.
    let mut creations: Vec<(String, String)> = Vec::new();

    // ---- a key from the CLI
    let out = keyseat(&db).args(["migrate"]).output().unwrap();
    assert!(out.status.success(), "{}", lossy(&out.stderr));
    seen.add_output("migrate", &out);
    let out = keyseat(&db)
        .args(["keys", "create", "--label", LABEL, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", lossy(&out.stderr));
    let created: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let cli_key = created["access_key"].as_str().unwrap().to_owned();
    let cli_key_id = created["key_id"].as_str().unwrap().to_owned();
    creations.push(("keys create (stdout)".into(), lossy(&out.stdout)));
    seen.add("keys create (stderr)", lossy(&out.stderr));

    // ---- the server, most verbose
    let mut server = keyseat(&db)
        .env("KEYSEAT_ADMIN_TOKEN", ADMIN_TOKEN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(std::fs::File::create(&server_out).unwrap())
        .stderr(std::fs::File::create(&server_log).unwrap())
        .spawn()
        .unwrap();
    struct Kill(Option<Child>);
    impl Drop for Kill {
        fn drop(&mut self) {
            if let Some(c) = self.0.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let base = wait_for_address(&server_log, &mut server);
    let mut server = Kill(Some(server));
    let url = |p: &str| format!("{base}{p}");
    let http = reqwest::Client::new();
    let admin = Some(ADMIN_TOKEN);

    // ---- a key from the admin API
    let (status, text) = call(
        &mut Seen::default(),
        &http,
        "POST",
        &url("/api/admin/keys"),
        admin,
        Some(&json!({"label": LABEL, "max_sessions": 2}).to_string()),
    )
    .await;
    assert_eq!(status, 201, "{text}");
    let created: Value = serde_json::from_str(&text).unwrap();
    let api_key = created["access_key"].as_str().unwrap().to_owned();
    let api_key_id = created["key_id"].as_str().unwrap().to_owned();
    creations.push(("POST /api/admin/keys".into(), text));

    // Keys that do not exist but look perfect (valid checksum), and typos.
    let unknown: Vec<String> = (0..3)
        .map(|_| AccessKey::generate().expose_secret().to_owned())
        .collect();
    let real = [cli_key.clone(), api_key.clone()];

    // ---- normal use of both keys
    for (i, key) in real.iter().enumerate() {
        let start = json!({"access_key": key, "device": {"name": format!("device-{i}"), "fingerprint": "fp-1"}});
        let (status, text) = call(
            &mut seen,
            &http,
            "POST",
            &url("/api/session/start"),
            None,
            Some(&start.to_string()),
        )
        .await;
        assert_eq!(status, 200, "{text}");
        let sid = serde_json::from_str::<Value>(&text).unwrap()["session_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let pair = json!({"access_key": key, "session_id": sid}).to_string();
        for path in ["/api/session/heartbeat", "/api/session/status"] {
            let (status, text) =
                call(&mut seen, &http, "POST", &url(path), None, Some(&pair)).await;
            assert_eq!(status, 200, "{path}: {text}");
        }
        // a takeover, a retried start with a chosen id, then end everything
        let second = json!({"access_key": key, "session_id": format!("chosen-id-{i}-0001"), "device": {"name": "other"}});
        for _ in 0..2 {
            call(
                &mut seen,
                &http,
                "POST",
                &url("/api/session/start"),
                None,
                Some(&second.to_string()),
            )
            .await;
        }
        let (status, text) = call(
            &mut seen,
            &http,
            "POST",
            &url("/api/session/end"),
            None,
            Some(&pair),
        )
        .await;
        assert_eq!(status, 200, "{text}");
        // heartbeat after the end: 410 or 409 with details
        call(
            &mut seen,
            &http,
            "POST",
            &url("/api/session/heartbeat"),
            None,
            Some(&pair),
        )
        .await;
    }

    // ---- wrong keys: unknown with valid checksums, typos, key ids
    let mut wrong: Vec<String> = unknown.clone();
    wrong.extend(real.iter().map(|k| typo(k)));
    wrong.push(cli_key_id.clone());
    for key in &wrong {
        for path in [
            "/api/session/start",
            "/api/session/heartbeat",
            "/api/session/end",
            "/api/session/status",
        ] {
            let body = json!({"access_key": key, "session_id": "abcdefgh-1234"}).to_string();
            let (status, text) =
                call(&mut seen, &http, "POST", &url(path), None, Some(&body)).await;
            assert!(
                (400..500).contains(&status),
                "{path} {key}: {status} {text}"
            );
        }
    }

    // ---- malformed bodies that contain a full key
    for key in real.iter().chain(unknown.iter()) {
        for body in bad_bodies_with(key) {
            for path in ["/api/session/start", "/api/session/heartbeat"] {
                let (status, text) =
                    call(&mut seen, &http, "POST", &url(path), None, Some(&body)).await;
                assert!(
                    (400..500).contains(&status),
                    "{path} {body}: {status} {text}"
                );
            }
        }
        for body in bad_admin_bodies_with(key) {
            let (status, text) = call(
                &mut seen,
                &http,
                "POST",
                &url("/api/admin/keys"),
                admin,
                Some(&body),
            )
            .await;
            // `{"status": …}` is an unknown field for a creation: ignored, 201
            let ok = (400..500).contains(&status) || (status == 201 && body.contains("status"));
            assert!(ok, "create {body}: {status} {text}");
            let patch = url(&format!("/api/admin/keys/{api_key_id}"));
            let (status, text) = call(&mut seen, &http, "PATCH", &patch, admin, Some(&body)).await;
            assert!(
                (400..500).contains(&status),
                "patch {body}: {status} {text}"
            );
        }
        // a full key where a key id, a session id or a filter is expected
        for path in [
            format!("/api/admin/keys/{key}"),
            format!("/api/admin/keys/{key}/revoke"),
            format!("/api/admin/sessions/{key}"),
            format!("/api/admin/sessions?key_id={key}"),
            format!("/api/admin/events?key_id={key}"),
            format!("/api/admin/events?since={key}"),
            format!("/api/admin/events?type={key}"),
            format!("/api/admin/keys?limit={key}"),
            format!("/api/admin/keys?after={key}"),
            format!("/api/admin/keys?limit=2&after=x{key}"),
            format!("/api/admin/events?limit={key}"),
            format!("/api/admin/sessions?key_id=x{key}"),
        ] {
            let method = if path.ends_with("/revoke") {
                "POST"
            } else if path.starts_with("/api/admin/sessions/") {
                "DELETE"
            } else {
                "GET"
            };
            let (status, text) = call(&mut seen, &http, method, &url(&path), admin, None).await;
            assert!(
                (400..500).contains(&status),
                "{method} {path}: {status} {text}"
            );
        }
    }

    // ---- the dashboard: every field that is refilled or linked again,
    // given a whole key, a mistyped one and one behind other text
    let cookie = dashboard_sign_in(&http, &base).await;
    for key in real.iter().chain(unknown.iter()) {
        let e = urlencode(key);
        let t = urlencode(&typo(key));
        let x = urlencode(&format!("x {key}"));
        let mut paths = Vec::new();
        for v in [&e, &t, &x] {
            paths.extend([
                format!("/admin/keys?q={v}"),
                format!("/admin/keys?q={v}&page=2"),
                format!("/admin/events?key={v}"),
                format!("/admin/events?since={v}"),
                format!("/admin/events?until={v}"),
                format!("/admin/events?type={v}"),
                format!("/admin/sharing?since={v}"),
                format!("/admin/sharing?within={v}"),
                format!("/admin/sessions?key={v}"),
                format!("/admin/keys?done={v}"),
                format!("/admin/keys?page={v}"),
                format!("/admin/keys/{v}"),
            ]);
        }
        for path in paths {
            let (status, text) = dashboard_call(&mut seen, &base, &cookie, &path, None).await;
            assert!(status < 500, "GET {path}: {status} {text}");
        }
        // a kick whose way back carries the key
        let id = format!("kick-me-{}", &key[3..11]);
        let form = format!(
            "csrf={}&back={}",
            cookie.1,
            urlencode(&format!("/admin/sessions?key={key}"))
        );
        let path = format!("/admin/sessions/{id}/kick");
        let (status, text) = dashboard_call(&mut seen, &base, &cookie, &path, Some(&form)).await;
        assert!(status < 500, "POST {path}: {status} {text}");
    }

    // ---- admin calls with wrong tokens (one of them an access key)
    let wrong_tokens = [
        format!("{ADMIN_TOKEN}x"),
        ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1].to_owned(),
        api_key.clone(),
        unknown[0].clone(),
    ];
    for token in &wrong_tokens {
        for (method, path) in [
            ("GET", "/api/admin/keys".to_owned()),
            ("POST", "/api/admin/keys".to_owned()),
            ("GET", format!("/api/admin/keys/{api_key_id}")),
            ("GET", "/api/admin/nope".to_owned()),
        ] {
            let body = (method == "POST").then_some("{}");
            let (status, text) =
                call(&mut seen, &http, method, &url(&path), Some(token), body).await;
            assert_eq!(status, 401, "{method} {path}: {text}");
        }
    }

    // ---- admin reads (must show prefixes, never secrets)
    for path in [
        "/api/admin/keys".to_owned(),
        format!("/api/admin/keys/{cli_key_id}"),
        "/api/admin/sessions".to_owned(),
        "/api/admin/events?limit=1000".to_owned(),
        "/health".to_owned(),
    ] {
        let (status, text) = call(&mut seen, &http, "GET", &url(&path), admin, None).await;
        assert_eq!(status, 200, "{path}: {text}");
    }

    // ---- revoke the API key, then try to use it
    let (status, text) = call(
        &mut seen,
        &http,
        "POST",
        &url(&format!("/api/admin/keys/{api_key_id}/revoke")),
        admin,
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    for _ in 0..2 {
        let body = json!({"access_key": api_key, "device": {"name": "after-revoke"}}).to_string();
        let (status, text) = call(
            &mut seen,
            &http,
            "POST",
            &url("/api/session/start"),
            None,
            Some(&body),
        )
        .await;
        assert_eq!(status, 403, "{text}");
    }

    // ---- the CLI given full keys where key ids are expected, and the
    // reference checker (a full session flow) with good and bad keys
    for key in real.iter().chain(unknown.iter()) {
        for args in [
            vec!["keys", "show", key.as_str()],
            vec!["keys", "show", key.as_str(), "--json"],
            vec!["keys", "update", key.as_str(), "--label", "x"],
            vec!["keys", "suspend", key.as_str()],
            vec!["keys", "revoke", key.as_str(), "--json"],
            vec!["sessions", "list", "--key", key.as_str()],
            vec!["sessions", "kick", key.as_str()],
            vec!["events", "--key", key.as_str()],
            vec!["events", "--since", key.as_str()],
            vec!["keys", "create", "--expires-at", key.as_str()],
        ] {
            let out = keyseat(&db).args(&args).output().unwrap();
            // A real key where a key reference belongs finds its key (the
            // CLI accepts the full key); anywhere else it is refused.
            let key_ref = args[0] == "keys" && args[1] != "create" || args.contains(&"--key");
            if !(key_ref && real.contains(key)) {
                assert!(!out.status.success(), "{args:?} succeeded");
            }
            seen.add_output(&format!("keyseat {args:?}"), &out);
        }
    }
    for args in [
        vec!["keys", "list", "--json"],
        vec!["keys", "show", cli_key_id.as_str(), "--json"],
        vec!["sessions", "list", "--json"],
        vec!["events", "--limit", "1000", "--json"],
        vec!["events", "--limit", "1000"],
    ] {
        let out = keyseat(&db).args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", lossy(&out.stderr));
        seen.add_output(&format!("keyseat {args:?}"), &out);
    }
    // ---- signed answers and the signing-key commands (issue 15): the
    // private keys must appear in none of their outputs or the logs
    for args in [
        vec!["signing-key", "show"],
        vec!["signing-key", "show", "--pin"],
        vec!["signing-key", "rotate"],
        vec!["signing-key", "rotate", "--json"],
    ] {
        let out = keyseat(&db).args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", lossy(&out.stderr));
        seen.add_output(&format!("keyseat {args:?}"), &out);
    }
    let (status, text) = call(
        &mut seen,
        &http,
        "GET",
        &url("/api/signing-keys"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    for body in [
        json!({"access_key": cli_key, "nonce": "secrets-nonce-1"}),
        json!({"access_key": unknown[2], "nonce": "secrets-nonce-2"}),
        json!({"access_key": "ks_short", "nonce": "secrets-nonce-3"}),
    ] {
        call(
            &mut seen,
            &http,
            "POST",
            &url("/api/session/status"),
            None,
            Some(&body.to_string()),
        )
        .await;
    }
    for key in [
        cli_key.clone(),
        typo(&cli_key),
        unknown[1].clone(),
        api_key.clone(),
    ] {
        let out = keyseat(&db)
            .args(["check", "--server", &base, "--key", &key])
            .output()
            .unwrap();
        seen.add_output(&format!("keyseat check --key {}", &key[..11]), &out);
    }

    // ---- the database files while the server runs (WAL not yet
    // checkpointed away)
    let live_files = database_files(&db);
    let wal_live = live_files
        .iter()
        .find(|(p, _)| p.to_string_lossy().ends_with("-wal"))
        .map(|(_, b)| b.clone())
        .unwrap_or_default();

    // ---- stop the server (SIGTERM: clean stop, checkpoint)
    let pid = server.0.as_ref().unwrap().id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut child = server.0.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "server did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stopped_files = database_files(&db);
    let log = std::fs::read_to_string(&server_log).unwrap();
    seen.add("server stderr", log.clone());
    seen.add(
        "server stdout",
        std::fs::read_to_string(&server_out).unwrap(),
    );

    // ---- the search is meaningful
    for (what, text) in &creations {
        let has = [&cli_key, &api_key]
            .iter()
            .any(|k| text.contains(k.as_str()));
        assert!(has, "{what} does not show the new key: {text}");
    }
    for key in &real {
        let prefix = &key[..11];
        assert!(
            log.contains(prefix),
            "server log never names {prefix}: captured? level?"
        );
        let in_db = stopped_files.iter().any(|(_, b)| contains(b, prefix));
        assert!(in_db, "database files do not hold {prefix}");
    }
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "not verbose"
    );
    assert!(
        !wal_live.is_empty() && contains(&wal_live, LABEL),
        "the WAL read while running ({} bytes) does not hold the label",
        wal_live.len()
    );

    let mut leaks = Vec::new();
    // ---- the signing keys' private halves, in every text form
    let seeds: Vec<Vec<u8>> = {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let mut stmt = conn
            .prepare("SELECT private_key FROM signing_keys")
            .unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.map(|r| r.unwrap()).collect()
    };
    assert_eq!(seeds.len(), 3, "the first key and two rotations");
    for seed in &seeds {
        use base64::Engine;
        let forms = [
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(seed),
            base64::engine::general_purpose::STANDARD.encode(seed),
            seed.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            format!("{seed:?}"),
        ];
        for form in &forms {
            for (what, text, _) in &seen.texts {
                if text.contains(form.as_str()) {
                    leaks.push(format!("a signing key's private half in {what}"));
                }
            }
        }
    }

    // ---- and finds nothing
    let mut secrets: Vec<(&str, String)> = vec![("admin token", ADMIN_TOKEN.to_owned())];
    for k in real.iter().chain(unknown.iter()) {
        secrets.push(("access key", k.clone()));
    }
    let mut echoes = Vec::new();
    for (kind, secret) in &secrets {
        // the key's secret part after the prefix: a leak even if the
        // `ks_` or the prefix was cut off or escaped
        let tail = if secret.starts_with("ks_") {
            secret[11..].to_owned()
        } else {
            secret.clone()
        };
        // A mistyped key (character 20 changed, see `typo`) shown back is a
        // leak of the rest of the secret: search for what follows it too.
        let after_typo = secret.get(21..).filter(|_| secret.starts_with("ks_"));
        for (what, text, request) in &seen.texts {
            if let Some(rest) =
                after_typo.filter(|r| text.contains(*r) && !text.contains(tail.as_str()))
            {
                let line = format!("{kind} {}… (mistyped) in {what}: {text}", &secret[..11]);
                match request {
                    Some(r) if r.contains(rest) => echoes.push(line),
                    _ => leaks.push(line),
                }
            }
            if text.contains(tail.as_str()) {
                let line = format!("{kind} {}… in {what}: {text}", &secret[..11]);
                match request {
                    Some(r) if r.contains(tail.as_str()) => echoes.push(line),
                    _ => leaks.push(line),
                }
            }
        }
        for (path, bytes) in live_files.iter().chain(stopped_files.iter()) {
            if contains(bytes, &tail) {
                leaks.push(format!("{kind} {}… in {}", &secret[..11], path.display()));
            }
        }
        // the creation answers show their own key, and nothing else
        for (what, text) in &creations {
            if text.contains(tail.as_str()) && !text.contains(&format!("\"{secret}\"")) {
                leaks.push(format!("{kind} {}… in {what}", &secret[..11]));
            }
        }
    }
    let answers = seen.texts.len();
    println!(
        "secrets: searched {answers} responses/outputs/logs and {} database file snapshots for {} secrets",
        live_files.len() + stopped_files.len(),
        secrets.len()
    );
    Found { leaks, echoes }
}

/// The password in a PostgreSQL URL is never logged or printed (issue 14):
/// the server at the most verbose log level, every CLI command on the URL,
/// and the failures an operator meets (a wrong password, a database that
/// does not exist, a bad parameter, a server that is not there) name the
/// database with the password as `***`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_password_is_never_logged_or_printed() {
    let Some(url) = common::postgres::fresh_database().await else {
        return;
    };
    let password = password_of(&url);
    assert!(password.len() >= 8, "the test server's URL has a password");
    let dir = tempfile::tempdir().unwrap();
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut cli = |what: &str, db: &str, args: &[&str]| -> Output {
        let out = common::keyseat_command()
            .env("KEYSEAT_LOG", "trace")
            .env("NO_COLOR", "1")
            .arg("--database")
            .arg(db)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        seen.push((what.to_owned(), lossy(&out.stdout) + &lossy(&out.stderr)));
        out
    };
    assert!(cli("migrate", &url, &["migrate"]).status.success());
    let created = cli("keys create", &url, &["keys", "create", "--json"]);
    assert!(created.status.success());
    let key_id = serde_json::from_slice::<Value>(&created.stdout).unwrap()["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for args in [
        vec!["keys", "list"],
        vec!["keys", "show", &key_id],
        vec!["keys", "suspend", &key_id],
        vec!["sessions", "list"],
        vec!["events"],
        vec!["sweep"],
    ] {
        let out = cli(&args.join(" "), &url, &args);
        assert!(out.status.success(), "{args:?}: {}", lossy(&out.stderr));
    }
    let wrong_password = url.replacen(&password, "not-the-password", 1);
    let missing_db = common::postgres::with_database(&url, "ks_no_such_database");
    let bad_param = format!("{url}?sslmode=sometimes");
    let nobody_there = url.replacen(
        &url[url.rfind(':').unwrap()..url.rfind('/').unwrap()],
        &format!(":{}", common::free_port()),
        1,
    );
    for (what, db) in [
        ("wrong password", wrong_password.as_str()),
        ("missing database", missing_db.as_str()),
        ("bad parameter", bad_param.as_str()),
        ("nobody there", nobody_there.as_str()),
    ] {
        let out = cli(what, db, &["keys", "list"]);
        assert!(!out.status.success(), "{what} must fail");
        let stderr = lossy(&out.stderr);
        assert!(
            stderr.contains(":***@"),
            "{what}: the error names the database: {stderr}"
        );
    }

    let log = dir.path().join("server.log");
    let mut server = common::serve_command(&url, 0)
        .env("KEYSEAT_LOG", "trace")
        .env("NO_COLOR", "1")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let base = wait_for_address(&log, &mut server);
    let health = reqwest::get(format!("{base}/health")).await.unwrap();
    let body: Value = health.json().await.unwrap();
    assert_eq!(body["backend"], "postgres");
    rustix_kill_term(&server);
    let _ = server.wait();
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains(":***@"),
        "the log names the database, redacted:\n{log_text}"
    );
    seen.push(("server log".into(), log_text));

    for (what, text) in &seen {
        assert!(
            !text.contains(&password),
            "{what} shows the database password:\n{text}"
        );
    }
}

/// The password in `postgres://user:password@host/...`.
fn password_of(url: &str) -> String {
    let rest = &url[url.find("://").unwrap() + 3..];
    let userinfo = &rest[..rest.rfind('@').unwrap()];
    userinfo.split_once(':').unwrap().1.to_owned()
}

/// SIGTERM, as a service manager stops the server.
fn rustix_kill_term(child: &Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
}
