//! The periodic stale-session sweep. Liveness never depends on it (a
//! session is dead at its timeout whether or not the sweep has run); the
//! sweep records the deaths in the audit log, ends sessions of keys whose
//! own expiry passed, prunes history past its retention, and notes that the
//! server is alive so a restart can tell which sessions were live at a
//! crash.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::Clock;
use crate::error::Result;
use crate::model::EndReason;
use crate::seats::record_session_end;
use crate::store::{blocking, Storage, SweepReport};

/// One pass. `mark_alive` is true only for the server's own sweep: the CLI's
/// `keyseat sweep` says nothing about whether the server is up.
pub async fn pass(
    store: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    history_days: u32,
    mark_alive: bool,
) -> Result<SweepReport> {
    let started = std::time::Instant::now();
    let report = blocking(move || store.sweep(clock.now(), history_days, mark_alive)).await?;
    crate::metrics::global().sweep_run(started.elapsed(), report.expired.len());
    log_report(&report);
    Ok(report)
}

/// Logs a pass as lines operators grep for and alert on, so their shape
/// stays fixed (README, "Logs"): `Cleaned up N stale session(s)` and one
/// line per session with its key prefix and session id.
pub fn log_report(report: &SweepReport) {
    for _ in &report.expired {
        crate::metrics::global().session_ended(EndReason::Expired);
    }
    if !report.expired.is_empty() {
        tracing::info!("Cleaned up {} stale session(s)", report.expired.len());
        for s in &report.expired {
            tracing::info!(
                "  - Key: {}..., Session: {}, Device: {}",
                s.key_prefix,
                s.session_id,
                crate::input::printable(s.device_name.as_deref().unwrap_or("-"))
            );
        }
    }
    for s in &report.revoked {
        record_session_end(s, EndReason::Revoked);
    }
    if report.pruned_sessions + report.pruned_events > 0 {
        tracing::info!(
            sessions = report.pruned_sessions,
            events = report.pruned_events,
            "pruned history past its retention"
        );
    }
}

/// Runs a pass every `interval` until `stop` turns true. A failed pass is
/// logged and the next one runs as usual: a locked or full disk must not
/// kill the sweep for good.
pub async fn run(
    store: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    interval: Duration,
    history_days: u32,
    stop: watch::Receiver<bool>,
) {
    every(interval, stop, || {
        let (store, clock) = (store.clone(), clock.clone());
        async move {
            if let Err(e) = pass(store, clock, history_days, true).await {
                tracing::error!(error = %e, "sweep failed; retrying at the next interval");
            }
        }
    })
    .await;
    tracing::debug!("sweep stopped");
}

/// Runs `tick` every `interval` (a late tick is delayed, not doubled) until
/// `stop` turns true: the shape of every background task of the server.
pub async fn every<F, Fut>(interval: Duration, mut stop: watch::Receiver<bool>, mut tick: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // Checked first so a stop is never delayed by a due tick.
            biased;
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
            _ = ticker.tick() => tick().await,
        }
    }
}
