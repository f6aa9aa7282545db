//! `GET /health`: is the server up and can it read its database.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;
use crate::store::blocking;

/// 200 with `"database": "ok"`, or 503 with `"database": "error"` while
/// starting or when the database cannot be read.
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let version = env!("CARGO_PKG_VERSION");
    let Ok(store) = state.store() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "starting", "version": version, "database": "error"})),
        );
    };
    match blocking(move || store.check_health()).await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"status": "ok", "version": version, "database": "ok"})),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "health check: database unreadable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "error", "version": version, "database": "error"})),
            )
        }
    }
}
