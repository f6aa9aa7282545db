//! `keyseat report sharing [--since 7d] [--within 10m] [--json]`: which
//! keys look shared between devices (see [`crate::report`]).

use clap::{Args, Subcommand};
use serde_json::json;

use super::table;
use crate::clock::Timestamp;
use crate::error::Result;
use crate::store::Storage;

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Keys ranked by takeovers per day, with distinct devices and
    /// ping-pong patterns (two devices taking the seat from each other).
    Sharing(SharingArgs),
}

#[derive(Debug, Args)]
pub struct SharingArgs {
    /// How far back to look: 30m, 24h, 7d, 2w.
    #[arg(long, default_value = "7d", value_name = "DURATION")]
    since: String,
    /// A takeover back within this long counts as ping-pong.
    #[arg(long, default_value = "10m", value_name = "DURATION")]
    within: String,
    /// At most this many keys (0: all).
    #[arg(long, default_value_t = 50)]
    top: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: ReportCommand, store: &dyn Storage, now: Timestamp) -> Result<()> {
    match cmd {
        ReportCommand::Sharing(a) => sharing(a, store, now),
    }
}

fn sharing(a: SharingArgs, store: &dyn Storage, now: Timestamp) -> Result<()> {
    let since = crate::input::duration("--since", &a.since)?;
    let within = crate::input::duration("--within", &a.within)?;
    let mut r = store.sharing_report(now, since, within)?;
    if a.top > 0 {
        r.keys.truncate(a.top);
    }
    if a.json {
        outln!("{}", json!(r));
        return Ok(());
    }
    outln!(
        "Sharing report: {} to {} ({} day(s)); ping-pong = taken back within {} min",
        r.since,
        r.until,
        r.days,
        r.ping_pong_minutes
    );
    if r.keys.is_empty() {
        outln!("No key had a takeover or more devices than seats.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = r
        .keys
        .iter()
        .map(|k| {
            let top_pair = k
                .pairs
                .first()
                .map(|p| format!("{} <-> {} ({})", p.a, p.b, p.count))
                .unwrap_or_else(|| "-".into());
            vec![
                k.prefix.clone(),
                table::opt(k.label.as_deref()),
                k.max_sessions.to_string(),
                k.takeovers.to_string(),
                format!("{:.2}", k.takeovers_per_day),
                k.distinct_devices.to_string(),
                k.distinct_fingerprints.to_string(),
                k.ping_pongs.to_string(),
                top_pair,
            ]
        })
        .collect();
    outln!();
    outln!(
        "{}",
        table::render(
            &[
                "KEY",
                "LABEL",
                "SEATS",
                "TAKEOVERS",
                "PER DAY",
                "DEVICES",
                "FINGERPRINTS",
                "PING-PONG",
                "TOP PAIR"
            ],
            &rows
        )
    );
    Ok(())
}
