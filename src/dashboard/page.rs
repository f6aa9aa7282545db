//! The page frame every dashboard page shares (head, navigation, sign-out
//! form), error pages, and small rendering helpers.

use axum::extract::rejection::FormRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Form;
use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::input;

/// The sections in the navigation: (id, path, text).
const NAV: [(&str, &str, &str); 5] = [
    ("overview", "/admin", "Overview"),
    ("keys", "/admin/keys", "Keys"),
    ("sessions", "/admin/sessions", "Live sessions"),
    ("events", "/admin/events", "Events"),
    ("sharing", "/admin/sharing", "Sharing report"),
];

/// A page being rendered.
pub struct Page<'a> {
    title: &'a str,
    csrf: Option<&'a str>,
    active: &'a str,
    refresh: bool,
}

impl<'a> Page<'a> {
    /// A page with this title (also the `<h1>` unless the content has one).
    pub fn new(title: &'a str) -> Self {
        Page {
            title,
            csrf: None,
            active: "",
            refresh: false,
        }
    }

    /// Without navigation (sign-in and error pages).
    pub fn bare(self) -> Self {
        self
    }

    /// With navigation, this section highlighted, and the sign-out form.
    pub fn nav(mut self, active: &'a str, csrf: &'a str) -> Self {
        self.active = active;
        self.csrf = Some(csrf);
        self
    }

    /// Asks the script to refresh the main content every few seconds.
    pub fn live(mut self) -> Self {
        self.refresh = true;
        self
    }

    /// The whole document around `content`.
    pub fn render(self, content: Markup) -> Markup {
        // Every stored text (names, fingerprints, labels, actors) and every
        // echoed query reaches the browser through here, so invisible and
        // direction-changing characters are escaped once for all of them:
        // the dashboard's own words contain none.
        let page = self.render_raw(content).into_string();
        PreEscaped(crate::input::escape_invisible(&page).into_owned())
    }

    fn render_raw(self, content: Markup) -> Markup {
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    meta name="referrer" content="no-referrer";
                    // No icon file: an empty one stops browsers asking for
                    // /favicon.ico (a 404 and a console error on every page).
                    link rel="icon" href="data:,";
                    title { (self.title) " · keyseat" }
                    link rel="stylesheet" href="/admin/assets/style.css";
                    script src="/admin/assets/app.js" defer {}
                }
                body {
                    a class="skip" href="#main" { "Skip to content" }
                    @if let Some(csrf) = self.csrf {
                        header class="top" {
                            nav aria-label="Main" {
                                a class="brand" href="/admin" { "keyseat" }
                                ul {
                                    @for (id, path, text) in NAV {
                                        li {
                                            @if id == self.active {
                                                a href=(path) id={ "nav-" (id) } aria-current="page" { (text) }
                                            } @else {
                                                a href=(path) id={ "nav-" (id) } { (text) }
                                            }
                                        }
                                    }
                                }
                                form method="post" action="/admin/sign-out" class="signout" {
                                    input type="hidden" name="csrf" value=(csrf);
                                    button type="submit" id="sign-out" class="link" { "Sign out" }
                                }
                            }
                        }
                    }
                    main id="main" data-refresh=[self.refresh.then_some("10")] {
                        (content)
                    }
                }
            }
        }
    }
}

/// A full page saying what went wrong, with a way back.
pub fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = Page::new(title).bare().render(html! {
        section class="narrow" {
            h1 { (title) }
            p class="flash error" role="alert" id="error" { (message) }
            p { a href="/admin" { "Back to the dashboard" } }
        }
    });
    (status, body).into_response()
}

/// A handler's failure, shown as a page (never as JSON, never a panic).
#[derive(Debug)]
pub struct Failure {
    status: StatusCode,
    message: String,
}

impl Failure {
    /// A failure with its own status and words.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let (status, _) = crate::http::error::status_and_code(&e);
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "dashboard request failed");
            "Something went wrong on the server; its log has the details.".to_owned()
        } else if status == StatusCode::SERVICE_UNAVAILABLE {
            "The database is busy or the server is starting; try again shortly.".to_owned()
        } else {
            sentence(&e.to_string())
        };
        Failure { status, message }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let title = match self.status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::BAD_REQUEST => "Check the input",
            StatusCode::CONFLICT => "Not possible now",
            StatusCode::TOO_MANY_REQUESTS => "Too many attempts",
            _ => "Something went wrong",
        };
        error_page(self.status, title, &self.message)
    }
}

/// Starts a message with a capital letter and ends it with a full stop.
pub fn sentence(text: &str) -> String {
    let mut chars = text.trim().chars();
    let mut out: String = match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => return String::new(),
    };
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

/// Reads a form, turning a malformed one into a readable page.
pub fn form<T>(f: std::result::Result<Form<T>, FormRejection>) -> std::result::Result<T, Failure> {
    f.map(|Form(v)| v).map_err(|e| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            format!("The form could not be read: {}", e.body_text()),
        )
    })
}

/// A time as typed: RFC 3339, or a UTC date (`2027-01-31`) or date and
/// time (`2027-01-31T12:00`, `2027-01-31 12:00`).
pub fn loose_time(text: &str) -> Option<Timestamp> {
    let t = text.trim().replacen(' ', "T", 1);
    [
        t.clone(),
        format!("{t}Z"),
        format!("{t}:00Z"),
        format!("{t}T00:00:00Z"),
    ]
    .iter()
    .find_map(|c| Timestamp::parse_rfc3339(c))
}

/// An expiry as typed: empty or `never` for none, else a [`loose_time`].
pub fn parse_expiry(text: &str) -> Result<Option<Timestamp>> {
    let t = text.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    loose_time(t).map(Some).ok_or_else(|| {
        Error::InvalidRequest(format!(
            "expiry must be a UTC date such as 2027-01-31, a time such as \
             2027-01-31T12:00:00Z, or empty for never (got `{}`)",
            crate::keys::redact_secret(text)
        ))
    })
}

/// A filter time: a [`loose_time`] or an age before `now` (`24h`).
pub fn time_or_age(field: &str, text: &str, now: Timestamp) -> Result<Timestamp> {
    match loose_time(text) {
        Some(t) => Ok(t),
        None => input::time_or_age(field, text, now),
    }
}

/// Reads a query string, turning a malformed one into a readable page.
pub fn query<T>(
    q: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, Failure> {
    q.map(|axum::extract::Query(v)| v).map_err(|e| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            format!(
                "The address has a malformed parameter: {}",
                crate::keys::redact_secret(&e.body_text())
            ),
        )
    })
}

/// A handler's answer.
pub type PageResult = Result<Response, Failure>;

/// The hidden CSRF field every form carries.
pub fn csrf_field(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf); }
}

/// A time for a table cell: a `<time>` element with the exact instant.
/// In a narrow column it may break between the date and the clock time,
/// never inside either (`2026-11-` / `30` reads as two wrong things).
pub fn when(t: Timestamp) -> Markup {
    let full = t.to_rfc3339();
    // 2026-11-30T09:30:00Z -> 2026-11-30 09:30:00
    match (full.get(..10), full.get(11..19)) {
        (Some(date), Some(clock)) => html! {
            time datetime=(full) { span class="nb" { (date) } " " span class="nb" { (clock) } }
        },
        _ => html! { time datetime=(full) { (full) } },
    }
}

/// An optional time, `–` when absent.
pub fn when_opt(t: Option<Timestamp>, none: &str) -> Markup {
    match t {
        Some(t) => when(t),
        None => html! { span class="muted" { (none) } },
    }
}

/// An optional text, `–` when absent.
pub fn text_opt(t: Option<&str>) -> Markup {
    match t {
        Some(t) => html! { (t) },
        None => html! { span class="muted" { "–" } },
    }
}

/// A success message at the top of a page, from `?done=…`.
pub fn flash(done: Option<&str>) -> Markup {
    html! {
        @if let Some(msg) = done.filter(|m| !m.is_empty()) {
            p class="flash ok" role="status" id="flash" { (crate::keys::redact_secret(msg)) }
        }
    }
}

/// Percent-encodes a query value.
pub fn enc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What a filter or search box shows again of what was typed, and what its
/// links carry: a pasted access key (whole, mistyped or cut short) is cut
/// to its prefix, so the secret never comes back in the page or in an
/// address that lands in the browser's history.
pub fn typed(text: &str) -> String {
    key_as_prefix(text).unwrap_or_else(|| crate::keys::redact_secret(text))
}

/// The prefix of `text` if it looks like an access key typed into a key
/// field (`ks_`, 8 key characters, then more): a whole key or one with a
/// wrong character, either way found by its prefix.
pub fn key_as_prefix(text: &str) -> Option<String> {
    let t = text.trim();
    let keep = crate::keys::KEY_TAG.len() + crate::keys::PREFIX_LEN;
    (t.starts_with(crate::keys::KEY_TAG)
        && t.len() > keep
        && t.bytes()
            .take(keep)
            .all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    .then(|| t[..keep].to_owned())
}

/// A form's `back` target, if it is a dashboard page the browser may be
/// sent to: a path under `/admin` (never `//host`, which browsers read as
/// another site), with no `..` segment and no access key, made only of
/// visible ASCII other than a backslash (which browsers read as `/`). Anything else, including a
/// newline or DEL that cannot go into a `Location` header, is `None`, and
/// the caller uses its own default page instead.
pub fn dashboard_path(back: &str) -> Option<&str> {
    let path = back.split(['?', '#']).next().unwrap_or("");
    let ok = (path == "/admin" || path.starts_with("/admin/"))
        && back.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
        && !path.split('/').any(|seg| seg == "..")
        // The dashboard's own links carry keys by prefix only; a pasted
        // secret must not come back in a `Location` header.
        && !crate::input::holds_access_key(back);
    ok.then_some(back)
}

/// A 303 to `to`. Every target is built from dashboard paths and
/// percent-encoded values, so it is always a valid header value; if one
/// ever is not, the browser gets a readable error page and the log says
/// why, never axum's plain-text 500.
pub fn see_other(to: &str) -> Response {
    if axum::http::HeaderValue::from_str(to).is_ok() {
        axum::response::Redirect::to(to).into_response()
    } else {
        tracing::error!(
            target_len = to.len(),
            "dashboard built a redirect that is not a valid header value"
        );
        error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "The action was done, but the page to go back to could not be built; \
             open the dashboard again.",
        )
    }
}

/// Raw, trusted markup (our own SVG).
pub fn raw(s: String) -> PreEscaped<String> {
    PreEscaped(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_and_encoding() {
        assert_eq!(sentence("no key matches x"), "No key matches x.");
        assert_eq!(sentence("done."), "Done.");
        assert_eq!(enc("a b/ü"), "a%20b%2F%C3%BC");
    }

    /// Only dashboard paths that can go into a `Location` header are taken
    /// as a form's way back.
    #[test]
    fn back_targets_stay_in_the_dashboard_and_in_the_header_alphabet() {
        for good in [
            "/admin",
            "/admin/sessions",
            "/admin/sessions?key=ks_abc%20d",
        ] {
            assert_eq!(dashboard_path(good), Some(good), "{good}");
        }
        for bad in [
            "",
            "/admin/\n",
            "/admin/\u{7f}",
            "/admin/\r\nSet-Cookie: x=y",
            "/admin/ü",
            "/admin/ x",
            "/admin/\\evil.example",
            "/admin/../api/admin/keys",
            "//evil.example/admin/",
            "https://evil.example/admin/",
            "/administrator",
            "/api/admin/keys?x=/admin/",
        ] {
            assert_eq!(dashboard_path(bad), None, "{bad:?}");
        }
        let key = crate::keys::AccessKey::generate();
        let back = format!("/admin/sessions?key={}", key.expose_secret());
        assert_eq!(dashboard_path(&back), None, "a pasted key in a Location");
    }

    /// A pasted key comes back in a filter box as its prefix, whole,
    /// mistyped or behind other text.
    #[test]
    fn typed_text_shows_a_pasted_key_only_by_its_prefix() {
        let key = crate::keys::AccessKey::generate();
        let secret = key.expose_secret();
        let prefix = key.prefix();
        assert_eq!(typed(secret), prefix);
        assert_eq!(typed(&format!("{}x", &secret[..30])), prefix);
        assert_eq!(key_as_prefix(&format!(" {secret} ")), Some(prefix.clone()));
        let behind = typed(&format!("x {secret}"));
        assert!(
            behind.starts_with("x ks_") && !behind.contains(&secret[11..]),
            "{behind}"
        );
        assert_eq!(typed("24h"), "24h");
        assert_eq!(typed("ks_abc"), "ks_abc");
        assert_eq!(key_as_prefix("ks_abcdefgh"), None, "a prefix is a prefix");
    }

    #[test]
    fn pages_escape_and_declare_language() {
        let p = Page::new("<x>")
            .nav("keys", "tok")
            .render(html! { p { "<script>" } });
        let s = p.into_string();
        assert!(s.contains("<html lang=\"en\">"));
        assert!(s.contains("&lt;script&gt;"));
        assert!(!s.contains("<script>\""));
        assert!(s.contains("aria-current=\"page\""));
        assert!(s.contains("name=\"csrf\" value=\"tok\""));
    }
}
