//! `GET /health`: what service managers and load balancers read.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HealthAnswer {
    /// `ok`; `starting` before the database is open; `error` when it cannot be read.
    #[schema(inline)]
    pub status: HealthStatus,
    /// The server's version.
    #[schema(example = "0.1.0")]
    pub version: String,
    /// Whether the database answers.
    #[schema(inline)]
    pub database: DatabaseHealth,
    /// The storage engine (v1.1): `sqlite` (one server on a file) or
    /// `postgres` (any number of servers on one database).
    #[schema(example = "sqlite")]
    #[serde(default)]
    pub backend: String,
}

impl HealthAnswer {
    /// This server's answer in `status`, its database in `database`,
    /// on the engine `backend`.
    pub fn new(status: HealthStatus, database: DatabaseHealth, backend: &str) -> Self {
        HealthAnswer {
            status,
            version: env!("CARGO_PKG_VERSION").into(),
            database,
            backend: backend.into(),
        }
    }

    /// Serving, with a database that answers.
    pub fn is_ok(&self) -> bool {
        self.status == HealthStatus::Ok && self.database == DatabaseHealth::Ok
    }
}

/// Server state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Serving.
    Ok,
    /// Opening the database.
    Starting,
    /// The database cannot be read.
    Error,
}

/// Database state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DatabaseHealth {
    /// Readable.
    Ok,
    /// Not open yet, or unreadable.
    Error,
}
