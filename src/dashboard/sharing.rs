//! The sharing report page: keys ranked by takeovers per day, distinct
//! devices and ping-pong pairs (the analysis is [`crate::report`]).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Extension;
use maud::html;
use serde::Deserialize;

use super::auth::Signed;
use super::page::{text_opt, when, Page, PageResult};
use crate::input;
use crate::state::AppState;
use crate::store::blocking;

/// Keys shown at most.
const TOP: usize = 200;

#[derive(Debug, Deserialize)]
pub struct SharingQuery {
    since: Option<String>,
    within: Option<String>,
}

/// `GET /admin/sharing[?since=7d&within=10m]`.
pub async fn page(
    State(state): State<AppState>,
    Extension(me): Extension<Signed>,
    q: std::result::Result<Query<SharingQuery>, QueryRejection>,
) -> PageResult {
    let q = super::page::query(q)?;
    let since_text = q
        .since
        .clone()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "7d".into());
    let within_text = q
        .within
        .clone()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "10m".into());
    let parsed = input::duration("since", &since_text)
        .and_then(|s| input::duration("within", &within_text).map(|w| (s, w)));
    let (result, error) = match parsed {
        Ok((since, within)) => {
            let store = state.store()?;
            let now = state.now();
            let r = blocking(move || store.sharing_report(now, since, within)).await?;
            (Some(r), None)
        }
        Err(e) => (None, Some(super::page::sentence(&e.to_string()))),
    };
    // Shown again in the form and the command-line hint: a pasted secret
    // only as its prefix.
    let (since_text, within_text) = (
        super::page::typed(&since_text),
        super::page::typed(&within_text),
    );
    let body = html! {
        h1 { "Sharing report" }
        p class="muted" {
            "Keys whose seat changes hands between devices, most takeovers first. "
            "A " strong { "ping-pong" } " is a device taking the seat straight back from the device that took it, within the set time: "
            "two people sharing one key usually look like this. Devices are told apart by fingerprint, else by name."
        }
        form method="get" action="/admin/sharing" class="card filters" id="sharing-form" {
            div class="field" {
                label for="since" { "Look back" }
                input type="text" id="since" name="since" value=(since_text) placeholder="7d" aria-describedby="since-hint";
                small id="since-hint" { "e.g. 24h, 7d, 30d" }
            }
            div class="field" {
                label for="within" { "Ping-pong within" }
                input type="text" id="within" name="within" value=(within_text) placeholder="10m";
            }
            button type="submit" id="show-report" { "Show report" }
        }
        @if let Some(e) = &error {
            p class="flash error" role="alert" id="error" { (e) }
        }
        @if let Some(r) = &result {
            p class="muted" id="window" { "From " (when(r.since)) " to " (when(r.until)) " (" (r.days) " day(s))." }
            @if r.keys.is_empty() {
                p id="no-sharing" { "No key had a takeover or more devices than seats in this window." }
            } @else {
                div class="scroll" {
                    table id="sharing" class="stack" {
                        caption class="visually-hidden" { "Keys ranked by takeovers" }
                        thead { tr {
                            th scope="col" { "Key" } th scope="col" { "Label" } th scope="col" class="num" { "Seats" }
                            th scope="col" class="num" { "Takeovers" } th scope="col" class="num" { "Per day" }
                            th scope="col" class="num" { "Devices" } th scope="col" class="num" { "Fingerprints" }
                            th scope="col" class="num" { "Ping-pong" } th scope="col" { "Pairs" }
                        } }
                        tbody {
                            @for k in r.keys.iter().take(TOP) {
                                tr data-key-id=(k.key_id) {
                                    td data-label="Key" { a href={ "/admin/keys/" (k.key_id) } { code { (k.prefix) } } }
                                    td data-label="Label" { (text_opt(k.label.as_deref())) }
                                    td data-label="Seats" class="num" { (k.max_sessions) }
                                    td data-label="Takeovers" class="num takeovers" { (k.takeovers) }
                                    td data-label="Per day" class="num per-day" { (format!("{:.2}", k.takeovers_per_day)) }
                                    td data-label="Devices" class="num devices" { (k.distinct_devices) }
                                    td data-label="Fingerprints" class="num fingerprints" { (k.distinct_fingerprints) }
                                    td data-label="Ping-pong" class="num ping-pongs" { (k.ping_pongs) }
                                    td data-label="Pairs" { @for p in &k.pairs { div { (p.a) " ⇄ " (p.b) ": " (p.count) } } }
                                }
                            }
                        }
                    }
                }
                p { "The same report on the command line: " code { "keyseat report sharing --since " (since_text) " --within " (within_text) } }
            }
        }
    };
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Page::new("Sharing report")
            .nav("sharing", &me.csrf)
            .render(body),
    )
        .into_response())
}
