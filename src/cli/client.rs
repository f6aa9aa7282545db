//! `keyseat client`: the reference client, the library in a terminal
//! (`keyseat check`, in [`super::check`], shares its key handling and exit
//! codes).

use std::process::ExitCode;

use super::outln;
use clap::Args;

use crate::client::{Client, ClientError, LostReason, SessionEvent};

/// Exit codes of `keyseat client`, one per way of ending.
pub mod exit {
    /// Ended by the user (Ctrl-C or SIGTERM); the session was ended.
    pub const ENDED_BY_USER: u8 = 0;
    /// Something else went wrong (bad URL, unexpected answer).
    pub const ERROR: u8 = 1;
    /// Bad usage: no access key given.
    pub const USAGE: u8 = 2;
    /// Another device started with the same key and took the seat.
    pub const SUPERSEDED: u8 = 3;
    /// The server expired the session (missed heartbeats).
    pub const EXPIRED: u8 = 4;
    /// An administrator ended the session, or it was ended elsewhere.
    pub const REVOKED: u8 = 5;
    /// The key was refused: typo, unknown, revoked, suspended or expired.
    pub const KEY_REFUSED: u8 = 6;
    /// The server could not be reached before the lease ran out.
    pub const UNREACHABLE: u8 = 7;
    /// All seats are in use and the key's policy is `reject`.
    pub const SEATS_FULL: u8 = 8;
    /// Answers failed the signature check with the pinned public key.
    pub const UNTRUSTED: u8 = 9;
    /// `--borrow`: the key does not allow borrowing, or not that long.
    pub const BORROW_REFUSED: u8 = 10;
    /// The server's TLS certificate was refused (unknown issuer: see
    /// `--ca-file`; another name; expired).
    pub const CERTIFICATE: u8 = 11;
}

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Server URL, e.g. http://127.0.0.1:8080
    #[arg(long)]
    server: String,
    /// The access key (ks_…); `-` reads it from standard input. Without the
    /// flag it comes from KEYSEAT_KEY, which, unlike the flag, other users
    /// cannot see in `ps`.
    #[arg(long)]
    key: Option<String>,
    /// The name other devices are shown when this one takes over.
    #[arg(long)]
    device_name: Option<String>,
    /// A device fingerprint, or `machine` for this machine's (hashed) id.
    #[arg(long)]
    fingerprint: Option<String>,
    /// The server's public signing key (`keyseat signing-key show`):
    /// answers not signed by it for this request are refused.
    // A base64url key may begin with `-`: the value is taken as is.
    #[arg(long, value_name = "BASE64URL", allow_hyphen_values = true)]
    public_key: Option<String>,
    /// A PEM file of CA certificates to trust besides the system store
    /// (a server whose certificate comes from a private CA).
    #[arg(long, value_name = "PEM_FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// Borrow the seat for this many hours (offline use) instead of
    /// heartbeating: prints the lease token (checked with --public-key when
    /// given) and exits 0, leaving the seat borrowed.
    #[arg(long, value_name = "HOURS")]
    borrow: Option<u32>,
}

/// The access key from `--key KEY`, `--key -` (a line of standard input)
/// or the KEYSEAT_KEY environment variable, in that order.
pub(super) fn access_key(flag: Option<&str>) -> Result<String, String> {
    let key = match flag {
        Some("-") => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| format!("cannot read the access key from standard input: {e}"))?;
            line
        }
        Some(key) => key.to_owned(),
        None => std::env::var("KEYSEAT_KEY").map_err(|_| {
            "no access key: give it with --key KEY, --key - (standard input) or the KEYSEAT_KEY \
             environment variable"
                .to_owned()
        })?,
    };
    Ok(key.trim().to_owned())
}

/// A flag's value is unusable: one line naming the flag, exit 2.
pub(super) fn bad_flag(flag: &str, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("keyseat: {flag}: {e}");
    ExitCode::from(exit::USAGE)
}

fn print_line(text: &str) {
    outln!("{text}");
}

/// Runs the reference client until Ctrl-C/SIGTERM or the session is lost.
pub fn run_client(args: ClientArgs) -> ExitCode {
    let device = args
        .device_name
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "keyseat client".into());
    let key = match access_key(args.key.as_deref()) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("keyseat: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let mut client = match Client::new(&args.server, &key) {
        Ok(c) => c.device_name(device.clone()),
        Err(e) => return fail(&e),
    };
    if let Some(path) = &args.ca_file {
        client = match client.ca_file(path) {
            Ok(c) => c,
            Err(e) => return bad_flag("--ca-file", e),
        };
    }
    if let Some(public_key) = &args.public_key {
        client = match client.public_key(public_key) {
            Ok(c) => c,
            Err(e) => return bad_flag("--public-key", e),
        };
    }
    match args.fingerprint.as_deref() {
        Some("machine") => {
            if let Some(fp) = crate::client::machine_fingerprint("keyseat-reference-client") {
                client = client.fingerprint(fp);
            }
        }
        Some(fp) => client = client.fingerprint(fp),
        None => {}
    }
    if let Some(hours) = args.borrow {
        return run_borrow(&client, hours, args.public_key.as_deref());
    }
    let client = client.on_event(|event| match event {
        SessionEvent::HeartbeatFailed {
            attempt,
            error,
            lease_left,
        } => print_line(&format!(
            "heartbeat failed (attempt {attempt}): {error}; session still valid for {} s",
            lease_left.as_secs()
        )),
        SessionEvent::Recovered { failed_attempts } => print_line(&format!(
            "heartbeat recovered after {failed_attempts} failed attempt(s)"
        )),
        SessionEvent::Lost(_) => {}
    });
    // Signals are caught from before the start: one that comes while the
    // session starts ends it, instead of killing the client with the seat
    // taken until its lease runs out.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let (runtime, signals) = match runtime.and_then(|rt| {
        let signals = caught_signals(&rt)?;
        Ok((rt, signals))
    }) {
        Ok(both) => both,
        Err(e) => {
            eprintln!("keyseat: cannot wait for signals: {e}");
            return ExitCode::from(exit::ERROR);
        }
    };
    let session = match client.start() {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let info = session.info().clone();
    print_line(&format!(
        "started session {} (fence {}) as \"{device}\"; heartbeat every {} s, timeout {} s",
        info.session_id,
        info.fence,
        info.heartbeat_interval.as_secs(),
        info.session_timeout.as_secs()
    ));
    for t in &info.terminated {
        print_line(&format!(
            "warning: previous session on another device was disconnected: \"{}\" (session {})",
            t.device_name.as_deref().unwrap_or("unnamed device"),
            t.session_id
        ));
    }

    let (lost_tx, mut lost_rx) = tokio::sync::mpsc::unbounded_channel();
    session.on_lost(move |reason| {
        let _ = lost_tx.send(reason);
    });
    let lost = runtime.block_on(async {
        tokio::select! {
            _ = signals => None,
            reason = lost_rx.recv() => reason,
        }
    });
    match lost {
        None => {
            let _ = session.end();
            print_line("ended by user");
            ExitCode::from(exit::ENDED_BY_USER)
        }
        Some(reason) => {
            print_line(&format!("lost: {reason}"));
            drop(session);
            ExitCode::from(match reason {
                LostReason::Superseded { .. } => exit::SUPERSEDED,
                LostReason::Expired => exit::EXPIRED,
                LostReason::Revoked | LostReason::Ended | LostReason::NotFound => exit::REVOKED,
                LostReason::KeyRefused { .. } => exit::KEY_REFUSED,
                LostReason::Unreachable { .. } => exit::UNREACHABLE,
                LostReason::Untrusted { .. } => exit::UNTRUSTED,
                LostReason::Certificate(_) => exit::CERTIFICATE,
                LostReason::Rejected { .. } => exit::ERROR,
            })
        }
    }
}

/// Ctrl-C and SIGTERM, caught from now on (the handlers are installed
/// here, not when first awaited).
fn caught_signals(
    runtime: &tokio::runtime::Runtime,
) -> std::io::Result<impl std::future::Future<Output = ()>> {
    let _context = runtime.enter();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

/// `keyseat client --borrow HOURS`: one borrow, its token shown (and
/// checked offline against the pinned key), the seat left borrowed.
fn run_borrow(client: &Client, hours: u32, public_key: Option<&str>) -> ExitCode {
    let borrowed = match client.borrow(hours) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("keyseat: cannot borrow a seat: {e}");
            return ExitCode::from(if refuses_borrowing(&e) {
                exit::BORROW_REFUSED
            } else {
                exit_code(&e)
            });
        }
    };
    print_line(&format!(
        "borrowed session {} (fence {}) until {}; the seat is held without heartbeats",
        borrowed.session_id, borrowed.fence, borrowed.borrowed_until
    ));
    if borrowed.previous_session_terminated {
        print_line("warning: a session on another device was disconnected");
    }
    print_line(&format!("lease token: {}", borrowed.lease_token));
    if let Some(key) = public_key {
        match crate::client::verify_lease_token(&borrowed.lease_token, key) {
            Ok(claims) => print_line(&format!(
                "lease token verified offline: session {}, key {}, until {}",
                claims.sub, claims.key_prefix, borrowed.borrowed_until
            )),
            Err(e) => {
                eprintln!("keyseat: the lease token is not trusted: {e}; the seat is given back");
                let _ = borrowed.give_back();
                return ExitCode::from(exit::UNTRUSTED);
            }
        }
    }
    ExitCode::from(exit::ENDED_BY_USER)
}

/// Borrowing off for the key, or more hours than it allows (the server's
/// message names `hours`; another 400, such as a bad device name, is not
/// the key refusing to lend).
fn refuses_borrowing(e: &ClientError) -> bool {
    matches!(e, ClientError::Refused { code, message, .. }
        if code == "borrow_not_allowed" || (code == "invalid_request" && message.starts_with("hours")))
}

fn fail(e: &ClientError) -> ExitCode {
    eprintln!("keyseat: cannot start a session: {e}");
    ExitCode::from(exit_code(e))
}

/// The exit code for a refused or failed start or borrow.
fn exit_code(e: &ClientError) -> u8 {
    match e {
        ClientError::InvalidKeyFormat(_) => exit::KEY_REFUSED,
        ClientError::Refused { code, .. } if code == "seats_full" => exit::SEATS_FULL,
        ClientError::Refused { code, .. } if code == "invalid_key" || code.starts_with("key_") => {
            exit::KEY_REFUSED
        }
        ClientError::Unreachable(_) => exit::UNREACHABLE,
        ClientError::Untrusted(_) => exit::UNTRUSTED,
        ClientError::Certificate(_) => exit::CERTIFICATE,
        _ => exit::ERROR,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    /// One public key in 64 begins with `-` (base64url): it must be taken
    /// as the flag's value, not as an unknown option.
    #[test]
    fn a_public_key_beginning_with_a_dash_is_a_value() {
        let key = format!("-{}", "A".repeat(42));
        for command in ["client", "check"] {
            let cli = Cli::try_parse_from([
                "keyseat",
                command,
                "--server",
                "http://x",
                "--public-key",
                &key,
            ])
            .unwrap_or_else(|e| panic!("{command}: {e}"));
            let pinned = match cli.command {
                Command::Client(args) => args.public_key,
                Command::Check(args) => args.public_key,
                _ => None,
            };
            assert_eq!(pinned.as_deref(), Some(key.as_str()), "{command}");
        }
    }
}
