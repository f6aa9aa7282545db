//! `GET /health`: is the server up and can it read its database.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::AppState;
use crate::store::blocking;
use crate::wire::{DatabaseHealth, HealthAnswer, HealthStatus};

/// 200 with `"database": "ok"`, or 503 with `"database": "error"` while
/// starting or when the database cannot be read.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    operation_id = "health",
    summary = "Is the server up and can it read its database",
    responses(
        (status = 200, description = "Serving; the database answers.", body = HealthAnswer),
        (status = 503, description = "Starting (`status`: `starting`), or the database cannot be read (`status`: `error`).", body = HealthAnswer),
    )
)]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<HealthAnswer>) {
    let backend = state.backend();
    let Ok(store) = state.store() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(HealthAnswer::new(
                HealthStatus::Starting,
                DatabaseHealth::Error,
                backend,
            )),
        );
    };
    match blocking(move || store.check_health()).await {
        Ok(()) => (
            StatusCode::OK,
            Json(HealthAnswer::new(
                HealthStatus::Ok,
                DatabaseHealth::Ok,
                backend,
            )),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "health check: database unreadable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(HealthAnswer::new(
                    HealthStatus::Error,
                    DatabaseHealth::Error,
                    backend,
                )),
            )
        }
    }
}
