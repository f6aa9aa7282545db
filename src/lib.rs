//! keyseat: a self-hosted license seat server.
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod http;
pub mod input;
pub mod keys;
pub mod model;
pub mod ratelimit;
pub mod rules;
pub mod server;
pub mod store;
pub mod sweep;
