//! Keys: search and list, create (the secret shown once), edit, suspend,
//! resume, revoke (after a confirmation page). The form itself (fields and
//! parsing) is [`super::key_form`].

use axum::extract::rejection::FormRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Form};
use maud::{html, Markup};
use serde::Deserialize;

use std::sync::Arc;

use super::auth::{Sessions, Signed};
use super::key_form::{key_fields, new_key, patch_from, KeyForm};
use super::page::{
    csrf_field, enc, flash, form, see_other, text_opt, when, when_opt, Page, PageResult,
};
use crate::clock::Timestamp;
use crate::error::Result;
use crate::http::extract::ClientAddr;
use crate::model::{Actor, Key, KeyStatus};
use crate::seats::Via;
use crate::state::AppState;
use crate::store::{blocking, KeyChange, KeyPatch};

/// Keys per page of the list.
const PER_PAGE: usize = 50;

fn status_badge(k: &Key, now: Timestamp) -> Markup {
    let s = crate::rules::shown_status(k, now);
    html! { span class={ "badge " (s) } { (s) } }
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    q: Option<String>,
    page: Option<usize>,
    done: Option<String>,
}

/// `GET /admin/keys`: all keys or those matching `q` (label text, prefix
/// or key id), 50 a page. The search form itself posts to
/// [`super::search`], which keeps a pasted access key out of the address;
/// this GET is what its ordinary searches (and bookmarks) land on.
pub async fn list(
    State(state): State<AppState>,
    Extension(me): Extension<Signed>,
    q: std::result::Result<Query<ListQuery>, QueryRejection>,
) -> PageResult {
    let q = super::page::query(q)?;
    // Someone may type a whole access key into the address bar, or one
    // with a wrong character: search by its prefix. Any other key-like run
    // is cut to its prefix too, so the secret is never shown back, neither
    // in the box nor in the page links.
    let search = q.q.as_deref().map(super::page::typed).unwrap_or_default();
    let listing = Listing {
        search,
        page: q.page.unwrap_or(1),
        done: q.done,
        error: None,
    };
    list_page(&state, &me, listing).await
}

/// What a keys page shows: a search (already cut to what may be shown),
/// a page number, and a note or a problem at the top.
pub struct Listing {
    /// The search text, never holding more of an access key than its
    /// prefix: it goes into the box and into every page link.
    pub search: String,
    /// The page asked for (1-based; past the end shows the last page).
    pub page: usize,
    /// A confirmation for `#flash`.
    pub done: Option<String>,
    /// A readable sentence for `#error`.
    pub error: Option<String>,
}

/// The keys page for `listing`: the search form, the matching keys, pager.
pub async fn list_page(state: &AppState, me: &Signed, listing: Listing) -> PageResult {
    let store = state.store()?;
    let now = state.now();
    let search = listing.search;
    let s2 = search.clone();
    let asked = listing.page.max(1);
    let (found, page_no) = blocking(move || {
        let offset = |page: usize| ((page - 1) * PER_PAGE) as u64;
        let found = store.search_keys(&s2, PER_PAGE as u32, offset(asked), now)?;
        // A page past the end (an old link) shows the last page instead.
        let last = (found.matched as usize).div_ceil(PER_PAGE).max(1);
        if asked > last {
            let found = store.search_keys(&s2, PER_PAGE as u32, offset(last), now)?;
            return Ok((found, last));
        }
        Ok((found, asked))
    })
    .await?;
    let pages = (found.matched as usize).div_ceil(PER_PAGE).max(1);
    let (matched, total) = (found.matched, found.total);
    let shown = found.keys.iter();
    let link = |p: usize| format!("/admin/keys?q={}&page={p}", enc(&search));
    let body = html! {
        div class="heading" {
            h1 { "Keys" }
            a class="button" href="/admin/keys/new" id="new-key" { "Create key" }
        }
        (flash(listing.done.as_deref()))
        @if let Some(e) = &listing.error { p class="flash error" role="alert" id="error" { (e) } }
        // A POST, so that a pasted access key never lands in the address
        // bar, the history or a proxy's log; the answer is a redirect to
        // the key's page or to the GET search below.
        form method="post" action="/admin/keys/search" class="search" role="search" id="search-form" {
            (csrf_field(&me.csrf))
            label for="q" { "Search by label, prefix, key id or the whole access key" }
            div class="row" {
                input type="search" id="q" name="q" value=(search) placeholder="Acme, ks_3f9a…" autocomplete="off";
                button type="submit" id="search" { "Search" }
            }
        }
        p class="muted" id="key-count" {
            (matched) " of " (total) " key(s)"
            @if pages > 1 { ", page " (page_no) " of " (pages) }
        }
        @if found.keys.is_empty() {
            p id="no-keys" {
                @if search.trim().is_empty() { "No keys yet. " a href="/admin/keys/new" { "Create the first one." } }
                @else { "No key matches this search." }
            }
        } @else {
            div class="scroll" {
                table id="keys" class="stack" {
                    caption class="visually-hidden" { "Access keys" }
                    thead { tr {
                        th scope="col" { "Prefix" } th scope="col" { "Label" }
                        th scope="col" { "Status" } th scope="col" { "Live / seats" }
                        th scope="col" { "Policy" } th scope="col" { "Expires" }
                        th scope="col" { "Created" }
                    } }
                    tbody {
                        @for k in shown {
                            tr data-key-id=(k.key_id) {
                                td data-label="Prefix" { a href={ "/admin/keys/" (k.key_id) } { code { (k.prefix) } } }
                                td data-label="Label" { (text_opt(k.label.as_deref())) }
                                td data-label="Status" { (status_badge(k, now)) }
                                td data-label="Live / seats" class="num" { (k.live_sessions) " / " (k.max_sessions) }
                                td data-label="Policy" { (k.on_conflict.as_str()) }
                                td data-label="Expires" { (when_opt(k.expires_at, "never")) }
                                td data-label="Created" { (when(k.created_at)) }
                            }
                        }
                    }
                }
            }
            @if pages > 1 {
                nav class="pager" aria-label="Pages" {
                    @if page_no > 1 { a href=(link(page_no - 1)) rel="prev" id="prev-page" { "← Previous" } }
                    @if page_no < pages { a href=(link(page_no + 1)) rel="next" id="next-page" { "Next →" } }
                }
            }
        }
    };
    Ok(Page::new("Keys")
        .nav("keys", &me.csrf)
        .render(body)
        .into_response())
}

fn create_page(me: &Signed, f: &KeyForm, error: Option<&str>) -> Markup {
    Page::new("Create key").nav("keys", &me.csrf).render(html! {
        h1 { "Create key" }
        @if let Some(e) = error { p class="flash error" role="alert" id="error" { (e) } }
        form method="post" action="/admin/keys" id="create-key-form" class="card" {
            (csrf_field(&me.csrf))
            input type="hidden" name="form_id" value=(f.form_id);
            (key_fields(f))
            div class="actions" {
                button type="submit" id="create-key" { "Create key" }
                a href="/admin/keys" { "Cancel" }
            }
        }
    })
}

/// `GET /admin/keys/new`.
pub async fn new_form(Extension(me): Extension<Signed>) -> PageResult {
    let f = KeyForm::blank();
    Ok(create_page(&me, &f, None).into_response())
}

/// `POST /admin/keys`: creates the key and shows its secret, this once.
pub async fn create(
    State(state): State<AppState>,
    Extension(me): Extension<Signed>,
    Extension(sessions): Extension<Arc<Sessions>>,
    addr: ClientAddr,
    f: std::result::Result<Form<KeyForm>, FormRejection>,
) -> PageResult {
    let f = form(f)?;
    let once = (!f.form_id.is_empty()).then(|| f.form_id.chars().take(128).collect::<String>());
    if let Some(id) = &once {
        if let Err(created) = sessions.forms.claim(id) {
            // A resubmission (a reload of "Key created"): to the key's page,
            // saying why; never a second key, never the secret again.
            let to = match created {
                Some(key_id) => format!(
                    "/admin/keys/{key_id}?done={}",
                    enc(
                        "This form was already sent: the key was created then, and its \
                         secret was shown only once. If it was not copied, revoke the key \
                         and create another."
                    )
                ),
                None => format!(
                    "/admin/keys?done={}",
                    enc("This form was already sent and is still being processed.")
                ),
            };
            return Ok(see_other(&to));
        }
    }
    let release = |sessions: &Sessions| {
        if let Some(id) = &once {
            sessions.forms.release(id);
        }
    };
    let new = match new_key(&f) {
        Ok(n) => n,
        Err(e) => {
            release(&sessions);
            let msg = super::page::sentence(&e.to_string());
            return Ok((StatusCode::BAD_REQUEST, create_page(&me, &f, Some(&msg))).into_response());
        }
    };
    let actor = Actor(addr.label());
    let result = match state.seats() {
        Ok(seats) => seats.create_key(new, actor, Via::Dashboard).await,
        Err(e) => Err(e),
    };
    let created = match result {
        Ok(c) => c,
        Err(e) => {
            release(&sessions);
            return Err(e.into());
        }
    };
    if let Some(id) = &once {
        sessions.forms.finish(id, &created.key.key_id);
    }
    let k = &created.key;
    let body = Page::new("Key created").nav("keys", &me.csrf).render(html! {
        h1 { "Key created" }
        p class="flash ok" role="status" id="flash" { "Key " code { (k.prefix) } " was created." }
        section class="card secret" aria-labelledby="secret-label" {
            h2 id="secret-label" { "Access key" }
            p { strong { "Shown only this once." } " Copy it now and give it to the customer; keyseat keeps only its hash." }
            div class="secret-row" {
                code id="secret" { (created.access_key.expose_secret()) }
                button type="button" id="copy" data-copy="secret" hidden { "Copy" }
            }
            p class="muted" id="copy-status" role="status" aria-live="polite" {}
        }
        (details(k, state.now()))
        p { a href={ "/admin/keys/" (k.key_id) } id="key-page" { "Go to the key's page" } " · " a href="/admin/keys" { "All keys" } }
    });
    Ok((StatusCode::CREATED, body).into_response())
}

fn details(k: &Key, now: Timestamp) -> Markup {
    html! {
        dl class="details" id="key-details" {
            dt { "Key id" } dd { code id="key-id" { (k.key_id) } }
            dt { "Prefix" } dd { code id="key-prefix" { (k.prefix) } }
            dt { "Label" } dd id="key-label" { (text_opt(k.label.as_deref())) }
            dt { "Status" } dd id="key-status" { (status_badge(k, now)) }
            dt { "Seats" } dd id="key-seats" { (k.live_sessions) " live of " (k.max_sessions) }
            dt { "When all seats are taken" } dd id="key-policy" { (k.on_conflict.as_str()) }
            dt { "Offline borrowing" } dd id="key-borrowing" {
                @if k.max_borrow_hours == 0 { "off" } @else { "up to " (k.max_borrow_hours) " h" }
            }
            dt { "Expires" } dd id="key-expires" { (when_opt(k.expires_at, "never")) }
            dt { "Created" } dd { (when(k.created_at)) }
            dt { "Updated" } dd { (when(k.updated_at)) }
            @if let Some(r) = k.revoked_at { dt { "Revoked" } dd { (when(r)) } }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct DoneQuery {
    done: Option<String>,
}

async fn load_key(state: &AppState, key_ref: String) -> Result<Key> {
    let key_ref = crate::input::key_ref_in_url(key_ref)?;
    let store = state.store()?;
    let now = state.now();
    blocking(move || store.get_key(&key_ref, now)).await
}

fn key_page(
    me: &Signed,
    k: &Key,
    sessions: &[crate::model::Session],
    now: Timestamp,
    done: Option<&str>,
    error: Option<(&str, &KeyForm)>,
) -> Markup {
    let current = KeyForm::of(k);
    let (msg, shown) = match error {
        Some((m, f)) => (Some(m), f),
        None => (None, &current),
    };
    let title = format!("Key {}", k.prefix);
    let back = format!("/admin/keys/{}", k.key_id);
    Page::new(&title).nav("keys", &me.csrf).render(html! {
        div class="heading" {
            h1 { "Key " code { (k.prefix) } @if let Some(l) = &k.label { " · " (l) } }
        }
        (flash(done))
        @if let Some(m) = msg { p class="flash error" role="alert" id="error" { (m) } }
        div class="grid" {
            section class="card" aria-labelledby="details-h" {
                h2 id="details-h" { "Details" }
                (details(k, now))
                @if k.status != KeyStatus::Revoked {
                    div class="actions" {
                        @if k.status == KeyStatus::Active {
                            form method="post" action={ "/admin/keys/" (k.key_id) "/suspend" } {
                                (csrf_field(&me.csrf))
                                button type="submit" id="suspend" class="secondary" { "Suspend" }
                            }
                        } @else {
                            form method="post" action={ "/admin/keys/" (k.key_id) "/resume" } {
                                (csrf_field(&me.csrf))
                                button type="submit" id="resume" class="secondary" { "Resume" }
                            }
                        }
                        a class="button danger" href={ "/admin/keys/" (k.key_id) "/revoke" } id="revoke" { "Revoke…" }
                    }
                }
            }
            @if k.status != KeyStatus::Revoked {
                section class="card" aria-labelledby="edit-h" {
                    h2 id="edit-h" { "Edit" }
                    form method="post" action={ "/admin/keys/" (k.key_id) } id="edit-key-form" {
                        (csrf_field(&me.csrf))
                        (key_fields(shown))
                        div class="actions" {
                            button type="submit" id="save" { "Save changes" }
                        }
                    }
                }
            }
        }
        section aria-labelledby="sessions-h" {
            h2 id="sessions-h" { "Live sessions of this key" }
            (super::sessions::table(me, sessions, &Default::default(), now, &back))
        }
        p { a href={ "/admin/events?key=" (k.key_id) } id="key-events" { "This key's events" } }
    })
}

/// `GET /admin/keys/{key_id}`: details, edit form, actions, live sessions.
pub async fn show(
    State(state): State<AppState>,
    Extension(me): Extension<Signed>,
    Path(key_id): Path<String>,
    q: std::result::Result<Query<DoneQuery>, QueryRejection>,
) -> PageResult {
    let q = super::page::query(q)?;
    let k = load_key(&state, key_id).await?;
    let store = state.store()?;
    let now = state.now();
    let id = k.key_id.clone();
    let sessions = blocking(move || store.live_sessions(Some(&id), now)).await?;
    Ok(key_page(&me, &k, &sessions, now, q.done.as_deref(), None).into_response())
}

fn done_url(k: &Key, what: &str) -> String {
    format!("/admin/keys/{}?done={}", k.key_id, enc(what))
}

fn ended_note(change: &KeyChange) -> String {
    match change.ended.len() {
        0 => String::new(),
        1 => " 1 live session was ended.".into(),
        n => format!(" {n} live sessions were ended."),
    }
}

/// `POST /admin/keys/{key_id}`: applies the edit form.
pub async fn update(
    State(state): State<AppState>,
    Extension(me): Extension<Signed>,
    addr: ClientAddr,
    Path(key_id): Path<String>,
    f: std::result::Result<Form<KeyForm>, FormRejection>,
) -> PageResult {
    let f = form(f)?;
    let k = load_key(&state, key_id).await?;
    let patch = match patch_from(&k, &f) {
        Ok(p) => p,
        Err(e) => {
            let store = state.store()?;
            let now = state.now();
            let id = k.key_id.clone();
            let sessions = blocking(move || store.live_sessions(Some(&id), now)).await?;
            let msg = super::page::sentence(&e.to_string());
            let page = key_page(&me, &k, &sessions, now, None, Some((&msg, &f)));
            return Ok((StatusCode::BAD_REQUEST, page).into_response());
        }
    };
    if patch.is_empty() {
        return Ok(see_other(&done_url(&k, "Nothing changed.")));
    }
    let change = apply(&state, &addr, &k.key_id, patch).await?;
    let msg = format!("Changes saved.{}", ended_note(&change));
    Ok(see_other(&done_url(&change.key, &msg)))
}

async fn apply(
    state: &AppState,
    addr: &ClientAddr,
    key_id: &str,
    patch: KeyPatch,
) -> Result<KeyChange> {
    let actor = Actor(addr.label());
    state
        .seats()?
        .update_key(key_id.to_owned(), patch, actor, Via::Dashboard)
        .await
}

async fn set_status(
    state: AppState,
    addr: ClientAddr,
    key_id: String,
    status: KeyStatus,
) -> PageResult {
    let patch = KeyPatch {
        status: Some(status),
        ..Default::default()
    };
    let change = apply(&state, &addr, &key_id, patch).await?;
    let verb = if status == KeyStatus::Suspended {
        "suspended"
    } else {
        "resumed"
    };
    let msg = format!("Key {verb}.{}", ended_note(&change));
    Ok(see_other(&done_url(&change.key, &msg)))
}

/// `POST /admin/keys/{key_id}/suspend`.
pub async fn suspend(
    State(state): State<AppState>,
    addr: ClientAddr,
    Path(key_id): Path<String>,
) -> PageResult {
    set_status(state, addr, key_id, KeyStatus::Suspended).await
}

/// `POST /admin/keys/{key_id}/resume`.
pub async fn resume(
    State(state): State<AppState>,
    addr: ClientAddr,
    Path(key_id): Path<String>,
) -> PageResult {
    set_status(state, addr, key_id, KeyStatus::Active).await
}

/// `GET /admin/keys/{key_id}/revoke`: the confirmation step.
pub async fn revoke_confirm(
    State(state): State<AppState>,
    Extension(me): Extension<Signed>,
    Path(key_id): Path<String>,
) -> PageResult {
    let k = load_key(&state, key_id).await?;
    if k.status == KeyStatus::Revoked {
        return Ok(see_other(&done_url(&k, "This key is already revoked.")));
    }
    let body = Page::new("Revoke key").nav("keys", &me.csrf).render(html! {
        section class="card narrow" {
            h1 { "Revoke key " code { (k.prefix) } "?" }
            p {
                @if let Some(l) = &k.label { "Key “" (l) "” " } @else { "This key " }
                "will be refused for good and its " (k.live_sessions) " live session(s) end now. "
                strong { "Revocation cannot be undone." }
                " To stop the key for a while, suspend it instead."
            }
            form method="post" action={ "/admin/keys/" (k.key_id) "/revoke" } id="revoke-form" {
                (csrf_field(&me.csrf))
                div class="actions" {
                    button type="submit" class="danger" id="confirm-revoke" { "Revoke key" }
                    a href={ "/admin/keys/" (k.key_id) } id="cancel-revoke" { "Cancel" }
                }
            }
        }
    });
    Ok(body.into_response())
}

/// `POST /admin/keys/{key_id}/revoke`: revokes (the form on the
/// confirmation page).
pub async fn revoke(
    State(state): State<AppState>,
    addr: ClientAddr,
    Path(key_id): Path<String>,
) -> PageResult {
    let actor = Actor(addr.label());
    let change = state
        .seats()?
        .revoke_key(key_id, actor, Via::Dashboard)
        .await?;
    let msg = format!("Key revoked.{}", ended_note(&change));
    Ok(see_other(&done_url(&change.key, &msg)))
}
