//! The web dashboard at /admin, driven over HTTP like a browser without
//! JavaScript would: forms, cookies (kept by hand), redirects.

mod common;

use std::collections::HashMap;

use common::{TestServer, ADMIN_TOKEN};
use reqwest::header::{HeaderMap, CACHE_CONTROL, LOCATION, SET_COOKIE};
use reqwest::StatusCode;

/// A cookie-keeping client that does not follow redirects.
struct Browser {
    base: String,
    http: reqwest::Client,
    cookies: HashMap<String, String>,
    /// Pretend the request came through a TLS-terminating proxy.
    forwarded_https: bool,
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The CSRF token of the first form on the page.
    fn csrf(&self) -> String {
        attr_after(&self.body, "name=\"csrf\" value=\"").expect("a form with a csrf field")
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }
}

fn attr_after(body: &str, marker: &str) -> Option<String> {
    let start = body.find(marker)? + marker.len();
    let end = body[start..].find('"')? + start;
    Some(body[start..end].to_owned())
}

impl Browser {
    fn new(s: &TestServer) -> Browser {
        Browser {
            base: s.url.clone(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: HashMap::new(),
            forwarded_https: false,
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let mut req = req.header("cookie", self.cookie_header());
        if self.forwarded_https {
            req = req.header("x-forwarded-proto", "https");
        }
        let resp = req.send().await.expect("request");
        let page = Page {
            status: resp.status(),
            headers: resp.headers().clone(),
            body: String::new(),
        };
        for c in page.set_cookies() {
            let first = c.split(';').next().unwrap();
            let (k, v) = first.split_once('=').unwrap();
            if v.is_empty() || c.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.into(), v.into());
            }
        }
        Page {
            body: resp.text().await.unwrap(),
            ..page
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let req = self.http.post(format!("{}{path}", self.base)).form(form);
        self.send(req).await
    }

    /// Signs in with `token`; returns the answer to the form.
    async fn sign_in_with(&mut self, token: &str) -> Page {
        let form = self.get("/admin/sign-in").await;
        assert_eq!(form.status, 200);
        let csrf = form.csrf();
        self.post("/admin/sign-in", &[("csrf", &csrf), ("token", token)])
            .await
    }

    /// Signs in and returns the CSRF token of the session.
    async fn signed_in(s: &TestServer) -> (Browser, String) {
        let mut b = Browser::new(s);
        let r = b.sign_in_with(ADMIN_TOKEN).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        let home = b.get("/admin").await;
        assert_eq!(home.status, 200, "{}", home.body);
        let csrf = home.csrf();
        (b, csrf)
    }

    /// Follows a redirect answer.
    async fn follow(&mut self, page: &Page) -> Page {
        assert!(
            page.status.is_redirection(),
            "expected a redirect, got {}: {}",
            page.status,
            page.body
        );
        let to = page.location().to_owned();
        self.get(&to).await
    }
}

#[tokio::test]
async fn the_dashboard_is_off_without_an_admin_token() {
    let s = TestServer::start_with(|c| c.admin_token = None).await;
    let mut b = Browser::new(&s);
    for path in [
        "/admin",
        "/admin/sign-in",
        "/admin/keys",
        "/admin/assets/style.css",
    ] {
        assert_eq!(b.get(path).await.status, 404, "{path}");
    }
    let r = b
        .post("/admin/sign-in", &[("token", ""), ("csrf", "")])
        .await;
    assert_eq!(r.status, 404);
}

/// Without an admin token, the 404 of the admin API and the dashboard names
/// the path that was asked for (not a nested router's remainder) and says
/// how to turn them on; a key pasted into the path is cut to its prefix.
#[tokio::test]
async fn the_admin_routes_404_says_they_are_off_and_names_the_whole_path() {
    let s = TestServer::start_with(|c| c.admin_token = None).await;
    for path in ["/admin", "/admin/keys", "/api/admin/keys"] {
        let (status, body) = s.get(path).await;
        assert_eq!(status, 404, "{path}");
        let message = body["error"]["message"].as_str().unwrap();
        assert_eq!(
            message,
            format!(
                "no route for {path} (the admin API and the dashboard are off: no admin_token is set)"
            )
        );
    }
    let secret = keyseat::keys::AccessKey::generate();
    let (status, body) = s
        .get(&format!("/api/nothing/{}", secret.expose_secret()))
        .await;
    assert_eq!(status, 404);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(!message.contains(secret.expose_secret()), "{message}");
    assert!(message.contains(&secret.prefix()), "{message}");
}

#[tokio::test]
async fn signed_out_browsers_are_sent_to_sign_in() {
    let s = TestServer::start().await;
    let mut b = Browser::new(&s);
    for path in ["/admin", "/admin/keys", "/admin/sessions", "/admin/nope"] {
        let r = b.get(path).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(r.location(), "/admin/sign-in");
    }
    let r = b.get("/admin/").await;
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT, "a trailing slash");
    assert_eq!(r.location(), "/admin");
    let r = b.post("/admin/keys", &[("label", "x")]).await;
    assert_eq!(r.status, 401);
    assert!(r.body.contains("Sign in again"));
    let form = b.get("/admin/sign-in").await;
    assert!(form.body.contains("id=\"token\""));
    assert!(form.body.contains("<label for=\"token\">"));
    assert!(form.body.contains("lang=\"en\""));
}

#[tokio::test]
async fn sign_in_with_a_wrong_token_fails_and_counts_toward_the_limit() {
    let s = TestServer::start_with(|c| {
        c.rate_limits = true;
        c.admin_auth_failures_per_minute = 3;
    })
    .await;
    let mut b = Browser::new(&s);
    for _ in 0..3 {
        let r = b.sign_in_with("wrong-token").await;
        assert_eq!(r.status, 401);
        assert!(r.body.contains("not the admin token"), "{}", r.body);
        assert!(!r.body.contains("wrong-token"), "the attempt is not echoed");
        assert!(r
            .set_cookies()
            .iter()
            .all(|c| !c.starts_with("keyseat_session=")));
    }
    // The fourth attempt, even with the right token, is refused for now…
    let r = b.sign_in_with(ADMIN_TOKEN).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.headers.get("retry-after").is_some());
    // …and so is the admin API from the same address: one shared limit.
    let (status, _) = s.admin("GET", "/api/admin/keys", None).await;
    assert_eq!(status, 429);
    s.clock.advance_secs(61);
    let r = b.sign_in_with(ADMIN_TOKEN).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn sign_in_sets_a_strict_session_cookie_and_sign_out_clears_it() {
    let s = TestServer::start().await;
    let mut b = Browser::new(&s);
    let r = b.sign_in_with(ADMIN_TOKEN).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/admin");
    let cookie = r
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("keyseat_session="))
        .expect("session cookie");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: no Secure flag");
    let id = cookie.split(';').next().unwrap()["keyseat_session=".len()..].to_owned();
    assert!(id.len() >= 32, "at least 128 bits");
    assert!(!r.location().contains(ADMIN_TOKEN));

    let home = b.get("/admin").await;
    assert_eq!(home.status, 200);
    assert_eq!(home.headers[CACHE_CONTROL], "no-store");
    let again = b.get("/admin/sign-in").await;
    assert_eq!(again.location(), "/admin", "already signed in");
    assert!(home.headers.get("content-security-policy").is_some());
    assert!(!home.body.contains(ADMIN_TOKEN));
    assert!(home.body.contains("rel=\"icon\""), "no favicon request");

    let csrf = home.csrf();
    let out = b.post("/admin/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(out
        .set_cookies()
        .iter()
        .any(|c| c.starts_with("keyseat_session=;") && c.contains("Max-Age=0")));
    // The old cookie no longer works, even if a browser kept it.
    b.cookies.insert("keyseat_session".into(), id);
    let r = b.get("/admin").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/admin/sign-in");
}

#[tokio::test]
async fn two_sign_in_pages_open_at_once_both_work() {
    let s = TestServer::start().await;
    let mut b = Browser::new(&s);
    let older = b.get("/admin/sign-in").await.csrf();
    let newer = b.get("/admin/sign-in").await.csrf();
    assert_eq!(older, newer, "the browser's token is reused");
    let r = b
        .post(
            "/admin/sign-in",
            &[("csrf", &older), ("token", ADMIN_TOKEN)],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn behind_a_tls_proxy_the_cookie_is_secure() {
    let s = TestServer::start().await;
    let mut b = Browser::new(&s);
    b.forwarded_https = true;
    let r = b.sign_in_with(ADMIN_TOKEN).await;
    let cookie = r
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("keyseat_session="))
        .unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
}

#[tokio::test]
async fn sessions_end_after_twelve_idle_hours() {
    let s = TestServer::start().await;
    let (mut b, _) = Browser::signed_in(&s).await;
    s.clock.advance_secs(11 * 3600);
    assert_eq!(b.get("/admin/keys").await.status, 200);
    s.clock.advance_secs(11 * 3600);
    assert_eq!(b.get("/admin/keys").await.status, 200, "idle time restarts");
    s.clock.advance_secs(12 * 3600 + 1);
    assert_eq!(b.get("/admin/keys").await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn every_post_needs_the_sessions_csrf_token() {
    let s = TestServer::start().await;
    let (mut b, csrf) = Browser::signed_in(&s).await;
    let form = [
        ("label", "Evil"),
        ("max_sessions", "1"),
        ("on_conflict", "takeover"),
    ];
    let r = b.post("/admin/keys", &form).await;
    assert_eq!(r.status, 403, "no token");
    assert!(r.body.contains("CSRF"));
    let wrong = "0".repeat(csrf.len());
    let mut with_wrong = form.to_vec();
    with_wrong.push(("csrf", &wrong));
    assert_eq!(b.post("/admin/keys", &with_wrong).await.status, 403);
    // Another session's token does not work either.
    let (_, other_csrf) = Browser::signed_in(&s).await;
    let mut with_other = form.to_vec();
    with_other.push(("csrf", &other_csrf));
    assert_eq!(b.post("/admin/keys", &with_other).await.status, 403);
    let (_, list) = s.admin("GET", "/api/admin/keys", None).await;
    assert_eq!(list["keys"].as_array().unwrap().len(), 0, "nothing created");
    // Sign-out is a form too.
    assert_eq!(b.post("/admin/sign-out", &[]).await.status, 403);
    assert_eq!(b.get("/admin").await.status, 200, "still signed in");
    // The sign-in form has its own double-submit check.
    let mut fresh = Browser::new(&s);
    let r = fresh
        .post("/admin/sign-in", &[("token", ADMIN_TOKEN), ("csrf", "x")])
        .await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn create_a_key_and_see_its_secret_once() {
    let s = TestServer::start().await;
    let (mut b, csrf) = Browser::signed_in(&s).await;
    let form = b.get("/admin/keys/new").await;
    for id in [
        "label",
        "max_sessions",
        "on_conflict",
        "expires_at",
        "create-key",
    ] {
        assert!(form.body.contains(&format!("id=\"{id}\"")), "{id}");
    }
    let r = b
        .post(
            "/admin/keys",
            &[
                ("csrf", &csrf),
                ("label", "Acme <Ltd>"),
                ("max_sessions", "2"),
                ("on_conflict", "reject"),
                ("expires_at", "2099-01-31"),
            ],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.headers[CACHE_CONTROL], "no-store");
    let secret = r.body[r.body.find("<code id=\"secret\">").unwrap() + 18..]
        .split('<')
        .next()
        .unwrap()
        .to_owned();
    assert!(keyseat::keys::AccessKey::parse(&secret).is_ok(), "{secret}");
    assert!(r.body.contains("id=\"copy\""));
    assert!(r.body.contains("Acme &lt;Ltd&gt;"), "escaped");
    // The key works, with what the form said.
    let (status, _) = s.start_session(&secret, "laptop").await;
    assert_eq!(status, 200);
    let (_, keys) = s.admin("GET", "/api/admin/keys", None).await;
    let key = &keys["keys"][0];
    assert_eq!(key["label"], "Acme <Ltd>");
    assert_eq!(key["max_sessions"], 2);
    assert_eq!(key["on_conflict"], "reject");
    assert_eq!(key["expires_at"], "2099-01-31T00:00:00Z");
    // Sending the form again (a reload of that page) creates nothing: the
    // form's one-time id is spent.
    let form = b.get("/admin/keys/new").await;
    let form_id = attr_after(&form.body, "name=\"form_id\" value=\"").expect("form_id");
    let fields = [
        ("csrf", csrf.as_str()),
        ("form_id", form_id.as_str()),
        ("label", "Once only"),
        ("max_sessions", "1"),
        ("on_conflict", "takeover"),
        ("expires_at", ""),
    ];
    let first = b.post("/admin/keys", &fields).await;
    assert_eq!(first.status, 201);
    let again = b.post("/admin/keys", &fields).await;
    assert_eq!(again.status, StatusCode::SEE_OTHER, "{}", again.body);
    let shown = b.follow(&again).await;
    assert!(shown.body.contains("already sent"), "{}", shown.body);
    assert!(shown.body.contains("Once only"), "the key's own page");
    assert!(!shown.body.contains("id=\"secret\""));
    let (_, keys) = s.admin("GET", "/api/admin/keys", None).await;
    let once = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["label"] == "Once only")
        .count();
    assert_eq!(once, 1);
    // A form whose first send was refused (bad input) can be sent again.
    let form = b.get("/admin/keys/new").await;
    let form_id = attr_after(&form.body, "name=\"form_id\" value=\"").unwrap();
    let mut bad = fields;
    bad[1].1 = &form_id;
    bad[3].1 = "0";
    assert_eq!(b.post("/admin/keys", &bad).await.status, 400);
    bad[3].1 = "1";
    assert_eq!(b.post("/admin/keys", &bad).await.status, 201);

    // It is never shown again: not on the list, nor the key's page.
    let key_id = key["key_id"].as_str().unwrap();
    for path in ["/admin/keys".to_owned(), format!("/admin/keys/{key_id}")] {
        let p = b.get(&path).await;
        assert_eq!(p.status, 200, "{path}");
        assert!(!p.body.contains(&secret), "{path}");
        assert!(p.body.contains(&secret[..11]), "{path} shows the prefix");
    }
}

#[tokio::test]
async fn bad_form_input_is_a_readable_message() {
    let s = TestServer::start().await;
    let (mut b, csrf) = Browser::signed_in(&s).await;
    for (field, value, words) in [
        ("max_sessions", "0", "between 1 and 1000"),
        ("max_sessions", "many", "whole number"),
        ("expires_at", "tomorrow", "UTC date"),
        ("on_conflict", "steal", "takeover or reject"),
        ("label", "a\u{1b}[31m", "control characters"),
        ("max_borrow_hours", "9000", "between 0 and 8760"),
        (
            "max_borrow_hours",
            "abc",
            "whole number of hours from 0 to 8760",
        ),
        ("max_borrow_hours", "-1", "whole number of hours"),
    ] {
        let mut form = vec![
            ("csrf", csrf.as_str()),
            ("label", "ok"),
            ("max_sessions", "1"),
            ("on_conflict", "takeover"),
            ("expires_at", ""),
        ];
        form.retain(|(k, _)| *k != field);
        form.push((field, value));
        let r = b.post("/admin/keys", &form).await;
        assert_eq!(r.status, 400, "{field}");
        assert!(r.body.contains("id=\"error\""), "{field}");
        assert!(r.body.contains(words), "{field}: {}", r.body);
        assert!(r.body.contains("<form"), "the form is shown again");
    }
    let r = b.get("/admin/keys/key_doesnotexist").await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("No key matches"));
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let r = b
        .post("/admin/keys/key_doesnotexist/suspend", &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("No key matches"));
}

#[tokio::test]
async fn search_keys_by_label_or_prefix() {
    let s = TestServer::start().await;
    let (acme, _) = s.create_key(serde_json::json!({"label": "Acme Ltd"})).await;
    s.create_key(serde_json::json!({"label": "Globex"})).await;
    let (mut b, _) = Browser::signed_in(&s).await;
    let all = b.get("/admin/keys").await;
    assert!(all.body.contains("Acme Ltd") && all.body.contains("Globex"));
    let r = b.get("/admin/keys?q=acme").await;
    assert!(r.body.contains("Acme Ltd") && !r.body.contains("Globex"));
    let r = b.get(&format!("/admin/keys?q={}", &acme[..9])).await;
    assert!(r.body.contains("Acme Ltd") && !r.body.contains("Globex"));
    // A whole pasted key finds its key by prefix and is not shown back.
    let r = b.get(&format!("/admin/keys?q={acme}")).await;
    assert!(r.body.contains("Acme Ltd") && !r.body.contains("Globex"));
    assert!(!r.body.contains(&acme));
    // A malformed address is a page too, not axum's plain text.
    let r = b.get("/admin/keys?page=first").await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("malformed parameter"), "{}", r.body);
    let r = b.get("/admin/keys?q=nothing-like-this").await;
    assert!(r.body.contains("No key matches"));
    // By key id, with the counts of matches and of all keys.
    let (_, sale) = s.create_key(serde_json::json!({"label": "50%_off"})).await;
    let id = sale["key_id"].as_str().unwrap();
    let r = b.get(&format!("/admin/keys?q={}", id.to_uppercase())).await;
    assert!(r.body.contains("50%_off") && !r.body.contains("Globex"));
    assert!(r.body.contains("1 of 3 key(s)"), "{}", r.body);
    // Search text is literal, not a pattern.
    let r = b.get("/admin/keys?q=%25_").await;
    assert!(r.body.contains("50%_off") && !r.body.contains("Acme Ltd"));
}

/// A whole access key changed in its last character: its checksum fails.
fn mistyped(secret: &str) -> String {
    let last = if secret.ends_with('a') { 'b' } else { 'a' };
    format!("{}{last}", &secret[..secret.len() - 1])
}

/// The value the keys page's search box is filled in with.
fn search_box(body: &str) -> String {
    let at = body.find("id=\"q\"").expect("the search box");
    attr_after(&body[at..], "value=\"").unwrap_or_default()
}

/// The search form posts: a whole access key pasted into it leads to its
/// key's page by a redirect, and neither that address nor any page on the
/// way holds the secret.
#[tokio::test]
async fn a_pasted_access_key_finds_its_key_without_entering_an_address() {
    let s = TestServer::start().await;
    let (secret, key) = s.create_key(serde_json::json!({"label": "Acme Ltd"})).await;
    s.create_key(serde_json::json!({"label": "Globex"})).await;
    let key_id = key["key_id"].as_str().unwrap();
    let (mut b, csrf) = Browser::signed_in(&s).await;
    let list = b.get("/admin/keys").await;
    assert!(
        list.body
            .contains("method=\"post\" action=\"/admin/keys/search\""),
        "{}",
        list.body
    );
    let r = b
        .post(
            "/admin/keys/search",
            &[("csrf", &csrf), ("q", &format!(" {secret}\n"))],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location(), format!("/admin/keys/{key_id}"));
    assert!(!r.body.contains(&secret));
    let page = b.follow(&r).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Acme Ltd"), "{}", page.body);
    assert!(!page.body.contains(&secret));
}

/// A mistyped key and a well-formed key from elsewhere are a sentence in
/// `#error` naming only the prefix, with the box holding just the prefix.
#[tokio::test]
async fn a_mistyped_or_unknown_access_key_is_named_only_by_its_prefix() {
    let s = TestServer::start().await;
    let (secret, key) = s.create_key(serde_json::json!({"label": "Acme Ltd"})).await;
    let prefix = key["prefix"].as_str().unwrap();
    let (mut b, csrf) = Browser::signed_in(&s).await;

    let typo = mistyped(&secret);
    let r = b
        .post("/admin/keys/search", &[("csrf", &csrf), ("q", &typo)])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("id=\"error\""), "{}", r.body);
    assert!(r.body.contains("mistyped character"), "{}", r.body);
    assert!(r.body.contains(&format!("{prefix}…")), "{}", r.body);
    assert!(!r.body.contains(&typo) && !r.body.contains(&secret[11..30]));
    assert_eq!(search_box(&r.body), prefix, "the box holds the prefix only");
    assert!(r.body.contains("Acme Ltd"), "the keys with that prefix");

    let elsewhere = keyseat::keys::AccessKey::generate();
    let other = elsewhere.expose_secret();
    let r = b
        .post("/admin/keys/search", &[("csrf", &csrf), ("q", other)])
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("No key in this database"), "{}", r.body);
    assert!(r.body.contains(&elsewhere.prefix()), "{}", r.body);
    assert!(!r.body.contains(other));
    assert_eq!(search_box(&r.body), elsewhere.prefix());

    // Cut short, it is not a key either, and is not put in an address.
    let r = b
        .post(
            "/admin/keys/search",
            &[("csrf", &csrf), ("q", &secret[..30])],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("not a whole access key"), "{}", r.body);
    assert!(!r.body.contains(&secret[11..30]));
}

/// Any other text is an ordinary, bookmarkable GET search.
#[tokio::test]
async fn other_search_text_redirects_to_the_get_search() {
    let s = TestServer::start().await;
    s.create_key(serde_json::json!({"label": "Acme Ltd"})).await;
    let (mut b, csrf) = Browser::signed_in(&s).await;
    let r = b
        .post("/admin/keys/search", &[("csrf", &csrf), ("q", "Acme Ltd")])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location(), "/admin/keys?q=Acme%20Ltd&page=1");
    let found = b.follow(&r).await;
    assert!(found.body.contains("1 of 1 key(s)"), "{}", found.body);
    assert_eq!(search_box(&found.body), "Acme Ltd");
    let r = b
        .post("/admin/keys/search", &[("csrf", &csrf), ("q", "ks_3f9a")])
        .await;
    assert_eq!(r.location(), "/admin/keys?q=ks_3f9a&page=1");
    let r = b
        .post("/admin/keys/search", &[("csrf", &csrf), ("q", "  ")])
        .await;
    assert_eq!(r.location(), "/admin/keys", "an empty search is the list");
}

/// The search is a POST like the others: without the session's CSRF
/// token it is refused before anything is looked up.
#[tokio::test]
async fn the_search_post_needs_the_csrf_token() {
    let s = TestServer::start().await;
    let (secret, _) = s.create_key(serde_json::json!({"label": "Acme Ltd"})).await;
    let (mut b, csrf) = Browser::signed_in(&s).await;
    let r = b.post("/admin/keys/search", &[("q", &secret)]).await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("CSRF") && !r.body.contains(&secret));
    let wrong = "0".repeat(csrf.len());
    let r = b
        .post("/admin/keys/search", &[("csrf", &wrong), ("q", &secret)])
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.location(), "");
    let mut signed_out = Browser::new(&s);
    let r = signed_out
        .post("/admin/keys/search", &[("csrf", &csrf), ("q", &secret)])
        .await;
    assert_eq!(r.status, 401, "signed out: refused, nothing looked up");
    assert!(!r.body.contains(&secret));
}

/// A whole key typed into the address (`?q=`) still searches by its
/// prefix, and no link the page emits carries it: not the box, not the
/// pager, not any other address.
#[tokio::test]
async fn a_key_in_the_search_address_is_never_shown_or_linked_back() {
    let s = TestServer::start().await;
    let (secret, _) = s.create_key(serde_json::json!({"label": "Acme Ltd"})).await;
    for i in 0..3 {
        s.create_key(serde_json::json!({"label": format!("Bulk {i}")}))
            .await;
    }
    let (mut b, _) = Browser::signed_in(&s).await;
    for path in [
        format!("/admin/keys?q={secret}"),
        format!("/admin/keys?q={secret}&page=2"),
        format!("/admin/keys?q={}", mistyped(&secret)),
    ] {
        let r = b.get(&path).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.body.contains("Acme Ltd"), "{path}: {}", r.body);
        assert!(!r.body.contains(&secret[11..]), "{path}: {}", r.body);
        assert_eq!(search_box(&r.body), &secret[..11]);
        for href in r.body.split("href=\"").skip(1) {
            let href = href.split('"').next().unwrap();
            assert!(!href.contains(&secret[11..20]), "{path}: a link {href}");
        }
    }
}

#[tokio::test]
async fn edit_suspend_resume_and_revoke_a_key() {
    let s = TestServer::start().await;
    let (secret, key) = s
        .create_key(serde_json::json!({"label": "Old", "max_sessions": 2}))
        .await;
    let key_id = key["key_id"].as_str().unwrap().to_owned();
    let page = format!("/admin/keys/{key_id}");
    let (mut b, csrf) = Browser::signed_in(&s).await;

    let r = b
        .post(
            &page,
            &[
                ("csrf", &csrf),
                ("label", "New label"),
                ("max_sessions", "3"),
                ("on_conflict", "reject"),
                ("expires_at", "2099-06-01T12:00:00Z"),
            ],
        )
        .await;
    let shown = b.follow(&r).await;
    assert!(shown.body.contains("Changes saved"), "{}", shown.body);
    let (_, k) = s
        .admin("GET", &format!("/api/admin/keys/{key_id}"), None)
        .await;
    assert_eq!(k["label"], "New label");
    assert_eq!(k["max_sessions"], 3);
    assert_eq!(k["on_conflict"], "reject");
    assert_eq!(k["expires_at"], "2099-06-01T12:00:00Z");
    // Only what changed is recorded.
    let updates = s.events_of("key_updated").await;
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0]["detail"].as_object().unwrap().len(), 4);
    // Clearing the label and the expiry.
    let r = b
        .post(
            &page,
            &[
                ("csrf", &csrf),
                ("label", ""),
                ("max_sessions", "3"),
                ("on_conflict", "reject"),
                ("expires_at", ""),
            ],
        )
        .await;
    b.follow(&r).await;
    let (_, k) = s
        .admin("GET", &format!("/api/admin/keys/{key_id}"), None)
        .await;
    assert_eq!(k["label"], serde_json::Value::Null);
    assert_eq!(k["expires_at"], serde_json::Value::Null);

    // Suspend ends the live session; resume lets it start again.
    s.started(&secret, "laptop").await;
    let r = b.post(&format!("{page}/suspend"), &[("csrf", &csrf)]).await;
    let shown = b.follow(&r).await;
    assert!(
        shown
            .body
            .contains("Key suspended. 1 live session was ended."),
        "{}",
        shown.body
    );
    assert!(shown.body.contains("id=\"resume\""));
    let (status, _) = s.start_session(&secret, "laptop").await;
    assert_eq!(status, 403);
    let r = b.post(&format!("{page}/resume"), &[("csrf", &csrf)]).await;
    assert!(b.follow(&r).await.body.contains("Key resumed."));
    s.started(&secret, "laptop").await;

    // Revoke asks first (a page, no JavaScript), then revokes on POST.
    let confirm = b.get(&format!("{page}/revoke")).await;
    assert_eq!(confirm.status, 200);
    assert!(confirm.body.contains("id=\"confirm-revoke\""));
    assert!(confirm.body.contains("cannot be undone"));
    let (_, k) = s
        .admin("GET", &format!("/api/admin/keys/{key_id}"), None)
        .await;
    assert_eq!(k["status"], "active", "asking changes nothing");
    let r = b
        .post(&format!("{page}/revoke"), &[("csrf", &confirm.csrf())])
        .await;
    let shown = b.follow(&r).await;
    assert!(
        shown
            .body
            .contains("Key revoked. 1 live session was ended."),
        "{}",
        shown.body
    );
    assert!(
        !shown.body.contains("id=\"edit-key-form\""),
        "a revoked key has no edit form"
    );
    let (_, k) = s
        .admin("GET", &format!("/api/admin/keys/{key_id}"), None)
        .await;
    assert_eq!(k["status"], "revoked");
    let (status, _) = s.start_session(&secret, "laptop").await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn live_sessions_show_and_kick() {
    let s = TestServer::start().await;
    let (secret, key) = s.create_key(serde_json::json!({"label": "Acme"})).await;
    let id = s.started(&secret, "Alice's laptop").await;
    s.clock.advance_secs(7);
    let (mut b, csrf) = Browser::signed_in(&s).await;
    let page = b.get("/admin/sessions").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Alice&#39;s laptop") || page.body.contains("Alice's laptop"));
    assert!(page.body.contains(key["prefix"].as_str().unwrap()));
    assert!(page.body.contains("Acme"), "the key's label");
    assert!(page.body.contains(&id));
    assert!(page.body.contains("class=\"num\">7</td>"), "seconds since");
    assert!(page.body.contains(">Kick<"));
    assert!(page.body.contains("data-refresh"));

    let r = b
        .post(
            &format!("/admin/sessions/{id}/kick"),
            &[("csrf", &csrf), ("back", "/admin/sessions")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.location().starts_with("/admin/sessions?done="));
    let after = b.follow(&r).await;
    assert!(after.body.contains("ended."), "{}", after.body);
    assert!(after.body.contains("No live sessions."));
    let (status, body) = s.heartbeat(&secret, &id).await;
    assert_eq!(status, 410);
    assert_eq!(body["error"]["code"], "session_revoked");
    // Kicking again says so; an unknown session is a readable 404.
    let r = b
        .post(&format!("/admin/sessions/{id}/kick"), &[("csrf", &csrf)])
        .await;
    assert!(b.follow(&r).await.body.contains("had already ended"));
    let r = b
        .post("/admin/sessions/nosuchsession/kick", &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 404);
    // The redirect never leaves the dashboard.
    let id2 = s.started(&secret, "desk").await;
    let r = b
        .post(
            &format!("/admin/sessions/{id2}/kick"),
            &[("csrf", &csrf), ("back", "https://evil.example/")],
        )
        .await;
    assert!(r.location().starts_with("/admin/sessions?"));
}

/// A kick whose `back` cannot go into a `Location` header (a newline, DEL,
/// a header injection) or leaves the dashboard still ends the session and
/// sends the browser to the live-sessions page with the result: never a
/// plain-text 500 after the fact.
#[tokio::test]
async fn a_kick_with_a_bad_way_back_lands_on_the_sessions_page() {
    let s = TestServer::start().await;
    let (secret, _) = s.create_key(serde_json::json!({"max_sessions": 10})).await;
    let (mut b, csrf) = Browser::signed_in(&s).await;
    for back in [
        "/admin/\n",
        "/admin/\u{7f}",
        "/admin/\r\nSet-Cookie: a=b",
        "/admin/ü",
        "/admin/\\evil.example",
        "//evil.example/admin/",
    ] {
        let id = s.started(&secret, "desk").await;
        let r = b
            .post(
                &format!("/admin/sessions/{id}/kick"),
                &[("csrf", &csrf), ("back", back)],
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{back:?}: {}", r.body);
        assert!(
            r.location().starts_with("/admin/sessions?done="),
            "{back:?}: {}",
            r.location()
        );
        assert!(b.follow(&r).await.body.contains("ended."), "{back:?}");
        let (status, _) = s.heartbeat(&secret, &id).await;
        assert_eq!(status, 410, "{back:?}: the kick happened");
    }
}

/// Settings for crafted histories: leases long enough that a device
/// coming back minutes later finds the other one still live.
async fn long_lease_server() -> TestServer {
    TestServer::start_with(|c| {
        c.heartbeat_interval_seconds = 600;
        c.session_timeout_seconds = 3600;
    })
    .await
}

async fn start_device(s: &TestServer, key: &str, name: &str) -> String {
    let (status, body) = s
        .post(
            "/api/session/start",
            serde_json::json!({"access_key": key, "device": {"name": name, "fingerprint": format!("fp-{name}")}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["session_id"].as_str().unwrap().to_owned()
}

/// Keys `shared` (two devices ping-ponging), `solo` (one device, ended)
/// and `once` (one takeover); returns their ids.
async fn crafted_history(s: &TestServer) -> (String, String, String) {
    let (shared, k1) = s.create_key(serde_json::json!({"label": "Shared"})).await;
    let (solo, k2) = s.create_key(serde_json::json!({"label": "Solo"})).await;
    let (once, k3) = s.create_key(serde_json::json!({"label": "Once"})).await;
    let solo_id = start_device(s, &solo, "C").await;
    s.end(&solo, &solo_id).await;
    start_device(s, &once, "D").await;
    start_device(s, &shared, "A").await;
    for (minutes, device) in [(2, "B"), (3, "A"), (3, "B"), (32, "A"), (1, "A")] {
        s.clock.advance_secs(minutes * 60);
        start_device(s, &shared, device).await;
    }
    start_device(s, &once, "E").await;
    let id = |k: serde_json::Value| k["key_id"].as_str().unwrap().to_owned();
    (id(k1), id(k2), id(k3))
}

/// The number in a table cell of the row of `key_id`, by the cell's class.
fn cell(body: &str, key_id: &str, class: &str) -> Option<u64> {
    let row_start = body.find(&format!("<tr data-key-id=\"{key_id}\">"))?;
    let row = &body[row_start..row_start + body[row_start..].find("</tr>")?];
    let marker = format!("class=\"num {class}\">");
    let at = row.find(&marker)? + marker.len();
    row[at..].split('<').next()?.parse().ok()
}

fn stat(body: &str, id: &str) -> u64 {
    let marker = format!("id=\"{id}\"><span class=\"n\">");
    let at = body.find(&marker).unwrap_or_else(|| panic!("{id} in page")) + marker.len();
    body[at..].split('<').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn the_sharing_report_ranks_keys_and_counts_ping_pong() {
    let s = long_lease_server().await;
    let (shared, solo, once) = crafted_history(&s).await;
    let (mut b, _) = Browser::signed_in(&s).await;
    let r = b.get("/admin/sharing?since=1d&within=10m").await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A→B, B→A (3 min: ping-pong), A→B (3 min: ping-pong), B→A (32 min:
    // too late); A's restart replacing its own session is not a takeover.
    assert_eq!(cell(&r.body, &shared, "takeovers"), Some(4));
    assert_eq!(cell(&r.body, &shared, "ping-pongs"), Some(2));
    assert_eq!(cell(&r.body, &shared, "devices"), Some(2));
    assert_eq!(cell(&r.body, &shared, "fingerprints"), Some(2));
    assert!(r.body.contains("A ⇄ B: 2"), "{}", r.body);
    assert_eq!(cell(&r.body, &once, "takeovers"), Some(1));
    assert_eq!(cell(&r.body, &once, "ping-pongs"), Some(0));
    assert!(!r.body.contains(&solo), "a one-device key is not listed");
    let pos = |id: &str| r.body.find(&format!("data-key-id=\"{id}\"")).unwrap();
    assert!(pos(&shared) < pos(&once), "most takeovers first");

    // A longer ping-pong window catches the 32-minute return too.
    let r = b.get("/admin/sharing?since=1d&within=1h").await;
    assert_eq!(cell(&r.body, &shared, "ping-pongs"), Some(3));
    // A bad duration is a message, not an error blob.
    let r = b.get("/admin/sharing?since=soon").await;
    assert_eq!(r.status, 400);
    assert!(
        r.body.contains("must be a duration such as 30m"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn the_overview_counts_the_last_hour_and_day() {
    let s = long_lease_server().await;
    crafted_history(&s).await;
    let (mut b, _) = Browser::signed_in(&s).await;
    let r = b.get("/admin").await;
    assert_eq!(stat(&r.body, "stat-live"), 2, "A on shared, E on once");
    assert_eq!(stat(&r.body, "stat-active-keys"), 3);
    // Starts: C, D, A, B, A, B, A, A, E.
    assert_eq!(stat(&r.body, "stat-starts-hour"), 9);
    assert_eq!(stat(&r.body, "stat-starts-day"), 9);
    // Superseded sessions: five on `shared` (one a restart), one on `once`.
    assert_eq!(stat(&r.body, "stat-takeovers-hour"), 6);
    assert!(r.body.contains("<svg"), "the chart");
    assert!(r.body.contains("id=\"chart\""));

    // Two hours later the sessions have expired (a heartbeat records it);
    // the last hour is quiet, the last day still counts everything.
    s.clock.advance_secs(2 * 3600);
    let (_, live) = s.admin("GET", "/api/admin/sessions", None).await;
    assert_eq!(live["sessions"].as_array().unwrap().len(), 0);
    let r = b.get("/admin").await;
    assert_eq!(stat(&r.body, "stat-live"), 0);
    assert_eq!(stat(&r.body, "stat-starts-hour"), 0);
    assert_eq!(stat(&r.body, "stat-starts-day"), 9);
    assert_eq!(stat(&r.body, "stat-takeovers-day"), 6);

    // Suspended and revoked keys are not active.
    let (_, keys) = s.admin("GET", "/api/admin/keys", None).await;
    let ids: Vec<String> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_id"].as_str().unwrap().to_owned())
        .collect();
    s.admin(
        "PATCH",
        &format!("/api/admin/keys/{}", ids[0]),
        Some(serde_json::json!({"status": "suspended"})),
    )
    .await;
    s.admin("POST", &format!("/api/admin/keys/{}/revoke", ids[1]), None)
        .await;
    let r = b.get("/admin").await;
    assert_eq!(stat(&r.body, "stat-active-keys"), 1);
    assert!(r.body.contains("active keys of 3"));
}

/// Every overview card's caption is a link to the page that lists what it
/// counts (events by type and window), and each of those pages answers.
#[tokio::test]
async fn every_overview_card_links_to_what_it_counts() {
    let s = TestServer::start().await;
    let (mut b, _) = Browser::signed_in(&s).await;
    let home = b.get("/admin").await;
    for (id, href) in [
        ("stat-live", "/admin/sessions"),
        ("stat-active-keys", "/admin/keys"),
        (
            "stat-starts-hour",
            "/admin/events?type=session_started&since=1h",
        ),
        (
            "stat-starts-day",
            "/admin/events?type=session_started&since=24h",
        ),
        (
            "stat-takeovers-hour",
            "/admin/events?type=session_superseded&since=1h",
        ),
        (
            "stat-takeovers-day",
            "/admin/events?type=session_superseded&since=24h",
        ),
        (
            "stat-expiries-hour",
            "/admin/events?type=session_expired&since=1h",
        ),
        (
            "stat-expiries-day",
            "/admin/events?type=session_expired&since=24h",
        ),
    ] {
        let at = home.body.find(&format!("id=\"{id}\"")).expect(id);
        let card = &home.body[at..];
        let card = &card[..card.find("</div>").unwrap()];
        let link = format!("<a class=\"l\" href=\"{}\">", href.replace('&', "&amp;"));
        assert!(card.contains(&link), "{id}: {card}");
        assert_eq!(b.get(href).await.status, 200, "{href}");
    }
}

/// An event's detail reads as `name: value` lines, escaped, with the stored
/// JSON behind a `<details>` toggle.
#[tokio::test]
async fn event_details_read_as_name_value_lines() {
    let s = TestServer::start().await;
    s.create_key(serde_json::json!({"label": "Acme <b>Ltd</b>", "max_sessions": 2}))
        .await;
    let (mut b, _) = Browser::signed_in(&s).await;
    let r = b.get("/admin/events?type=key_created").await;
    assert_eq!(r.status, 200);
    for line in [
        "<span class=\"k\">label:</span> <span class=\"v\">Acme &lt;b&gt;Ltd&lt;/b&gt;</span>",
        "<span class=\"k\">max_sessions:</span> <span class=\"v\">2</span>",
        "<span class=\"k\">expires_at:</span> <span class=\"v\">none</span>",
    ] {
        assert!(r.body.contains(line), "{line}: {}", r.body);
    }
    assert!(
        r.body
            .contains("<details class=\"raw\"><summary>JSON</summary>"),
        "{}",
        r.body
    );
    assert!(r.body.contains("&quot;max_sessions&quot;:2"), "{}", r.body);
    assert!(!r.body.contains("<b>Ltd"), "markup is escaped");
}

#[tokio::test]
async fn the_events_page_filters_and_pages() {
    let s = long_lease_server().await;
    let (_, _, once) = crafted_history(&s).await;
    let (mut b, _) = Browser::signed_in(&s).await;
    let rows = |body: &str| body.matches("<tr data-event-id=").count();

    let r = b.get("/admin/events?type=session_started").await;
    assert_eq!(r.status, 200);
    assert_eq!(rows(&r.body), 9);
    let r = b
        .get(&format!("/admin/events?key={once}&type=session_superseded"))
        .await;
    assert_eq!(rows(&r.body), 1, "{}", r.body);
    assert!(r.body.contains(">D<"), "the device that lost the seat");
    // A time range: the first 5 minutes of the shared key's ping-pong.
    let t0 = s.now().minus_secs(41 * 60);
    let until = t0.plus_secs(5 * 60 + 1).to_rfc3339();
    let r = b
        .get(&format!(
            "/admin/events?type=session_superseded&until={}",
            until.replace(':', "%3A")
        ))
        .await;
    assert_eq!(rows(&r.body), 2, "A→B at 2 min, B→A at 5 min");
    let r = b
        .get("/admin/events?type=session_superseded&since=30m")
        .await;
    assert_eq!(
        rows(&r.body),
        3,
        "the last 30 minutes: B→A, A's restart, D→E"
    );

    // Wrong filters are messages.
    let r = b.get("/admin/events?type=nope").await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("Type must be one of"), "{}", r.body);
    let r = b.get("/admin/events?key=ks_zzzzzzzz").await;
    assert!(r.body.contains("No key matches"), "{}", r.body);
    let r = b.get("/admin/events?since=whenever").await;
    assert!(r.body.contains("an age such as 30m"), "{}", r.body);

    // Paging: 50 a page, then the rest behind "Older events".
    for _ in 0..60 {
        s.create_key(serde_json::json!({})).await;
    }
    let first = b.get("/admin/events?type=key_created").await;
    assert_eq!(rows(&first.body), 50);
    let older = first.body[..first.body.find("id=\"older\"").unwrap()]
        .rsplit("href=\"")
        .next()
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    let second = b.get(&older).await;
    assert_eq!(rows(&second.body), 13, "63 keys in all");
    assert!(!second.body.contains("id=\"older\""));
}

/// A label or device name holding invisible or direction-changing
/// characters (stored by an earlier release; input refuses them now) is
/// shown with each one as its code point, `\u{202e}`, on every page, so a
/// row cannot pass for another.
#[tokio::test]
async fn stored_invisible_characters_are_shown_escaped() {
    let s = TestServer::start().await;
    let (secret, key) = s.create_key(serde_json::json!({"label": "plain"})).await;
    let key_id = key["key_id"].as_str().unwrap().to_owned();
    let id = s.started(&secret, "desk").await;
    let mut s = s;
    s.stop().await;
    let conn = rusqlite::Connection::open(s.db_path()).unwrap();
    conn.execute(
        "UPDATE keys SET label = ?1 WHERE key_id = ?2",
        ("gpj.\u{202E}exe\u{2066}", &key_id),
    )
    .unwrap();
    conn.execute(
        "UPDATE sessions SET device_name = ?1 WHERE session_id = ?2",
        ("lap\u{200B}top\u{FEFF}", &id),
    )
    .unwrap();
    drop(conn);
    let s = s.restart_after(0).await;
    let (mut b, _) = Browser::signed_in(&s).await;
    for (path, shown) in [
        ("/admin/keys".to_owned(), "gpj.\\u{202e}exe\\u{2066}"),
        (format!("/admin/keys/{key_id}"), "gpj.\\u{202e}exe\\u{2066}"),
        ("/admin/sessions".to_owned(), "lap\\u{200b}top\\u{feff}"),
    ] {
        let page = b.get(&path).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(
            page.body.contains(shown),
            "{path} lacks {shown}:\n{}",
            page.body
        );
        assert!(
            !page
                .body
                .contains(['\u{202E}', '\u{2066}', '\u{200B}', '\u{FEFF}']),
            "{path} shows them raw"
        );
    }
}

/// The `<tr>` of a session on a sessions table.
fn session_row<'a>(body: &'a str, session_id: &str) -> &'a str {
    let start = body
        .find(&format!("<tr data-session-id=\"{session_id}\">"))
        .unwrap_or_else(|| panic!("a row for {session_id}: {body}"));
    &body[start..start + body[start..].find("</tr>").unwrap()]
}

/// Borrows a seat of `key` for `hours` over the API; returns (session id,
/// borrowed_until as the answer spells it).
async fn borrowed(s: &TestServer, key: &str, device: &str, hours: u32) -> (String, String) {
    let (status, body) = s
        .post(
            "/api/session/borrow",
            serde_json::json!({"access_key": key, "device": {"name": device}, "hours": hours}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let id = body["session_id"].as_str().unwrap().to_owned();
    (id, body["borrowed_until"].as_str().unwrap().to_owned())
}

/// The key form carries the borrowing field, the details say the terms,
/// and the edit form refuses a bad value with its message (the key
/// unchanged), never a panic.
#[tokio::test]
async fn the_key_form_sets_offline_borrowing_and_refuses_bad_hours() {
    let s = TestServer::start().await;
    let (mut b, csrf) = Browser::signed_in(&s).await;
    let form = b.get("/admin/keys/new").await;
    assert!(
        form.body.contains("name=\"max_borrow_hours\""),
        "{}",
        form.body
    );
    let created = b
        .post(
            "/admin/keys",
            &[
                ("csrf", &csrf),
                ("label", "Travel"),
                ("max_sessions", "1"),
                ("on_conflict", "takeover"),
                ("expires_at", ""),
                ("max_borrow_hours", "12"),
            ],
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert!(created.body.contains("up to 12 h"), "{}", created.body);
    let marker = "<code id=\"key-id\">";
    let at = created.body.find(marker).expect("the key id") + marker.len();
    let key_id = &created.body[at..at + created.body[at..].find('<').unwrap()];
    let page = b.get(&format!("/admin/keys/{key_id}")).await;
    assert!(page.body.contains("Offline borrowing"), "{}", page.body);
    assert!(page.body.contains("value=\"12\""), "the edit form shows it");
    for (value, words) in [
        ("9000", "between 0 and 8760"),
        ("abc", "whole number of hours"),
    ] {
        let r = b
            .post(
                &format!("/admin/keys/{key_id}"),
                &[
                    ("csrf", &csrf),
                    ("label", "Travel"),
                    ("max_sessions", "1"),
                    ("on_conflict", "takeover"),
                    ("expires_at", ""),
                    ("max_borrow_hours", value),
                ],
            )
            .await;
        assert_eq!(r.status, 400, "{value}: {}", r.body);
        assert!(r.body.contains("id=\"error\""), "{value}");
        assert!(r.body.contains(words), "{value}: {}", r.body);
        assert!(r.body.contains("id=\"edit-key-form\""), "the form again");
    }
    let (_, key) = s
        .admin("GET", &format!("/api/admin/keys/{key_id}"), None)
        .await;
    assert_eq!(key["max_borrow_hours"], 12, "unchanged: {key}");
    // Empty turns borrowing off.
    let r = b
        .post(
            &format!("/admin/keys/{key_id}"),
            &[
                ("csrf", &csrf),
                ("label", "Travel"),
                ("max_sessions", "1"),
                ("on_conflict", "takeover"),
                ("expires_at", ""),
                ("max_borrow_hours", ""),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let page = b.follow(&r).await;
    assert!(
        page.body.contains("id=\"key-borrowing\">off<"),
        "{}",
        page.body
    );
}

/// A borrowed session shows "borrowed until" on the live-sessions page and
/// on its key's page (an ordinary one does not), still after its heartbeats
/// would have run out; kicking it says plainly that the device's lease
/// token stays valid offline until its exp; the events page reads the
/// borrow's detail as lines.
#[tokio::test]
async fn borrowed_sessions_show_as_borrowed_and_their_kick_says_the_token_stays_valid() {
    let s = TestServer::start().await;
    let (secret, key) = s
        .create_key(
            serde_json::json!({"label": "Travel", "max_sessions": 2, "max_borrow_hours": 24}),
        )
        .await;
    let key_id = key["key_id"].as_str().unwrap();
    let desk = s.started(&secret, "desk").await;
    let (laptop, until) = borrowed(&s, &secret, "laptop", 2).await;
    let (mut b, csrf) = Browser::signed_in(&s).await;
    for path in [
        "/admin/sessions".to_owned(),
        format!("/admin/keys/{key_id}"),
    ] {
        let page = b.get(&path).await;
        assert_eq!(page.status, 200, "{path}");
        let row = session_row(&page.body, &laptop);
        assert!(row.contains("class=\"badge borrowed\""), "{path}: {row}");
        assert!(row.contains("borrowed until"), "{path}: {row}");
        assert!(
            row.contains(&format!("datetime=\"{until}\"")),
            "{path}: {row}"
        );
        assert!(
            !session_row(&page.body, &desk).contains("borrowed"),
            "{path}"
        );
    }
    // Past a timeout the desk is gone, the borrowed laptop still listed.
    s.clock.advance_secs(s.settings.session_timeout_seconds + 5);
    let page = b.get("/admin/sessions").await;
    assert!(!page.body.contains(&desk), "{}", page.body);
    assert!(session_row(&page.body, &laptop).contains("class=\"badge borrowed\""));

    let r = b
        .post(
            &format!("/admin/sessions/{laptop}/kick"),
            &[("csrf", &csrf), ("back", "/admin/sessions")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let after = b.follow(&r).await;
    let flash = &after.body[after.body.find("id=\"flash\"").expect("a flash")..];
    let flash = &flash[..flash.find("</p>").unwrap()];
    assert!(flash.contains("Session of laptop ended"), "{flash}");
    assert!(
        flash.contains(&format!("lease token stays valid offline until {until}")),
        "{flash}"
    );
    assert!(after.body.contains("No live sessions."), "{}", after.body);
    let (status, body) = s.heartbeat(&secret, &laptop).await;
    assert_eq!(status, 410, "{body}");

    // An ordinary session's kick says nothing of a token.
    let other = s.started(&secret, "phone").await;
    let r = b
        .post(&format!("/admin/sessions/{other}/kick"), &[("csrf", &csrf)])
        .await;
    let after = b.follow(&r).await;
    assert!(
        after.body.contains("Session of phone ended."),
        "{}",
        after.body
    );
    assert!(!after.body.contains("lease token"), "{}", after.body);

    // The borrow's audit event reads as name: value lines.
    let r = b.get("/admin/events?type=session_borrowed").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body.matches("<tr data-event-id=").count(),
        1,
        "{}",
        r.body
    );
    for line in [
        "<code>session_borrowed</code>".to_owned(),
        "<span class=\"k\">hours:</span> <span class=\"v\">2</span>".to_owned(),
        format!("<span class=\"k\">borrowed_until:</span> <span class=\"v\">{until}</span>"),
        "<span class=\"k\">fence:</span>".to_owned(),
    ] {
        assert!(r.body.contains(&line), "{line}: {}", r.body);
    }
}
