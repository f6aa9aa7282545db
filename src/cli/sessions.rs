//! `keyseat sessions list|kick` and `keyseat events`.

use clap::{Args, Subcommand};
use serde_json::json;

use super::table::{self, opt};
use crate::clock::Timestamp;
use crate::error::Result;
use crate::input;
use crate::model::{Actor, Session};
use crate::store::{EndOutcome, EventFilter, Storage};
use crate::wire::{borrowed_at, AdminSession};

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// Live sessions, most recent heartbeat first.
    List {
        /// Only this key (key id or prefix).
        #[arg(long)]
        key: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// End a live session (reason `revoked`); the device learns it at its
    /// next heartbeat.
    Kick {
        /// The session id.
        session_id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only this key (key id or prefix).
    #[arg(long)]
    key: Option<String>,
    /// Only this event type (e.g. session_superseded).
    #[arg(long = "type", value_name = "TYPE")]
    event_type: Option<String>,
    /// Only since this time: RFC 3339 or an age such as 30m, 12h, 7d.
    #[arg(long, value_name = "TIME|AGE")]
    since: Option<String>,
    /// At most this many events.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Live sessions as an operator reads them: key prefix, session id,
/// device, started, last heartbeat, seconds since, and until when it is
/// borrowed (`-` when it is not; the newest heartbeat first, as the store
/// lists them).
pub fn session_table(sessions: &[Session], now: Timestamp) -> String {
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|s| {
            vec![
                s.key_prefix.clone(),
                s.session_id.clone(),
                opt(s.device_name.as_deref()),
                s.started_at.to_string(),
                s.last_heartbeat.to_string(),
                now.secs_since(s.last_heartbeat).to_string(),
                opt(borrowed_at(s, now)),
            ]
        })
        .collect();
    table::render(
        &[
            "KEY",
            "SESSION ID",
            "DEVICE",
            "STARTED",
            "LAST HEARTBEAT",
            "SECONDS SINCE",
            "BORROWED UNTIL",
        ],
        &rows,
    )
}

pub fn run(cmd: SessionsCommand, store: &dyn Storage, now: Timestamp) -> Result<()> {
    match cmd {
        SessionsCommand::List { key, json } => {
            let sessions = store.live_sessions(key.as_deref(), now)?;
            if json {
                let list: Vec<_> = sessions.iter().map(|s| AdminSession::new(s, now)).collect();
                outln!("{}", json!(list));
            } else if sessions.is_empty() {
                outln!("No live sessions.");
            } else {
                outln!("{}", session_table(&sessions, now));
            }
        }
        SessionsCommand::Kick { session_id, json } => {
            let outcome = store.kick_session(&session_id, now, &Actor::cli())?;
            match (outcome, json) {
                (EndOutcome::Ended(_), true) => {
                    outln!("{}", json!({"session_id": session_id, "ended": true}))
                }
                (EndOutcome::Ended(s), false) => {
                    outln!(
                        "Ended session {session_id} ({}) of key {}",
                        super::table::printable(
                            s.device_name.as_deref().unwrap_or("unnamed device")
                        ),
                        s.key_prefix
                    );
                    // A borrowed seat is free now, but not its device.
                    if let Some(until) = s
                        .borrowed_until
                        .filter(|u| s.ended_at.is_some_and(|e| e < *u))
                    {
                        outln!(
                            "It was borrowed: the device's lease token stays valid offline \
                             until {until} (its exp)"
                        );
                    }
                }
                (EndOutcome::AlreadyEnded(r), true) => outln!(
                    "{}",
                    json!({"session_id": session_id, "ended": false, "reason": r})
                ),
                (EndOutcome::AlreadyEnded(r), false) => {
                    outln!("Session {session_id} had already ended ({})", r.as_str())
                }
            }
        }
    }
    Ok(())
}

pub fn events(args: EventsArgs, store: &dyn Storage, now: Timestamp) -> Result<()> {
    let key_id = match &args.key {
        Some(k) => Some(store.get_key(k, now)?.key_id),
        None => None,
    };
    if !(1..=10_000).contains(&args.limit) {
        return Err(crate::error::Error::InvalidRequest(
            "--limit must be between 1 and 10000".into(),
        ));
    }
    let filter = EventFilter {
        key_id,
        event_type: args
            .event_type
            .as_deref()
            .map(input::event_type)
            .transpose()?,
        since: args
            .since
            .as_deref()
            .map(|t| input::time_or_age("--since", t, now))
            .transpose()?,
        before_id: None,
        limit: args.limit,
    };
    let events = store.events(&filter)?;
    if args.json {
        outln!("{}", json!(events));
        return Ok(());
    }
    if events.is_empty() {
        outln!("No events.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                e.at.to_string(),
                e.event_type.as_str().into(),
                opt(e.key_prefix.as_deref()),
                opt(e.session_id.as_deref()),
                opt(e.device_name.as_deref()),
                opt(e.client_addr.as_deref()),
            ]
        })
        .collect();
    outln!(
        "{}",
        table::render(&["TIME", "TYPE", "KEY", "SESSION", "DEVICE", "FROM"], &rows)
    );
    Ok(())
}
