//! What the fuzz targets share (`tests/fuzz_http.rs`,
//! `tests/fuzz_parsers/`): a proptest runner that takes its case count
//! from `PROPTEST_CASES` and says how many inputs it ran, and the real
//! router over a real store, in-process, with no listener in the way.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use keyseat::clock::{Clock, ManualClock};
use keyseat::config::{Secret, Settings};
use keyseat::http::{app, AppState};
use keyseat::store::{Durability, LiveStore};
use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// The admin token of [`ready_router`].
pub const TOKEN: &str = "fuzz-admin-token-0123456789";

/// `PROPTEST_CASES` if set, else the target's default.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Runs `test` over `strategy`, printing (as `suite name: N executions`)
/// how many inputs it executed, shrinking included, and how long it took.
pub fn run<S: Strategy>(
    suite: &str,
    name: &str,
    default_cases: u32,
    max_shrink_iters: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let cases = cases(default_cases);
    let config = Config {
        cases,
        // Inputs no client could send (an invalid header value, say) are
        // skipped; allow as many skips as cases.
        max_global_rejects: cases.max(1024),
        failure_persistence: None,
        max_shrink_iters,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let executions = AtomicU64::new(0);
    let started = Instant::now();
    let result = runner.run(&strategy, |value| {
        executions.fetch_add(1, Ordering::Relaxed);
        test(value)
    });
    println!(
        "{suite} {name}: {} executions in {:.2?}",
        executions.load(Ordering::Relaxed),
        started.elapsed()
    );
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}

/// The whole application over a live store on the file `db`, ready, with
/// [`TOKEN`] as its admin token and rate limits off, and a single-threaded
/// runtime to drive it with.
pub fn ready_router(db: &Path) -> (tokio::runtime::Runtime, Router) {
    let settings = Settings {
        database: db.into(),
        admin_token: Some(Secret::new(TOKEN)),
        rate_limits: false,
        // No fsync per commit: thousands of writes, and nothing here is
        // about durability.
        durability: Durability::Normal,
        ..Settings::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::starting_now());
    let state = AppState::new(&settings, clock.clone());
    let opts = settings.live_options();
    let (store, _) = LiveStore::open(db, opts, clock.clone(), clock.now()).expect("open store");
    state.set_ready(Arc::new(store));
    (rt, app(state))
}
