//! The sharing report page.

use axum::extract::State;
use axum::response::IntoResponse;
use axum::Extension;
use maud::html;

use super::auth::Signed;
use super::page::{Page, PageResult};
use crate::http::AppState;

/// `GET /admin/sharing`.
pub async fn page(State(_state): State<AppState>, Extension(me): Extension<Signed>) -> PageResult {
    Ok(Page::new("Sharing report")
        .nav("sharing", &me.csrf)
        .render(html! { h1 { "Sharing report" } })
        .into_response())
}
