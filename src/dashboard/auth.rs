//! Signing in to the dashboard: the admin token buys a cookie session.
//!
//! - The session id is 256 random bits from the OS generator, sent only in
//!   an `HttpOnly; SameSite=Strict; Path=/admin` cookie (plus `Secure` when
//!   the request came over TLS, which behind a proxy means
//!   `X-Forwarded-Proto: https`). Only its SHA-256 is kept in memory, so the
//!   map's lookups cannot leak a live id through timing.
//! - Sessions live in this process's memory: a restart signs everyone out,
//!   which is the right failure for an admin console. They end after
//!   [`IDLE_SECS`] without a request, after [`MAX_AGE_SECS`] in any case,
//!   and at sign-out.
//! - Every POST carries the session's CSRF token in a hidden `csrf` field,
//!   compared in constant time ([`require_session`] checks it before any
//!   handler runs). The sign-in form, which has no session yet, uses a
//!   double-submit cookie instead.
//! - Wrong tokens count toward the admin API's per-address failure limit,
//!   so the form is no easier to guess through than the API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::html;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::page::{self, Page};
use crate::clock::Timestamp;
use crate::error::Error;
use crate::http::extract::ClientAddr;
use crate::state::AppState;

/// Name of the session cookie.
pub const COOKIE: &str = "keyseat_session";
/// Name of the sign-in form's double-submit cookie.
pub const SIGNIN_COOKIE: &str = "keyseat_signin";
/// A session ends after this long without a request.
pub const IDLE_SECS: u64 = 12 * 3600;
/// A session ends this long after sign-in, however busy.
pub const MAX_AGE_SECS: u64 = 7 * 86_400;
/// Sessions kept at most; the least recently used is dropped beyond it.
const MAX_SESSIONS: usize = 1_000;
/// Largest form body the dashboard reads.
const MAX_FORM_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone)]
struct Entry {
    csrf: String,
    created: Timestamp,
    last_seen: Timestamp,
}

/// The signed-in browsers, by SHA-256 of their session id.
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Entry>>,
    /// One-time ids of the forms that must not act twice.
    pub forms: OnceForms,
}

/// One-time form ids. Reloading the page that answered a POST sends the
/// form again; for "create key" that would create a second key, so its form
/// carries a random id that works once.
#[derive(Debug, Default)]
pub struct OnceForms {
    inner: Mutex<FormIds>,
}

#[derive(Debug, Default)]
struct FormIds {
    /// Form id → what it created (`None` while in progress).
    used: HashMap<String, Option<String>>,
    /// Oldest first, to forget the oldest beyond [`MAX_FORM_IDS`].
    order: std::collections::VecDeque<String>,
}

/// Used form ids remembered (the oldest are forgotten first).
const MAX_FORM_IDS: usize = 10_000;

impl OnceForms {
    /// A fresh form id.
    pub fn new_id() -> String {
        random_token()
    }

    fn ids(&self) -> std::sync::MutexGuard<'_, FormIds> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims an id; if it was used before, says what it created then
    /// (`None`: that first use has not finished).
    pub fn claim(&self, id: &str) -> Result<(), Option<String>> {
        let mut ids = self.ids();
        if let Some(prev) = ids.used.get(id) {
            return Err(prev.clone());
        }
        if ids.order.len() >= MAX_FORM_IDS {
            if let Some(old) = ids.order.pop_front() {
                ids.used.remove(&old);
            }
        }
        ids.used.insert(id.to_owned(), None);
        ids.order.push_back(id.to_owned());
        Ok(())
    }

    /// Records what a claimed id created.
    pub fn finish(&self, id: &str, created: &str) {
        if let Some(slot) = self.ids().used.get_mut(id) {
            *slot = Some(created.to_owned());
        }
    }

    /// Gives a claimed id back (its use failed; the form may be sent again).
    pub fn release(&self, id: &str) {
        let mut ids = self.ids();
        ids.used.remove(id);
        ids.order.retain(|x| x != id);
    }
}

/// What a handler learns about the signed-in browser.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The CSRF token to put in every form.
    pub csrf: String,
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// Constant-time string equality (lengths are not secret here: both sides
/// are fixed-length hex).
pub fn same(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl Sessions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session; returns its id (for the cookie) and CSRF token.
    pub fn create(&self, now: Timestamp) -> (String, String) {
        let id = random_token();
        let csrf = random_token();
        let mut map = self.map();
        map.retain(|_, e| alive(e, now));
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map.iter().min_by_key(|(_, e)| e.last_seen).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.insert(
            digest(&id),
            Entry {
                csrf: csrf.clone(),
                created: now,
                last_seen: now,
            },
        );
        (id, csrf)
    }

    /// The session's CSRF token if it is alive, marking it used.
    pub fn touch(&self, id: &str, now: Timestamp) -> Option<String> {
        let mut map = self.map();
        let key = digest(id);
        let entry = map.get_mut(&key)?;
        if !alive(entry, now) {
            map.remove(&key);
            return None;
        }
        entry.last_seen = now;
        Some(entry.csrf.clone())
    }

    /// Ends a session.
    pub fn remove(&self, id: &str) {
        self.map().remove(&digest(id));
    }
}

fn alive(e: &Entry, now: Timestamp) -> bool {
    now < e.last_seen.plus_secs(IDLE_SECS) && now < e.created.plus_secs(MAX_AGE_SECS)
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
}

/// Whether the browser reached us over TLS: directly (an `https` URI) or
/// through a proxy that says so. Trusting the header is safe here: it can
/// only make the cookie stricter.
pub fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value with the dashboard's flags.
pub fn set_cookie(name: &str, value: &str, max_age: Option<u64>, tls: bool) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/admin; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if tls {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Checks the session cookie on every dashboard route but sign-in and the
/// assets; on a POST, also the CSRF field, before the handler sees it.
/// Without a live session a GET is sent to the sign-in page and a POST is
/// refused (its form data would be lost anyway).
pub async fn require_session(
    State(state): State<AppState>,
    Extension(sessions): Extension<Arc<Sessions>>,
    req: Request,
    next: Next,
) -> Response {
    let now = state.now();
    let csrf = cookie(req.headers(), COOKIE).and_then(|id| sessions.touch(&id, now));
    let Some(csrf) = csrf else {
        if req.method() == Method::GET || req.method() == Method::HEAD {
            return Redirect::to("/admin/sign-in").into_response();
        }
        return page::error_page(
            StatusCode::UNAUTHORIZED,
            "Signed out",
            "Your session has ended. Sign in again, then repeat the action.",
        );
    };
    let mut req = req;
    if req.method() == Method::POST {
        let (parts, body) = req.into_parts();
        let bytes = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
            Ok(b) => b,
            Err(_) => {
                return page::error_page(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Form too large",
                    "The form sent more data than the dashboard accepts.",
                )
            }
        };
        if !form_csrf_ok(&bytes, &csrf) {
            return page::error_page(
                StatusCode::FORBIDDEN,
                "Form expired",
                "This form was not issued by this session (CSRF check failed). \
                 Go back, reload the page and try again.",
            );
        }
        req = Request::from_parts(parts, axum::body::Body::from(bytes));
    }
    req.extensions_mut().insert(Signed { csrf });
    next.run(req).await
}

fn form_csrf_ok(body: &Bytes, expected: &str) -> bool {
    let presented = form_field(body, "csrf");
    presented.is_some_and(|p| same(&p, expected))
}

/// One field of an `application/x-www-form-urlencoded` body.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded_pairs(body);
    pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

fn serde_urlencoded_pairs(body: &[u8]) -> Vec<(String, String)> {
    // axum's form extractor decodes the same way; a malformed body simply
    // has no usable fields.
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The sign-in page (or the overview, for a browser already signed in).
/// Sets a fresh double-submit cookie for its form.
pub async fn sign_in_page(
    State(state): State<AppState>,
    Extension(sessions): Extension<Arc<Sessions>>,
    headers: HeaderMap,
) -> Response {
    if cookie(&headers, COOKIE).is_some_and(|id| sessions.touch(&id, state.now()).is_some()) {
        return Redirect::to("/admin").into_response();
    }
    sign_in_response(StatusCode::OK, None, &headers)
}

/// The double-submit token of a sign-in form: the one the browser already
/// holds, if any, so that two sign-in pages open at once both work.
fn signin_token(headers: &HeaderMap) -> String {
    cookie(headers, SIGNIN_COOKIE)
        .filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(random_token)
}

fn sign_in_response(status: StatusCode, message: Option<&str>, headers: &HeaderMap) -> Response {
    let tls = over_tls(headers);
    let token = signin_token(headers);
    let body = Page::new("Sign in").bare().render(html! {
        section class="signin" {
            h1 { "keyseat" }
            p { "Sign in with the server's admin token." }
            @if let Some(m) = message {
                p class="flash error" role="alert" id="error" { (m) }
            }
            form method="post" action="/admin/sign-in" id="sign-in-form" {
                input type="hidden" name="csrf" value=(token);
                label for="token" { "Admin token" }
                input type="password" id="token" name="token" required
                    autocomplete="current-password" autofocus;
                button type="submit" id="sign-in" { "Sign in" }
            }
        }
    });
    let mut resp = (status, body).into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SIGNIN_COOKIE, &token, Some(3600), tls),
    );
    resp
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: String,
}

/// Checks the token; on success starts a session and goes to the overview.
pub async fn sign_in(
    State(state): State<AppState>,
    Extension(sessions): Extension<Arc<Sessions>>,
    addr: ClientAddr,
    req: Request,
) -> Response {
    let headers = req.headers().clone();
    let tls = over_tls(&headers);
    let double_submit = cookie(&headers, SIGNIN_COOKIE);
    let limiter = state.admin_failures();
    if let Err(e) = limiter.check(addr.0, state.now()) {
        let mut resp = sign_in_response(
            StatusCode::TOO_MANY_REQUESTS,
            Some(&e.to_string()),
            &headers,
        );
        if let Error::RateLimited { retry_after_secs } = e {
            if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        return resp;
    }
    let form = match Form::<SignInForm>::from_request(req, &state).await {
        Ok(Form(f)) => f,
        Err(_) => {
            return sign_in_response(
                StatusCode::BAD_REQUEST,
                Some("The sign-in form could not be read; try again."),
                &headers,
            )
        }
    };
    if !double_submit.is_some_and(|c| same(&c, &form.csrf)) {
        return sign_in_response(
            StatusCode::FORBIDDEN,
            Some("The sign-in form expired (CSRF check failed); try again."),
            &headers,
        );
    }
    if !state.admin_token_matches(&form.token) {
        limiter.record_failure(addr.0, state.now());
        tracing::warn!(client = %addr.label(), "dashboard sign-in with a wrong admin token");
        return sign_in_response(
            StatusCode::UNAUTHORIZED,
            Some("That is not the admin token."),
            &headers,
        );
    }
    let (id, _csrf) = sessions.create(state.now());
    tracing::info!(client = %addr.label(), "dashboard sign-in");
    let mut resp = Redirect::to("/admin").into_response();
    let h = resp.headers_mut();
    h.append(header::SET_COOKIE, set_cookie(COOKIE, &id, None, tls));
    h.append(
        header::SET_COOKIE,
        set_cookie(SIGNIN_COOKIE, "", Some(0), tls),
    );
    resp
}

/// Ends the session (CSRF already checked) and clears the cookie.
pub async fn sign_out(
    Extension(sessions): Extension<Arc<Sessions>>,
    headers: HeaderMap,
) -> Response {
    if let Some(id) = cookie(&headers, COOKIE) {
        sessions.remove(&id);
    }
    let mut resp = Redirect::to("/admin/sign-in").into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(COOKIE, "", Some(0), over_tls(&headers)),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_when_idle_and_when_old() {
        let s = Sessions::default();
        let t0 = Timestamp(1_000_000_000);
        let (id, csrf) = s.create(t0);
        assert_eq!(id.len(), 64, "256 bits, hex");
        assert_eq!(s.touch(&id, t0.plus_secs(60)), Some(csrf.clone()));
        assert_eq!(s.touch("nope", t0), None);
        // Idle just under the limit, repeatedly: still alive.
        let mut t = t0;
        for _ in 0..10 {
            t = t.plus_secs(IDLE_SECS - 1);
            if t >= t0.plus_secs(MAX_AGE_SECS) {
                break;
            }
            assert!(s.touch(&id, t).is_some());
        }
        assert_eq!(s.touch(&id, t0.plus_secs(MAX_AGE_SECS)), None, "too old");
        let (id2, _) = s.create(t0);
        assert_eq!(s.touch(&id2, t0.plus_secs(IDLE_SECS)), None, "idle");
        let (id3, _) = s.create(t0);
        s.remove(&id3);
        assert_eq!(s.touch(&id3, t0), None, "signed out");
    }

    #[test]
    fn form_ids_work_once() {
        let f = OnceForms::default();
        let id = OnceForms::new_id();
        assert_eq!(f.claim(&id), Ok(()));
        assert_eq!(f.claim(&id), Err(None), "in progress");
        f.finish(&id, "key_1");
        assert_eq!(f.claim(&id), Err(Some("key_1".into())));
        let other = OnceForms::new_id();
        f.claim(&other).unwrap();
        f.release(&other);
        assert_eq!(f.claim(&other), Ok(()), "a failed use can be retried");
    }

    #[test]
    fn form_fields_decode() {
        let body = b"a=1&csrf=ab%2Fc+d&x";
        assert_eq!(form_field(body, "csrf").as_deref(), Some("ab/c d"));
        assert_eq!(form_field(body, "x").as_deref(), Some(""));
        assert_eq!(form_field(b"csrf=%zz%4", "csrf").as_deref(), Some("%zz%4"));
        assert_eq!(form_field(b"", "csrf"), None);
    }

    #[test]
    fn cookies_and_tls() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; keyseat_session=xyz"),
        );
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie(&h, "b"), None);
        assert!(!over_tls(&h));
        h.insert("x-forwarded-proto", HeaderValue::from_static("HTTPS"));
        assert!(over_tls(&h));
        let c = set_cookie(COOKIE, "v", None, true);
        let c = c.to_str().unwrap();
        for flag in ["HttpOnly", "SameSite=Strict", "Path=/admin", "Secure"] {
            assert!(c.contains(flag), "{c}");
        }
    }
}
