//! Live sessions: who holds a seat right now, and a Kick button for each.
//! A borrowed session (held offline, without heartbeats) says so and until
//! when, as its kick does: the device's lease token outlives the kick.

use axum::extract::rejection::FormRejection;
use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::{Extension, Form};
use maud::{html, Markup};
use serde::Deserialize;

use super::auth::Signed;
use super::page::{csrf_field, enc, flash, see_other, text_opt, when, Page, PageResult};
use crate::clock::Timestamp;
use crate::http::extract::ClientAddr;
use crate::model::{Actor, Session};
use crate::state::AppState;
use crate::store::{blocking, EndOutcome};
use crate::wire::borrowed_at;

/// Rows the live-sessions page shows at most (a big deployment has far
/// more live sessions than a page can usefully hold).
const MAX_ROWS: usize = 500;

/// The live-sessions table with a Kick form per row; after a kick the
/// browser comes back to `back` (a dashboard path).
pub fn table(
    me: &Signed,
    sessions: &[Session],
    labels: &HashMap<String, String>,
    now: Timestamp,
    back: &str,
) -> Markup {
    html! {
        @if sessions.is_empty() {
            p id="no-sessions" { "No live sessions." }
        } @else {
            div class="scroll" {
                table id="sessions" class="stack" {
                    caption class="visually-hidden" { "Live sessions" }
                    thead { tr {
                        th scope="col" { "Key" } th scope="col" { "Device" }
                        th scope="col" { "Session" } th scope="col" { "Started" }
                        th scope="col" { "Last heartbeat" } th scope="col" { "Seconds since" }
                        th scope="col" { "Offline" }
                        th scope="col" { span class="visually-hidden" { "Action" } }
                    } }
                    tbody {
                        @for s in sessions {
                            tr data-session-id=(s.session_id) {
                                td data-label="Key" {
                                    a href={ "/admin/keys/" (s.key_id) } { code { (s.key_prefix) } }
                                    @if let Some(l) = labels.get(&s.key_id) { " " span class="muted" { (l) } }
                                }
                                td data-label="Device" class="device" { (text_opt(s.device_name.as_deref())) }
                                td data-label="Session" { code class="small id" { (s.session_id) } }
                                td data-label="Started" { (when(s.started_at)) }
                                td data-label="Last heartbeat" { (when(s.last_heartbeat)) }
                                td data-label="Seconds since" class="num" { (now.secs_since(s.last_heartbeat)) }
                                td data-label="Offline" {
                                    @if let Some(until) = borrowed_at(s, now) {
                                        span class="badge borrowed" title="Held without heartbeats; a kick frees the seat, but the device's lease token stays valid offline until then" {
                                            "borrowed until " (when(until))
                                        }
                                    } @else { span class="muted" { "–" } }
                                }
                                td data-label="Action" {
                                    form method="post" action={ "/admin/sessions/" (enc(&s.session_id)) "/kick" } {
                                        (csrf_field(&me.csrf))
                                        input type="hidden" name="back" value=(back);
                                        button type="submit" class="danger small" name="kick"
                                            aria-label={ "Kick " (s.device_name.as_deref().unwrap_or("unnamed device")) " (session " (s.session_id) ")" } { "Kick" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    key: Option<String>,
    done: Option<String>,
}

/// `GET /admin/sessions[?key=…]`.
pub async fn list(
    State(state): State<AppState>,
    Extension(me): Extension<Signed>,
    q: std::result::Result<Query<ListQuery>, QueryRejection>,
) -> PageResult {
    let q = super::page::query(q)?;
    let store = state.store()?;
    let now = state.now();
    // A pasted access key is looked up, refilled and linked by its prefix.
    let key = q
        .key
        .as_deref()
        .filter(|k| !k.trim().is_empty())
        .map(|k| super::page::key_as_prefix(k).unwrap_or_else(|| k.to_owned()));
    let k2 = key.clone();
    let (sessions, labels) = blocking(move || {
        let mut sessions = store.live_sessions(k2.as_deref().map(str::trim), now)?;
        let total = sessions.len();
        sessions.truncate(MAX_ROWS);
        // Each shown key's label, looked up once.
        let mut labels = HashMap::new();
        for s in &sessions {
            if !labels.contains_key(&s.key_id) {
                let label = store.get_key(&s.key_id, now)?.label.unwrap_or_default();
                labels.insert(s.key_id.clone(), label);
            }
        }
        labels.retain(|_, l: &mut String| !l.is_empty());
        Ok(((sessions, total), labels))
    })
    .await?;
    let (sessions, total) = sessions;
    let back = match &key {
        Some(k) => format!("/admin/sessions?key={}", enc(&super::page::typed(k))),
        None => "/admin/sessions".into(),
    };
    let body = html! {
        h1 { "Live sessions" }
        (flash(q.done.as_deref()))
        form method="get" action="/admin/sessions" class="search" {
            label for="key" { "Only the key (prefix or key id)" }
            div class="row" {
                input type="search" id="key" name="key" value=(super::page::typed(key.as_deref().unwrap_or("")));
                button type="submit" id="filter" { "Filter" }
            }
        }
        p class="muted" id="session-count" {
            (total) " live session(s), as of " (when(now))
            @if total > MAX_ROWS { "; the " (MAX_ROWS) " with the most recent heartbeat are shown (filter by key to see others)" }
        }
        (table(&me, &sessions, &labels, now, &back))
    };
    Ok(Page::new("Live sessions")
        .nav("sessions", &me.csrf)
        .live()
        .render(body)
        .into_response())
}

#[derive(Debug, Deserialize)]
pub struct KickForm {
    #[serde(default)]
    back: String,
}

/// `POST /admin/sessions/{session_id}/kick`: ends it (reason `revoked`);
/// the device learns at its next heartbeat.
pub async fn kick(
    State(state): State<AppState>,
    addr: ClientAddr,
    Path(session_id): Path<String>,
    f: Result<Form<KickForm>, FormRejection>,
) -> PageResult {
    let f = super::page::form(f)?;
    // The way back is settled before acting, so a bad one (only a tampered
    // form has one) cannot turn a kick that happened into an error page:
    // it is replaced by the sessions page, as an off-dashboard one is.
    let back = super::page::dashboard_path(&f.back)
        .unwrap_or("/admin/sessions")
        .to_owned();
    let actor = Actor(addr.label());
    let outcome = state.seats()?.kick(session_id, actor).await?;
    let msg = match outcome {
        EndOutcome::Ended(s) => {
            let device = s.device_name.as_deref().unwrap_or("an unnamed device");
            match still_borrowed(&s) {
                Some(until) => format!(
                    "Session of {device} ended; its seat is free. It was borrowed: the \
                     device's lease token stays valid offline until {until} (its exp), \
                     and nothing can reach a device without a network to take it back."
                ),
                None => format!("Session of {device} ended."),
            }
        }
        EndOutcome::AlreadyEnded(r) => format!("That session had already ended ({}).", r.as_str()),
    };
    let sep = if back.contains('?') { '&' } else { '?' };
    Ok(see_other(&format!("{back}{sep}done={}", enc(&msg))))
}

/// The end of the borrow a kicked session still had when it ended: its
/// lease token's `exp`, which the kick cannot take back.
fn still_borrowed(s: &Session) -> Option<Timestamp> {
    let ended = s.ended_at?;
    s.borrowed_until.filter(|until| ended < *until)
}
