//! The overview: what the service is doing now and over the last day.

use axum::extract::State;
use axum::response::IntoResponse;
use axum::Extension;
use maud::html;

use super::auth::Signed;
use super::page::{Page, PageResult};
use crate::http::AppState;

/// `GET /admin`.
pub async fn page(State(_state): State<AppState>, Extension(me): Extension<Signed>) -> PageResult {
    Ok(Page::new("Overview")
        .nav("overview", &me.csrf)
        .render(html! { h1 { "Overview" } })
        .into_response())
}
