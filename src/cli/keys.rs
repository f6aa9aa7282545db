//! `keyseat keys create|list|show|update|suspend|resume|revoke`.

use clap::{Args, Subcommand};
use serde_json::json;

use super::table::{self, opt};
use crate::clock::Timestamp;
use crate::error::Result;
use crate::input;
use crate::model::{Actor, ConflictPolicy, Key, KeyStatus};
use crate::store::{KeyChange, KeyPatch, NewKey, Storage};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its secret (shown only this once).
    Create(CreateArgs),
    /// List all keys.
    List(JsonFlag),
    /// Show one key and its live sessions.
    Show(KeyArg),
    /// Change a key's label, seats, policy or expiry.
    Update(UpdateArgs),
    /// Refuse a key until resumed; ends its live sessions.
    Suspend(KeyArg),
    /// Make a suspended key usable again.
    Resume(KeyArg),
    /// Refuse a key for good; ends its live sessions.
    Revoke(KeyArg),
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct KeyArg {
    /// Key id (key_…) or display prefix (ks_xxxxxxxx).
    key: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// A note for you: customer, order number…
    #[arg(long)]
    label: Option<String>,
    /// Devices that may use the key at once (1-1000).
    #[arg(long, default_value_t = 1)]
    max_sessions: u32,
    /// What a start does when all seats are live.
    #[arg(long, value_enum, default_value_t = Policy::Takeover)]
    on_conflict: Policy,
    /// When the key stops working (RFC 3339, e.g. 2027-01-31T00:00:00Z).
    #[arg(long, value_name = "TIME")]
    expires_at: Option<String>,
    /// Hours a device may borrow its seat for offline use (0-8760; 0, the
    /// default, is off: a borrowed seat cannot be taken back offline).
    #[arg(long, value_name = "HOURS", default_value_t = 0)]
    max_borrow_hours: u32,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Key id (key_…) or display prefix (ks_xxxxxxxx).
    key: String,
    /// New label ("" clears it).
    #[arg(long)]
    label: Option<String>,
    /// New seat limit (1-1000); live sessions beyond it end.
    #[arg(long)]
    max_sessions: Option<u32>,
    /// New conflict policy.
    #[arg(long, value_enum)]
    on_conflict: Option<Policy>,
    /// New expiry (RFC 3339), or `never`.
    #[arg(long, value_name = "TIME|never")]
    expires_at: Option<String>,
    /// New longest borrow in hours (0-8760; 0 turns borrowing off).
    #[arg(long, value_name = "HOURS")]
    max_borrow_hours: Option<u32>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Policy {
    /// The new device wins; the oldest heartbeat loses its seat.
    Takeover,
    /// The new device is refused (seats_full).
    Reject,
}

impl From<Policy> for ConflictPolicy {
    fn from(p: Policy) -> Self {
        match p {
            Policy::Takeover => ConflictPolicy::Takeover,
            Policy::Reject => ConflictPolicy::Reject,
        }
    }
}

pub fn run(cmd: KeysCommand, store: &dyn Storage, now: Timestamp) -> Result<()> {
    let cli = Actor::cli();
    match cmd {
        KeysCommand::Create(a) => {
            let new = NewKey {
                label: input::label(a.label)?,
                max_sessions: Some(input::max_sessions(a.max_sessions)?),
                max_borrow_hours: Some(input::max_borrow_hours(a.max_borrow_hours)?),
                on_conflict: Some(a.on_conflict.into()),
                expires_at: a
                    .expires_at
                    .as_deref()
                    .map(|t| input::time("--expires-at", t))
                    .transpose()?,
            };
            let created = store.create_key(&new, now, &cli)?;
            let secret = created.access_key.expose_secret();
            if a.json {
                // The admin API's answer to a creation, secret included.
                let answer = crate::wire::CreatedKey {
                    key: created.key.clone(),
                    access_key: secret.to_owned(),
                };
                outln!("{}", json!(answer));
            } else {
                outln!(
                    "Created key {} ({})",
                    created.key.key_id,
                    created.key.prefix
                );
                outln!("{}", describe(&created.key, now));
                outln!();
                outln!("Access key (shown only this once; give it to the customer):");
                outln!("  {secret}");
            }
        }
        KeysCommand::List(a) => {
            let mut keys = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = store.list_keys(1000, after.as_deref(), now)?;
                keys.extend(page.keys);
                match page.next_after {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            if a.json {
                outln!("{}", json!(keys));
            } else if keys.is_empty() {
                outln!("No keys yet. Create one with: keyseat keys create --label \"...\"");
            } else {
                let rows: Vec<Vec<String>> = keys
                    .iter()
                    .map(|k| {
                        vec![
                            k.key_id.clone(),
                            k.prefix.clone(),
                            opt(k.label.as_deref()),
                            format!("{}/{}", k.live_sessions, k.max_sessions),
                            k.on_conflict.as_str().into(),
                            crate::rules::shown_status(k, now).into(),
                            opt(k.expires_at),
                            k.created_at.to_string(),
                        ]
                    })
                    .collect();
                outln!(
                    "{}",
                    table::render(
                        &[
                            "KEY ID",
                            "PREFIX",
                            "LABEL",
                            "LIVE/SEATS",
                            "POLICY",
                            "STATUS",
                            "EXPIRES",
                            "CREATED"
                        ],
                        &rows
                    )
                );
            }
        }
        KeysCommand::Show(a) => {
            let key = store.get_key(&a.key, now)?;
            let sessions = store.live_sessions(Some(&key.key_id), now)?;
            if a.json {
                let mut v = serde_json::to_value(&key).unwrap_or_default();
                v["sessions"] = json!(sessions);
                outln!("{v}");
            } else {
                outln!("{}", describe(&key, now));
                outln!();
                if sessions.is_empty() {
                    outln!("No live sessions.");
                } else {
                    outln!("{}", super::sessions::session_table(&sessions, now));
                }
            }
        }
        KeysCommand::Update(a) => {
            let patch = KeyPatch {
                label: a.label.map(|l| input::label(Some(l))).transpose()?,
                max_sessions: a.max_sessions.map(input::max_sessions).transpose()?,
                max_borrow_hours: a
                    .max_borrow_hours
                    .map(input::max_borrow_hours)
                    .transpose()?,
                on_conflict: a.on_conflict.map(Into::into),
                expires_at: a
                    .expires_at
                    .map(|t| match t.trim() {
                        "never" | "" => Ok(None),
                        t => input::time("--expires-at", t).map(Some),
                    })
                    .transpose()?,
                status: None,
            };
            if patch.is_empty() {
                return Err(crate::error::Error::InvalidRequest(
                    "nothing to change: give --label, --max-sessions, --on-conflict, --expires-at \
                     or --max-borrow-hours"
                        .into(),
                ));
            }
            let change = store.update_key(&a.key, &patch, now, &cli)?;
            print_change("Updated", &change, a.json, now);
        }
        KeysCommand::Suspend(a) => {
            let patch = KeyPatch {
                status: Some(KeyStatus::Suspended),
                ..Default::default()
            };
            let change = store.update_key(&a.key, &patch, now, &cli)?;
            print_change("Suspended", &change, a.json, now);
        }
        KeysCommand::Resume(a) => {
            let patch = KeyPatch {
                status: Some(KeyStatus::Active),
                ..Default::default()
            };
            let change = store.update_key(&a.key, &patch, now, &cli)?;
            print_change("Resumed", &change, a.json, now);
        }
        KeysCommand::Revoke(a) => {
            let change = store.revoke_key(&a.key, now, &cli)?;
            print_change("Revoked", &change, a.json, now);
        }
    }
    Ok(())
}

/// A key's borrowing terms, as `keys show` prints them.
fn borrowing(max_hours: u32) -> String {
    match max_hours {
        0 => "off".into(),
        h => format!("up to {h} h"),
    }
}

fn describe(k: &Key, now: Timestamp) -> String {
    let rows = [
        ("key id", k.key_id.clone()),
        ("prefix", k.prefix.clone()),
        ("label", opt(k.label.as_deref())),
        ("status", crate::rules::shown_status(k, now).into()),
        (
            "seats",
            format!("{} live of {}", k.live_sessions, k.max_sessions),
        ),
        ("on conflict", k.on_conflict.as_str().into()),
        ("borrowing", borrowing(k.max_borrow_hours)),
        ("expires", opt(k.expires_at)),
        ("created", k.created_at.to_string()),
        ("updated", k.updated_at.to_string()),
        ("revoked", opt(k.revoked_at)),
    ];
    rows.iter()
        .map(|(name, value)| format!("{name:<12} {}", table::printable(value)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn print_change(verb: &str, change: &KeyChange, json: bool, now: Timestamp) {
    if json {
        let mut v = serde_json::to_value(&change.key).unwrap_or_default();
        v["ended_sessions"] = json!(change
            .ended
            .iter()
            .map(|s| s.session_id.clone())
            .collect::<Vec<_>>());
        outln!("{v}");
        return;
    }
    outln!("{verb} key {} ({})", change.key.key_id, change.key.prefix);
    outln!("{}", describe(&change.key, now));
    for s in &change.ended {
        outln!(
            "Ended session {} ({})",
            s.session_id,
            super::table::printable(s.device_name.as_deref().unwrap_or("unnamed device"))
        );
    }
}
