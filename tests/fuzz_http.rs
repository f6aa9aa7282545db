//! HTTP-level fuzzing of the session and admin routes.
//!
//! In-process: the real router (`keyseat::http::app`) over a real store,
//! driven with `tower::ServiceExt::oneshot` by random methods, paths (the
//! known routes with random ids, suffixes and query strings, and unknown
//! ones), headers (content-type and Authorization variants, lying
//! content-lengths, stray headers) and bodies (random bytes, structure-aware
//! JSON with the routes' field names, the real key, oversize bodies).
//! Properties: never a 5xx, never a panic; every non-2xx answer has
//! `Content-Type: application/json` and exactly the contract's error shape
//! `{"error": {"code": <snake_case>, "message": <non-empty>, …listed
//! extras}}`; every 2xx body is JSON.
//!
//! Over TCP: a real server (tests/common) gets random bytes, truncated
//! requests and invalid HTTP on fresh connections; it must never answer
//! 5xx, and the next valid request still gets `/health` 200 and a working
//! session start.
//!
//! Case counts: `PROPTEST_CASES` (defaults keep the file well under 60 s
//! in debug on a loaded 2-core machine). Executions are printed
//! (`cargo test --test fuzz_http -- --nocapture`). See docs/fuzzing.md.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderName, HeaderValue, Method, Request};
use axum::Router;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};
use tower::ServiceExt;

// ------------------------------------------------------------ the runner

fn fuzz<S: Strategy>(
    name: &str,
    default_cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    common::fuzz::run("fuzz_http", name, default_cases, 1_000, strategy, test);
}

use common::fuzz::TOKEN;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Extra fields the contract lists inside `error`.
const ERROR_EXTRAS: [&str; 4] = [
    "reason",
    "superseded_by",
    "max_sessions",
    "retry_after_seconds",
];

/// Checks the contract's error shape; `Err` says what is wrong.
fn check_error_shape(body: &Value) -> Result<(), String> {
    let top = body.as_object().ok_or("error body is not an object")?;
    if top.len() != 1 || !top.contains_key("error") {
        return Err(format!("top level must be exactly {{\"error\"}}: {body}"));
    }
    let error = top["error"].as_object().ok_or("`error` is not an object")?;
    let code = error.get("code").and_then(Value::as_str).unwrap_or("");
    let snake = !code.is_empty()
        && code.starts_with(|c: char| c.is_ascii_lowercase())
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !snake {
        return Err(format!("code is not snake_case: {body}"));
    }
    let message = error.get("message").and_then(Value::as_str).unwrap_or("");
    if message.trim().is_empty() {
        return Err(format!("empty message: {body}"));
    }
    for k in error.keys() {
        if k != "code" && k != "message" && !ERROR_EXTRAS.contains(&k.as_str()) {
            return Err(format!("unlisted field `{k}` in error: {body}"));
        }
    }
    Ok(())
}

// ---------------------------------------------------- in-process harness

struct Harness {
    rt: tokio::runtime::Runtime,
    router: Router,
    key: String,
    key_id: String,
    prefix: String,
    session_id: String,
    _dir: tempfile::TempDir,
}

/// What came back.
struct Answer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let (rt, router) = common::fuzz::ready_router(&dir.path().join("fuzz-http.db"));
        let mut h = Harness {
            rt,
            router,
            key: String::new(),
            key_id: String::new(),
            prefix: String::new(),
            session_id: String::new(),
            _dir: dir,
        };
        let auth = vec![(
            "authorization".to_owned(),
            format!("Bearer {TOKEN}").into_bytes(),
        )];
        let json_ct = ("content-type".to_owned(), b"application/json".to_vec());
        let mut headers = auth.clone();
        headers.push(json_ct.clone());
        let a = h.send(
            "POST",
            "/api/admin/keys",
            &headers,
            br#"{"max_sessions": 3}"#,
        );
        let key: Value = serde_json::from_slice(&a.body).unwrap();
        h.key = key["access_key"].as_str().unwrap().to_owned();
        h.key_id = key["key_id"].as_str().unwrap().to_owned();
        h.prefix = key["prefix"].as_str().unwrap().to_owned();
        let start = json!({"access_key": h.key}).to_string();
        let a = h.send("POST", "/api/session/start", &[json_ct], start.as_bytes());
        let s: Value = serde_json::from_slice(&a.body).unwrap();
        h.session_id = s["session_id"].as_str().unwrap().to_owned();
        h
    }

    fn send(&self, method: &str, uri: &str, headers: &[(String, Vec<u8>)], body: &[u8]) -> Answer {
        self.try_send(method, uri, headers, body)
            .expect("a valid request")
    }

    /// `None` when the request cannot be expressed in HTTP at all (a
    /// header value with a control character, say): no client can send it.
    fn try_send(
        &self,
        method: &str,
        uri: &str,
        headers: &[(String, Vec<u8>)],
        body: &[u8],
    ) -> Option<Answer> {
        let mut req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).ok()?)
            .uri(uri);
        for (name, value) in headers {
            req = req.header(
                HeaderName::from_bytes(name.as_bytes()).ok()?,
                HeaderValue::from_bytes(value).ok()?,
            );
        }
        let mut req = req.body(Body::from(body.to_vec())).ok()?;
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40001))));
        self.rt.block_on(async {
            let resp = self.router.clone().oneshot(req).await.unwrap();
            let status = resp.status().as_u16();
            let content_type = resp
                .headers()
                .get("content-type")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default();
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap()
                .to_vec();
            Some(Answer {
                status,
                content_type,
                body,
            })
        })
    }
}

// ------------------------------------------------------------ generators

fn valid_key() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(BASE62.to_vec()), 32).prop_map(|random| {
        let body = format!("ks_{}", String::from_utf8(random).unwrap());
        let mut value = u64::from(crc32fast::hash(body.as_bytes()));
        let mut digits = [b'0'; 6];
        for slot in digits.iter_mut().rev() {
            *slot = BASE62[(value % 62) as usize];
            value /= 62;
        }
        format!("{body}{}", String::from_utf8(digits.to_vec()).unwrap())
    })
}

/// Text that is safe to put in a URI path or query: unreserved characters
/// and percent-escapes of arbitrary bytes (invalid UTF-8 included).
fn uri_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(
                b"abcxyzABCXYZ0189-._~!$&'()*+,;=:@".to_vec()
            ).prop_map(|b| (b as char).to_string()),
            1 => any::<u8>().prop_map(|b| format!("%{b:02X}")),
            1 => prop::sample::select(vec!["%2F", "%2E%2E", "..", "%00", "%FF%FE", "%E2%80%AE", "%C0%AF", "/", "//"])
                .prop_map(str::to_owned),
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

/// A request line: mostly a known route with its own method, sometimes
/// any method on any path; ids drawn from the real key and session, the
/// secret, other keys, or junk; a random suffix and query.
fn request_line(h: &Harness) -> impl Strategy<Value = (String, String)> {
    let ids = prop_oneof![
        Just(h.key_id.clone()),
        Just(h.prefix.clone()),
        Just(h.prefix[3..].to_owned()),
        Just(h.key.clone()),
        Just(h.session_id.clone()),
        valid_key(),
        "key_[A-Za-z0-9]{16}",
        uri_text(),
        Just(String::new()),
    ];
    let routes = prop::sample::select(vec![
        ("GET", "/health"),
        ("POST", "/api/session/start"),
        ("POST", "/api/session/heartbeat"),
        ("POST", "/api/session/end"),
        ("POST", "/api/session/status"),
        ("POST", "/api/admin/keys"),
        ("GET", "/api/admin/keys"),
        ("GET", "/api/admin/keys/{}"),
        ("PATCH", "/api/admin/keys/{}"),
        ("POST", "/api/admin/keys/{}/revoke"),
        ("GET", "/api/admin/sessions"),
        ("DELETE", "/api/admin/sessions/{}"),
        ("GET", "/api/admin/events"),
        ("GET", "/api/admin/{}"),
        ("POST", "/api/session/{}"),
        ("GET", "/api"),
        ("GET", "/{}"),
        ("GET", "/"),
    ]);
    let suffix = prop_oneof![
        8 => Just(String::new()),
        1 => prop::sample::select(vec!["/", "//", "/x", "/..", "/%2e%2e", ";a=b", "%00", "%FF", "/revoke", "/keys"])
            .prop_map(str::to_owned),
        1 => uri_text().prop_map(|t| format!("/{t}")),
    ];
    let query_param = (
        prop::sample::select(vec![
            "limit", "after", "key_id", "type", "since", "before", "x", "", "limit[]",
        ]),
        prop_oneof![
            prop::sample::select(vec![
                "",
                "0",
                "1",
                "1000",
                "1001",
                "-1",
                "abc",
                "99999999999",
                "session_started",
                "2026-01-01T00:00:00Z",
                "%FF",
            ])
            .prop_map(str::to_owned),
            uri_text(),
        ],
    );
    let query = prop_oneof![
        3 => Just(String::new()),
        2 => prop::collection::vec(query_param, 0..4).prop_map(|ps| {
            let q: Vec<String> = ps.iter().map(|(n, v)| format!("{n}={v}")).collect();
            format!("?{}", q.join("&"))
        }),
        1 => uri_text().prop_map(|t| format!("?{t}")),
    ];
    (routes, method(), any::<bool>(), ids, suffix, query).prop_map(
        |((own, base), other, keep, id, suffix, query)| {
            let method = if keep { own.to_owned() } else { other };
            (
                method,
                format!("{}{suffix}{query}", base.replace("{}", &id)),
            )
        },
    )
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(vec![
            "GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS", "TRACE",
        ])
        .prop_map(str::to_owned),
        1 => "[A-Z]{1,10}",
        1 => "[a-z!#$%&'*+.^_`|~0-9-]{1,8}",
    ]
}

fn headers(h: &Harness) -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let content_type = prop::option::weighted(
        0.85,
        prop::sample::select(vec![
            "application/json",
            "application/json; charset=utf-8",
            "APPLICATION/JSON",
            " application/json ",
            "application/vnd.keyseat+json",
            "application/json, text/plain",
            "text/plain",
            "text/json",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonx",
            "",
            ";",
            "\u{7f}",
        ])
        .prop_map(|v| ("content-type".to_owned(), v.as_bytes().to_vec())),
    );
    let token = TOKEN.to_owned();
    let auth = prop::option::weighted(
        0.85,
        prop_oneof![
            12 => Just(format!("Bearer {token}").into_bytes()),
            1 => Just(format!("bearer   {token}  ").into_bytes()),
            1 => Just(format!("Bearer {token}x").into_bytes()),
            1 => Just(format!("Bearer {}", &token[..token.len() - 1]).into_bytes()),
            1 => Just(format!("Basic {token}").into_bytes()),
            1 => Just(token.clone().into_bytes()),
            1 => Just(b"Bearer".to_vec()),
            1 => Just(b"Bearer ".to_vec()),
            1 => Just(format!("Bearer {token} {token}").into_bytes()),
            1 => Just([b"Bearer ".as_slice(), &[0xff, 0xfe, 0x80]].concat()),
            1 => Just(format!("Bearer {}", "A".repeat(8192)).into_bytes()),
            1 => valid_key().prop_map(|k| format!("Bearer {k}").into_bytes()),
        ]
        .prop_map(|v| ("authorization".to_owned(), v)),
    );
    let stray = prop::collection::vec(
        prop_oneof![
            prop::sample::select(vec![
                "0",
                "1",
                "5",
                "99999999",
                "-1",
                "abc",
                "18446744073709551616"
            ])
            .prop_map(|v| ("content-length".to_owned(), v.as_bytes().to_vec())),
            Just(("transfer-encoding".to_owned(), b"chunked".to_vec())),
            Just(("accept".to_owned(), b"text/html".to_vec())),
            Just((
                "x-forwarded-for".to_owned(),
                b"1.2.3.4, ::1, garbage".to_vec()
            )),
            Just(("content-encoding".to_owned(), b"gzip".to_vec())),
            Just(("expect".to_owned(), b"100-continue".to_vec())),
            ("[a-z-]{1,12}", prop::collection::vec(0x20u8..0x7f, 0..20)),
        ],
        0..2,
    );
    let _ = h;
    (content_type, auth, stray).prop_map(|(ct, auth, stray)| {
        let mut all: Vec<(String, Vec<u8>)> = ct.into_iter().chain(auth).collect();
        all.extend(stray);
        all
    })
}

/// Bodies: random bytes, objects built from every route's field names with
/// values of any type, the real key in the right place, oversize bodies.
fn body(h: &Harness) -> impl Strategy<Value = Vec<u8>> {
    let names = prop::sample::select(vec![
        "access_key",
        "session_id",
        "device",
        "label",
        "max_sessions",
        "on_conflict",
        "expires_at",
        "status",
        "name",
        "x",
    ]);
    let scalar = prop_oneof![
        prop::sample::select(vec![
            "null",
            "true",
            "0",
            "1",
            "1000",
            "1001",
            "-1",
            "4294967296",
            "1e400",
            "1.5",
            "\"\"",
            "\"takeover\"",
            "\"reject\"",
            "\"suspended\"",
            "\"active\"",
            "\"2030-01-01T00:00:00Z\"",
            "\"\\u0000\"",
            "{}",
            "[]",
            "{\"name\":\"x\"}",
        ])
        .prop_map(str::to_owned),
        any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
        Just(serde_json::to_string(&h.key).unwrap()),
        Just(serde_json::to_string(&h.session_id).unwrap()),
        valid_key().prop_map(|k| serde_json::to_string(&k).unwrap()),
        (1..200usize).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n))),
    ];
    let object = prop::collection::vec((names, scalar), 0..6).prop_map(|fields| {
        let inner: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).unwrap()))
            .collect();
        format!("{{{}}}", inner.join(",")).into_bytes()
    });
    let key = h.key.clone();
    let sid = h.session_id.clone();
    prop_oneof![
        3 => object,
        1 => Just(json!({"access_key": key, "session_id": sid}).to_string().into_bytes()),
        2 => prop::collection::vec(any::<u8>(), 0..200),
        1 => any::<String>().prop_map(String::into_bytes),
        1 => Just(Vec::new()),
        1 => (16 * 1024 - 12..16 * 1024 + 64usize)
            .prop_map(|n| format!("{{\"label\":\"{}\"}}", "a".repeat(n)).into_bytes()),
    ]
}

// ---------------------------------------------------------- in-process

/// Any request to the session and admin routes: never a 5xx; errors are
/// JSON with exactly the contract's shape; successes are JSON.
#[test]
fn random_requests_get_contract_answers() {
    let h = Harness::new();
    let statuses = Mutex::new(std::collections::BTreeMap::<u16, u64>::new());
    let strategy = (request_line(&h), headers(&h), body(&h));
    fuzz(
        "router",
        4000,
        strategy,
        |((method, uri), headers, body)| {
            // The dashboard (HTML) and metrics (Prometheus text) are not part
            // of the JSON API.
            prop_assume!(!uri.starts_with("/admin") && !uri.starts_with("/metrics"));
            let a = h.try_send(&method, &uri, &headers, &body);
            prop_assume!(a.is_some());
            let a = a.unwrap();
            *statuses.lock().unwrap().entry(a.status).or_default() += 1;
            let what = format!(
                "{method} {uri} {:?} body {:?} -> {} {:?} {}",
                headers
                    .iter()
                    .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v)))
                    .collect::<Vec<_>>(),
                String::from_utf8_lossy(&body),
                a.status,
                a.content_type,
                String::from_utf8_lossy(&a.body)
            );
            prop_assert!(a.status < 500, "5xx: {}", what);
            prop_assert!(
                (200..300).contains(&a.status) || (400..500).contains(&a.status),
                "status: {}",
                what
            );
            if method == "HEAD" {
                return Ok(());
            }
            prop_assert!(
                a.content_type.starts_with("application/json"),
                "content type: {}",
                what
            );
            let v: Value = match serde_json::from_slice(&a.body) {
                Ok(v) => v,
                Err(e) => return Err(TestCaseError::fail(format!("not JSON ({e}): {what}"))),
            };
            if !(200..300).contains(&a.status) {
                if let Err(e) = check_error_shape(&v) {
                    return Err(TestCaseError::fail(format!("{e}: {what}")));
                }
            }
            Ok(())
        },
    );
    let statuses = statuses.into_inner().unwrap();
    println!("    statuses: {statuses:?}");
    // The run reached past the guards: successes and several error kinds.
    assert!(
        statuses.keys().any(|s| (200..300).contains(s)),
        "{statuses:?}"
    );
    assert!(statuses.len() >= 5, "{statuses:?}");
    // And the server still works.
    let a = h.send("GET", "/health", &[], b"");
    assert_eq!(a.status, 200);
}

/// Regression (found by `router`, fixed in a92d161): admin path ids with
/// a percent-escape that is not UTF-8 (`/api/admin/keys/%80`) got axum's
/// `text/plain` 400 instead of the contract's JSON error.
#[test]
fn non_utf8_path_ids_get_a_json_error() {
    let h = Harness::new();
    let auth = vec![(
        "authorization".to_owned(),
        format!("Bearer {TOKEN}").into_bytes(),
    )];
    for (method, uri) in [
        ("GET", "/api/admin/keys/%80"),
        ("PATCH", "/api/admin/keys/%FF"),
        ("POST", "/api/admin/keys/%C0%AF/revoke"),
        ("DELETE", "/api/admin/sessions/%80"),
    ] {
        let a = h.send(method, uri, &auth, b"");
        let what = format!(
            "{method} {uri}: {} {:?} {}",
            a.status,
            a.content_type,
            String::from_utf8_lossy(&a.body)
        );
        assert_eq!(a.status, 400, "{what}");
        assert!(a.content_type.starts_with("application/json"), "{what}");
        let v: Value = serde_json::from_slice(&a.body).expect(&what);
        check_error_shape(&v).expect(&what);
        assert_eq!(v["error"]["code"], "invalid_request", "{what}");
    }
}

// ------------------------------------------------------------- over TCP

/// One connection: writes `bytes` (ignoring a server that closes first),
/// then half-closes if asked (so a truncated request ends at once instead
/// of waiting for the server's client timeout; the server may then drop
/// the connection without answering), and reads what comes back.
fn raw_exchange(addr: SocketAddr, bytes: &[u8], half_close: bool) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    if half_close {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// Status codes of every response in a raw reply (pipelining may give
/// several).
fn statuses_in(reply: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(reply);
    text.match_indices("HTTP/1.")
        .filter_map(|(i, _)| text.get(i + 9..i + 12))
        .filter_map(|code| code.parse().ok())
        .collect()
}

fn get_health(addr: SocketAddr) -> Vec<u8> {
    raw_exchange(
        addr,
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        false,
    )
}

fn raw_post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Invalid HTTP of every kind a scanner or a broken client sends.
fn garbage(key: String) -> impl Strategy<Value = Vec<u8>> {
    let valid = raw_post(
        "/api/session/status",
        &json!({ "access_key": key }).to_string(),
    );
    let templates: Vec<Vec<u8>> = vec![
        b"GET / HTTP/9.9\r\n\r\n".to_vec(),
        b"GET\r\n\r\n".to_vec(),
        b"\r\n\r\n\r\n".to_vec(),
        b"GET /health HTTP/1.1\r\nHost x\r\n\r\n".to_vec(),
        b"GET /health HTTP/1.1\r\nHo st: x\r\n\r\n".to_vec(),
        b"GET /health HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n".to_vec(),
        b"GET /he\0alth HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"POST /api/session/start HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(),
        b"POST /api/session/start HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\":".to_vec(),
        b"POST /api/session/start HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
        b"POST /api/session/start HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\nffffffffffffffff\r\n{}".to_vec(),
        b"POST /api/session/start HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}".to_vec(),
        format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000)).into_bytes(),
        format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "b".repeat(70_000)).into_bytes(),
        format!("GET /health HTTP/1.1\r\n{}\r\n", "X-H: 1\r\n".repeat(200)).into_bytes(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
        [valid.as_bytes(), b"GARBAGE\r\n\r\n"].concat(),
        valid.clone().into_bytes(),
    ];
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..600),
        2 => (prop::sample::select(templates), any::<usize>()).prop_map(|(t, cut)| {
            // the template, or a prefix of it (a client that dies mid-request)
            let cut = if cut % 3 == 0 { t.len() } else { cut % (t.len() + 1) };
            t[..cut].to_vec()
        }),
        1 => (Just(valid.into_bytes()), any::<usize>(), any::<u8>()).prop_map(|(mut t, i, b)| {
            let n = t.len();
            t[i % n] = b;
            t
        }),
    ]
}

/// Garbage on the wire never takes the server down or gets a 5xx; valid
/// requests work between and after.
#[test]
fn tcp_garbage_does_not_hurt_the_server() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut server = rt.block_on(common::TestServer::start());
    let (key, _) = rt.block_on(server.create_key(json!({})));
    let addr: SocketAddr = server.url.trim_start_matches("http://").parse().unwrap();
    let replies = Mutex::new(std::collections::BTreeMap::<String, u64>::new());
    fuzz("tcp garbage", 500, garbage(key.clone()), |bytes| {
        let reply = raw_exchange(addr, &bytes, true);
        let codes = statuses_in(&reply);
        let label = match codes.first() {
            Some(c) => c.to_string(),
            None => "closed".to_owned(),
        };
        *replies.lock().unwrap().entry(label).or_default() += 1;
        for code in &codes {
            prop_assert!(
                *code < 500,
                "{} for {:?}: {:?}",
                code,
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)]),
                String::from_utf8_lossy(&reply)
            );
        }
        let health = get_health(addr);
        prop_assert_eq!(
            statuses_in(&health).first().copied(),
            Some(200),
            "health after {:?}: {:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(300)]),
            String::from_utf8_lossy(&health)
        );
        Ok(())
    });
    println!(
        "    first status per connection: {:?}",
        replies.lock().unwrap()
    );
    // After all that, a session still starts.
    let (status, body) = rt.block_on(server.start_session(&key, "after-garbage"));
    assert_eq!(status, 200, "{body}");
    rt.block_on(server.stop());
}
