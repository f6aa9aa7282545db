//! The one error type of the crate. Every failure a client or operator can
//! meet is a variant here; `http::error` maps each to the contract's status
//! and code in one place, and the CLI prints its `Display` on one line.
//!
//! Internal failures (SQLite, the pool, migrations) keep their detail for
//! the log; clients only ever see a generic sentence.

use crate::clock::Timestamp;
use crate::model::EndReason;

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed request: bad JSON, wrong type, missing or oversize field.
    #[error("{0}")]
    InvalidRequest(String),
    /// The access key is malformed or unknown.
    #[error("the access key is not valid")]
    InvalidKey,
    /// The key was revoked.
    #[error("this access key has been revoked")]
    KeyRevoked,
    /// The key is suspended.
    #[error("this access key is suspended")]
    KeySuspended,
    /// The key's `expires_at` has passed.
    #[error("this access key has expired")]
    KeyExpired,
    /// The client-supplied session id was used before.
    #[error("session_id {0} has already been used; generate a new one")]
    SessionIdTaken(String),
    /// Policy `reject` and every seat is live.
    #[error("all {max_sessions} seat(s) of this access key are in use")]
    SeatsFull {
        /// The key's seat limit.
        max_sessions: u32,
    },
    /// Borrowing is off for this key (`max_borrow_hours` 0).
    #[error("this access key does not allow borrowing a seat for offline use")]
    BorrowNotAllowed,
    /// Another device took this session's seat.
    #[error("this session was ended because another device started with the same access key")]
    SessionSuperseded {
        /// The device that took the seat.
        device_name: Option<String>,
        /// When that device started.
        started_at: Timestamp,
    },
    /// The session is over for another reason.
    #[error("{}", session_over_message(*.0))]
    SessionOver(EndReason),
    /// The key never had a session with this id.
    #[error("no session with this id exists for this access key")]
    SessionNotFound,
    /// Admin: no key with this id or prefix.
    #[error("no key matches {0}")]
    KeyNotFound(String),
    /// Admin: no session with this id.
    #[error("no session with id {0}")]
    AdminSessionNotFound(String),
    /// Admin: the change is not allowed in the key's state.
    #[error("{0}")]
    Conflict(String),
    /// Admin: missing or wrong bearer token.
    #[error("a valid admin token is required (Authorization: Bearer <token>)")]
    Unauthorized,
    /// Too many failures from this client.
    #[error("too many requests; retry in {retry_after_secs} s")]
    RateLimited {
        /// Seconds until the client may try again.
        retry_after_secs: u64,
    },
    /// No such route (or the admin API is off).
    #[error("no route for {0}")]
    NotFound(String),
    /// Route exists, method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Body over the limit.
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The client took too long to send its request.
    #[error("the request was not received within {0} s")]
    RequestTimeout(u64),
    /// Too much work in flight: shed at once so clients retry instead of
    /// waiting until they time out.
    #[error("{0}")]
    Overloaded(String),
    /// Body is not declared as JSON.
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    /// The server cannot serve right now (starting, database busy or
    /// unwritable); retrying later may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// Configuration problem (exit code 2 on the CLI).
    #[error("{0}")]
    Config(String),
    /// The database file is missing, foreign or not migrated.
    #[error("{0}")]
    Database(String),
    /// SQLite failed.
    #[error("database error: {}", sqlite_message(.0))]
    Sqlite(#[from] rusqlite::Error),
    /// The connection pool failed.
    #[error("database pool error: {0}")]
    Pool(#[from] r2d2::Error),
    /// PostgreSQL failed (see [`Error::is_transient`] for which failures
    /// are an outage rather than a fault).
    #[error("database error: {}", postgres_message(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// Something that should not happen (a panicked worker, a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

/// SQLite's own sentence, plus what an operator should look at for the
/// conditions that are about the disk rather than keyseat ("disk I/O
/// error" alone does not say that the disk is full).
pub(crate) fn sqlite_message(e: &rusqlite::Error) -> String {
    use rusqlite::ErrorCode::*;
    let hint = match e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            DatabaseBusy | DatabaseLocked => {
                " (another process holds a lock on the database file; retry when it is done)"
            }
            ReadOnly => " (the database file, its directory or its file system is read-only)",
            DiskFull => " (the disk is full)",
            SystemIoFailure => " (the disk may be full, read-only or failing)",
            CannotOpen => {
                " (check the path, and that its directory is writable and not on a read-only file system)"
            }
            _ => "",
        },
        _ => "",
    };
    format!("{e}{hint}")
}

/// PostgreSQL's message, with the server's detail when it gave one (the
/// driver's own `Display` says only "db error").
pub(crate) fn postgres_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                text.push_str(": ");
                text.push_str(&c.to_string());
                cause = c.source();
            }
            text
        }
    }
}

/// Whether a PostgreSQL failure is the database being away, restarting,
/// overloaded or contended (503: retry), rather than a fault (500): a lost
/// or refused connection, a shutdown, too many connections, a lock or
/// statement timeout, a connection the database ended for idling in a
/// transaction (the transaction is rolled back), or a serialization
/// failure that outlived the retries.
pub(crate) fn postgres_is_outage(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    match e.code() {
        None => true,
        Some(code) => {
            let class = &code.code()[..2];
            matches!(class, "08" | "57" | "53" | "40" | "58")
                || *code == SqlState::LOCK_NOT_AVAILABLE
                || *code == SqlState::READ_ONLY_SQL_TRANSACTION
                || *code == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT
        }
    }
}

fn session_over_message(reason: EndReason) -> &'static str {
    match reason {
        EndReason::Ended => "this session has already been ended",
        EndReason::Expired => "this session expired after missing its heartbeats",
        EndReason::Revoked => "this session was ended by an administrator",
        EndReason::Superseded => "this session was superseded by another device",
    }
}

impl Error {
    /// SQLite answered "busy", "locked", "read-only" or "full": conditions
    /// that pass or that an operator fixes, so clients are told to retry
    /// (503) rather than that the server is broken (500).
    pub fn is_transient(&self) -> bool {
        use rusqlite::ErrorCode::*;
        match self {
            Error::Unavailable(_) => true,
            Error::Pool(_) => true,
            Error::Postgres(e) => postgres_is_outage(e),
            Error::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                DatabaseBusy | DatabaseLocked | ReadOnly | DiskFull | CannotOpen | SystemIoFailure
            ),
            _ => false,
        }
    }
}
