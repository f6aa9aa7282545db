//! keyseat: a self-hosted license seat server.
//!
//! A vendor sells access keys; keyseat makes sure each key is used on at
//! most `max_sessions` devices at a time. An app calls `start`, then a
//! `heartbeat` every interval, then `end`; a device that starts on a full
//! key supersedes the live session with the oldest heartbeat (or is refused,
//! per key), and a session that stops heartbeating is dead at the timeout.
//!
//! How a request flows, one way only:
//!
//! - [`http`] parses and validates the request (contract errors in
//!   [`http::error`]), reads the [`clock`], and calls [`store`] on the
//!   blocking pool ([`store::blocking`]);
//! - [`store`] is the storage boundary: [`store::SqliteStore`] loads the
//!   inputs in one transaction, asks [`rules`] what to do, and applies it;
//! - [`rules`] holds the session rules, pure functions of their inputs and
//!   `now`: seats, takeover/reject, leases and expiry, key changes, ends.
//!
//! Around them: [`keys`] (the access key format), [`model`] (domain types),
//! [`config`] (defaults, file, env, flags), [`sweep`] (the periodic
//! stale-session sweep), [`server`] (start/stop, the seam tests use;
//! [`instance_lock`] keeps it to one server per database file),
//! [`cli`] (the `keyseat` command), [`ratelimit`] and [`input`]
//! (validation shared by HTTP and CLI).

pub mod cli;
#[cfg(feature = "client")]
pub mod client;
pub mod clock;
pub mod config;
#[cfg(unix)]
pub mod control;
pub mod dashboard;
pub mod error;
pub mod http;
pub mod input;
pub mod instance_lock;
pub mod keys;
pub mod metrics;
pub mod model;
pub mod proxy;
pub mod ratelimit;
pub mod report;
pub mod rules;
pub mod seats;
pub mod server;
pub mod state;
pub mod store;
pub mod sweep;
pub mod wire;
