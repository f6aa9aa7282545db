//! The audit log with filters.

use axum::extract::State;
use axum::response::IntoResponse;
use axum::Extension;
use maud::html;

use super::auth::Signed;
use super::page::{Page, PageResult};
use crate::http::AppState;

/// `GET /admin/events`.
pub async fn list(State(_state): State<AppState>, Extension(me): Extension<Signed>) -> PageResult {
    Ok(Page::new("Events")
        .nav("events", &me.csrf)
        .render(html! { h1 { "Events" } })
        .into_response())
}
