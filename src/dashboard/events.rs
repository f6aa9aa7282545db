//! The audit log with filters (key, type, time range), newest first,
//! paged by event id like the admin API (`before`).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::Extension;
use maud::html;
use serde::Deserialize;

use super::auth::Signed;
use super::page::{enc, text_opt, when, Page, PageResult};
use crate::input;
use crate::model::{Event, EventType};
use crate::state::AppState;
use crate::store::{blocking, EventFilter};

/// Events per page.
const PER_PAGE: usize = 50;
/// Pages of the store read at most to fill one page under an `until`.
const MAX_SCANS: usize = 40;

#[derive(Debug, Default, Deserialize)]
pub struct EventQuery {
    key: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    since: Option<String>,
    until: Option<String>,
    before: Option<String>,
}

fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// `GET /admin/events`.
pub async fn list(
    State(state): State<AppState>,
    Extension(me): Extension<Signed>,
    q: std::result::Result<Query<EventQuery>, QueryRejection>,
) -> PageResult {
    let q = super::page::query(q)?;
    let now = state.now();
    // Every filter is checked first, so a typo is a message, not an
    // empty list.
    let parsed = (|| -> crate::error::Result<_> {
        let event_type = nonempty(&q.event_type).map(input::event_type).transpose()?;
        let since = nonempty(&q.since)
            .map(|t| super::page::time_or_age("since", t, now))
            .transpose()?;
        let until = nonempty(&q.until)
            .map(|t| super::page::time_or_age("until", t, now))
            .transpose()?;
        let before = nonempty(&q.before)
            .map(|b| {
                b.parse::<i64>().map_err(|_| {
                    crate::error::Error::InvalidRequest("before must be an event id".into())
                })
            })
            .transpose()?;
        Ok((event_type, since, until, before))
    })();
    // A pasted access key is looked up by its prefix (never compared or
    // shown whole).
    let key =
        nonempty(&q.key).map(|k| super::page::key_as_prefix(k).unwrap_or_else(|| k.to_owned()));
    let result = match parsed {
        Err(e) => Err(e),
        Ok((event_type, since, until, before)) => {
            let store = state.store()?;
            let key2 = key.clone();
            blocking(move || {
                let key_id = match key2 {
                    Some(k) => Some(store.get_key(&k, now)?.key_id),
                    None => None,
                };
                let mut filter = EventFilter {
                    key_id,
                    event_type,
                    since,
                    before_id: before,
                    limit: 200,
                };
                let mut out: Vec<Event> = Vec::new();
                // Where the next page starts, if there may be one: after
                // the last event shown, or (when `until` skipped a long
                // stretch) after the last event looked at.
                let mut next: Option<i64> = None;
                for scan in 0..MAX_SCANS {
                    let batch = store.events(&filter)?;
                    let full = batch.len() == filter.limit as usize;
                    let last = batch.last().map(|e| e.id);
                    out.extend(
                        batch
                            .into_iter()
                            .filter(|e| until.is_none_or(|u| e.at <= u)),
                    );
                    if out.len() > PER_PAGE {
                        out.truncate(PER_PAGE);
                        next = out.last().map(|e| e.id);
                        break;
                    }
                    match (full, last) {
                        (true, Some(id)) => filter.before_id = Some(id),
                        _ => break,
                    }
                    if out.len() == PER_PAGE || scan + 1 == MAX_SCANS {
                        next = filter.before_id;
                        break;
                    }
                }
                Ok((out, next))
            })
            .await
        }
    };
    let (events, next, error) = match result {
        Ok((e, n)) => (e, n, None),
        Err(e) if crate::http::error::status_and_code(&e).0.is_client_error() => {
            (vec![], None, Some(super::page::sentence(&e.to_string())))
        }
        Err(e) => return Err(e.into()),
    };
    // What was typed comes back in the form and the next-page link, but a
    // pasted secret only as its prefix.
    let val = |v: &Option<String>| super::page::typed(v.as_deref().unwrap_or_default());
    let selected_type = val(&q.event_type);
    let next = next.map(|before| {
        format!(
            "/admin/events?key={}&type={}&since={}&until={}&before={}",
            enc(&val(&q.key)),
            enc(&selected_type),
            enc(&val(&q.since)),
            enc(&val(&q.until)),
            before
        )
    });
    let body = html! {
        h1 { "Events" }
        form method="get" action="/admin/events" class="card filters" id="event-filters" {
            div class="field" {
                label for="key" { "Key (prefix or key id)" }
                input type="text" id="key" name="key" value=(val(&q.key));
            }
            div class="field" {
                label for="type" { "Type" }
                select id="type" name="type" {
                    option value="" selected[selected_type.is_empty()] { "any" }
                    @for t in EventType::ALL {
                        option value=(t.as_str()) selected[selected_type == t.as_str()] { (t.as_str()) }
                    }
                }
            }
            div class="field" {
                label for="since" { "Since" }
                input type="text" id="since" name="since" value=(val(&q.since)) placeholder="24h, 2026-11-30" aria-describedby="time-hint";
            }
            div class="field" {
                label for="until" { "Until" }
                input type="text" id="until" name="until" value=(val(&q.until)) placeholder="1h, 2026-11-30" aria-describedby="time-hint";
            }
            div class="actions" {
                button type="submit" id="apply-filters" { "Show events" }
                a href="/admin/events" id="clear-filters" { "Clear" }
            }
            small id="time-hint" class="muted hint" { "Since and until: an age (30m, 24h, 7d) or a UTC time (2026-11-30, 2026-11-30T08:00Z)." }
        }
        @if let Some(e) = &error {
            p class="flash error" role="alert" id="error" { (e) }
        } @else if events.is_empty() {
            p id="no-events" {
                @if next.is_some() { "No events match among the most recent ones looked at; older ones may." }
                @else { "No events match." }
            }
        } @else {
            div class="scroll" {
                table id="events" class="stack" {
                    caption class="visually-hidden" { "Audit log, newest first" }
                    thead { tr {
                        th scope="col" { "Time" } th scope="col" { "Type" } th scope="col" { "Key" }
                        th scope="col" { "Device" } th scope="col" { "Session" } th scope="col" { "By" }
                        th scope="col" { "Detail" }
                    } }
                    tbody {
                        @for e in &events {
                            tr data-event-id=(e.id) {
                                td data-label="Time" { (when(e.at)) }
                                td data-label="Type" { code { (e.event_type.as_str()) } }
                                td data-label="Key" { @match (&e.key_id, &e.key_prefix) {
                                    (Some(id), Some(p)) => a href={ "/admin/keys/" (id) } { code { (p) } },
                                    (Some(id), None) => code { (id) },
                                    _ => span class="muted" { "–" },
                                } }
                                td data-label="Device" { (text_opt(e.device_name.as_deref())) }
                                td data-label="Session" { @if let Some(s) = &e.session_id { code class="small id" { (s) } } @else { span class="muted" { "–" } } }
                                td data-label="By" { (text_opt(e.client_addr.as_deref())) }
                                td data-label="Detail" class="detail" { @if let Some(d) = &e.detail { (super::detail::cell(d)) } }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(href) = next {
            nav class="pager" aria-label="Pages" {
                a href=(href) rel="next" id="older" { "Older events →" }
            }
        }
    };
    let status = if error.is_some() {
        axum::http::StatusCode::BAD_REQUEST
    } else {
        axum::http::StatusCode::OK
    };
    Ok((
        status,
        Page::new("Events").nav("events", &me.csrf).render(body),
    )
        .into_response())
}
