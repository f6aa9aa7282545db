//! keyseat's C library: a C ABI over the Rust client ([`keyseat::client`]),
//! for apps in C, C++, C#, Swift and Go. The protocol (checksum check,
//! retried starts, waiting heartbeats, backoff within the lease, signature
//! checks, TLS trust) is the Rust client's; this crate only translates.
//!
//! The parts:
//! - [`status`]: the error codes every function returns, the thread-local
//!   last error, and [`status::guard`], which every entry point runs its
//!   body in so that no panic unwinds into C;
//! - [`strings`]: C strings in (NULL and invalid UTF-8 are error codes) and
//!   out;
//! - [`client`]: the `keyseat_client` handle and its functions;
//! - [`notify`]: the lost callback, with the promise that it is never
//!   called after `keyseat_client_end` or `keyseat_client_free` returns.
//!
//! The header `include/keyseat.h` is generated from these files by
//! cbindgen and checked in; `tests/header.rs` fails when it is stale.
//! docs/clients.md ("C library") shows how to use it.

#![allow(non_camel_case_types)]

pub mod client;
pub mod notify;
pub mod status;
pub mod strings;
