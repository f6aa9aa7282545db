//! Byte-level property tests ("fuzzing") of every parser and validator that
//! sees untrusted input: the access key format, the key-id/prefix lookup,
//! `session_id`, device and label texts, seat limits, RFC 3339 times and
//! ages, event types, and the JSON body and query-string extractors of
//! every route (driven through the real router in-process, so the real
//! request types and validators are exercised, not copies).
//!
//! Each target feeds arbitrary bytes, arbitrary UTF-8 and structure-aware
//! input (JSON objects with the right field names but random types, values
//! and lengths; near-limit strings; unicode; control characters; huge
//! numbers; deep nesting) and checks, besides "never panics":
//!
//! - a rejection is the contract's error (400 `invalid_request` for bad
//!   input, with a message naming the field; other documented codes only
//!   where the contract lists them);
//! - an accepted input obeys the documented limits and round-trips.
//!
//! Case counts: `PROPTEST_CASES` (default per target below). Each target
//! prints its executions (`cargo test --test fuzz_parsers -- --nocapture`).
//! See docs/fuzzing.md.

#[path = "../common/mod.rs"]
mod common;
mod generators;
mod harness;
mod pure;
mod reference;
mod routes;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use keyseat::clock::Timestamp;
use keyseat::error::Error;
use keyseat::http::extract::parse_json;
use keyseat::input;
use keyseat::keys::{self, AccessKey, KeyFormatError};
use keyseat::model::{Actor, EventType};
use keyseat::store::{NewKey, OpenMode, SqliteStore, Storage};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};
use tower::ServiceExt;

use generators::*;
use harness::*;
use reference::*;

// ------------------------------------------------------------ the runner

fn fuzz<S: Strategy>(
    name: &str,
    default_cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    common::fuzz::run("fuzz_parsers", name, default_cases, 2_000, strategy, test);
}
