//! keyseat: a self-hosted license seat server.
//!
//! A vendor sells access keys; keyseat makes sure each key is used on at
//! most `max_sessions` devices at a time. An app calls `start`, then a
//! `heartbeat` every interval, then `end`; a device that starts on a full
//! key supersedes the live session with the oldest heartbeat (or is refused,
//! per key), and a session that stops heartbeating is dead at the timeout.
//! The contract is `docs/api.md`.
//!
//! # The map
//!
//! Every import points down this list; nothing below imports what is above.
//!
//! - Front ends: [`cli`] (the `keyseat` command; beside a running server
//!   it works through [`control`], the server's local socket), [`http`]
//!   (the session and admin API, their guards, [`http::listener`]'s
//!   connection limits, the generated [`http::openapi`] document) and
//!   [`dashboard`] (the operators' HTML pages). [`server`] starts and
//!   stops them with the [`sweep`]; [`instance_lock`] keeps it to one
//!   server per database file.
//! - [`state`]: what every request handler reaches (store, clock, rate
//!   limiters, admin token), below both HTTP and the dashboard.
//! - [`seats`]: the one service every front end calls to change seats and
//!   keys; it runs the store on the blocking pool and logs and counts.
//! - [`store`]: the storage boundary ([`store::Storage`]).
//!   [`store::LiveStore`] is the server's: live sessions in
//!   `store::memory`, durable writes through the group-commit
//!   `store::writer`, on the SQLite engine `store::sqlite` (which the
//!   CLI also uses directly when no server runs). [`store::PostgresStore`]
//!   (`store::postgres`) is the engine for several servers on one
//!   PostgreSQL database: no memory layer, every server and the CLI on the
//!   same rows, the database's clock deciding leases.
//! - [`rules`]: every decision (seats, takeover and reject, leases after
//!   restarts and pauses, how sessions end, what a key change may do and
//!   whom it ends), pure functions of (key, sessions, request, now),
//!   tested without SQL. Engines apply them; they never decide.
//! - Shapes and small parts: [`wire`] (one type per request and answer,
//!   shared by the handlers, the [`client`] and the OpenAPI document),
//!   [`model`] (keys, sessions, events), [`keys`] (the access key format
//!   and hash), [`input`] (validation shared by HTTP, dashboard and CLI),
//!   [`config`], [`clock`] (the server's monotonic timeline and its
//!   gaps), [`report`] (the sharing report and activity, pure),
//!   [`ratelimit`], [`proxy`], [`metrics`], [`signing`] (the keys that
//!   sign answers, the signature header and its check on the device),
//!   [`trust`] (the CA certificates TLS connections trust),
//!   [`error`] (one error enum;
//!   [`http::error`] maps it to statuses in one place).
//!
//! # A start and a heartbeat
//!
//! A start: [`http`]'s `POST /api/session/start` checks the key's format
//! and the rate limits, then calls [`seats::Seats::start`], which runs
//! [`store::LiveStore`]'s `start_session` on the blocking pool. The
//! writer thread commits it in a batch with other writes: inside one
//! transaction `store::sqlite` loads the key and its open sessions,
//! asks [`rules::plan_start`] what to do, records the session, the
//! superseded ones and the audit events, and hands the change to memory
//! after the commit. [`seats`] logs and counts it; the handler answers
//! with a [`wire::StartAnswer`].
//!
//! A heartbeat: the handler asks [`store::Storage::heartbeat_fast`], which
//! answers from memory without touching the database or the blocking
//! pool (the times reach the disk in batches later). Only a key not yet in
//! memory or a session that is not live goes to the database, to find the
//! precise answer (`session_superseded` naming the device, `expired`...).

pub mod cli;
#[cfg(feature = "client")]
pub mod client;
pub mod clock;
pub mod config;
#[cfg(unix)]
pub mod control;
pub mod dashboard;
pub mod error;
pub mod held;
pub mod http;
pub mod input;
pub mod instance_lock;
pub mod keys;
pub mod lease_token;
pub mod metrics;
pub mod model;
pub mod proxy;
pub mod ratelimit;
pub mod report;
pub mod rules;
pub mod seats;
pub mod server;
pub mod signing;
pub mod state;
pub mod store;
pub mod sweep;
pub mod trust;
pub mod wire;
