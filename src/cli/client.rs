//! `keyseat client` (the reference client: the library in a terminal) and
//! `keyseat check` (a deployment's smoke test: health, start, heartbeat,
//! status, one device at a time, end and, optionally, expiry).

use std::process::ExitCode;
use std::time::Duration;

use super::outln;
use clap::Args;

use crate::client::{Api, ApiError, Client, ClientError, LostReason, SessionEvent};
use crate::signing::PinnedKey;
use crate::wire::StartAnswer;

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
    /// Borrow the seat for this many hours (offline use) instead of
    /// heartbeating: prints the lease token (checked with --public-key when
    /// given) and exits 0, leaving the seat borrowed.
    #[arg(long, value_name = "HOURS")]
    borrow: Option<u32>,
}

/// The access key from `--key KEY`, `--key -` (a line of standard input)
/// or the KEYSEAT_KEY environment variable, in that order.
fn access_key(flag: Option<&str>) -> Result<String, String> {
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
    if let Some(public_key) = &args.public_key {
        client = match client.public_key(public_key) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("keyseat: --public-key: {e}");
                return ExitCode::from(exit::USAGE);
            }
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
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keyseat: cannot wait for signals: {e}");
            return ExitCode::from(exit::ERROR);
        }
    };
    let lost = runtime.block_on(async {
        tokio::select! {
            _ = crate::server::shutdown_signal() => None,
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
                LostReason::Rejected { .. } => exit::ERROR,
            })
        }
    }
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
        _ => exit::ERROR,
    }
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Server URL, e.g. https://licenses.example.com
    #[arg(long)]
    server: String,
    /// An access key to test with (`-`: from standard input; without the
    /// flag: KEYSEAT_KEY). Use a test key: the checks take over its seat,
    /// so a real user of it would be disconnected.
    #[arg(long)]
    key: Option<String>,
    /// Also check that a silent session expires (waits for the server's
    /// advertised timeout).
    #[arg(long)]
    with_expiry: bool,
    /// The server's public signing key (`keyseat signing-key show`):
    /// answers not signed by it for this request are refused.
    // A base64url key may begin with `-`: the value is taken as is.
    #[arg(long, value_name = "BASE64URL", allow_hyphen_values = true)]
    public_key: Option<String>,
}

/// Runs the checks; exit 0 only when every check passes.
pub fn run_check(args: CheckArgs) -> ExitCode {
    let key = match access_key(args.key.as_deref()) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("keyseat: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    if let Err(e) = crate::keys::AccessKey::parse(&key) {
        eprintln!("keyseat: the access key is not valid: {e}");
        return ExitCode::from(exit::KEY_REFUSED);
    }
    let mut api = match Api::new(&args.server, Duration::from_secs(10)) {
        Ok(api) => api,
        Err(e) => {
            eprintln!("keyseat: {e}");
            return ExitCode::from(exit::ERROR);
        }
    };
    let pinned = match args.public_key.as_deref().map(PinnedKey::parse) {
        None => None,
        Some(Ok(key)) => Some(key),
        Some(Err(e)) => {
            eprintln!("keyseat: --public-key: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    if let Some(key) = &pinned {
        api = api.pin(key.clone());
    }
    let mut check = Check {
        api,
        pinned,
        key,
        passed: 0,
        total: 0,
        opened: Vec::new(),
    };
    outln!(
        "Checking {} (the checks start and end sessions on this key)",
        check.api.base()
    );
    check.run(args.with_expiry);
    check.cleanup();
    outln!("{}/{} checks passed", check.passed, check.total);
    if check.passed == check.total {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::ERROR)
    }
}

struct Check {
    api: Api,
    /// The key given with --public-key (every call is then verified).
    pinned: Option<PinnedKey>,
    key: String,
    passed: usize,
    total: usize,
    /// Sessions this run started, ended at the end whatever happened.
    opened: Vec<String>,
}

const DEVICE_A: &str = "keyseat-check-A";
const DEVICE_B: &str = "keyseat-check-B";
const DEVICE_C: &str = "keyseat-check-expiry";

impl Check {
    fn report(&mut self, name: &str, outcome: Result<String, String>) -> bool {
        self.total += 1;
        match outcome {
            Ok(detail) => {
                self.passed += 1;
                outln!("PASS {name}: {detail}");
                true
            }
            Err(reason) => {
                outln!("FAIL {name}: {reason}");
                false
            }
        }
    }

    fn start(&mut self, device: &str) -> Result<StartAnswer, ApiError> {
        let id = format!("keyseat-check-{}", uuid::Uuid::new_v4());
        self.opened.push(id.clone());
        self.api.start(&self.key, Some(&id), Some(device), None)
    }

    fn run(&mut self, with_expiry: bool) {
        let health = self.api.health().map_err(|e| e.to_string()).and_then(|h| {
            if h.is_ok() {
                Ok(format!("server {} is up, database ok", h.version))
            } else {
                Err(format!("unexpected health answer {}", json_text(&h)))
            }
        });
        self.report("health", health);
        let signatures = self.signatures();
        self.report("signatures", signatures);

        let a = self.start(DEVICE_A);
        let a_id = a.as_ref().ok().map(|b| b.session_id.clone());
        let timeout = a.as_ref().map_or(60, |b| b.session_timeout_seconds);
        let started = a
            .map_err(|e| e.to_string())
            .map(|b| format!("session {}, fence {}", b.session_id, b.fence));
        let skipped = || Err::<String, String>("skipped: no session was started".into());
        self.report("start", started);

        let Some(a_id) = a_id else {
            for name in ["heartbeat", "status", "one-device-at-a-time", "end"] {
                self.report(name, skipped());
            }
            if with_expiry {
                self.report("expiry", skipped());
            }
            return;
        };

        let hb = self
            .api
            .heartbeat(&self.key, &a_id, None)
            .map_err(|e| e.to_string())
            .map(|b| format!("lease extended to {}", b.expires_at));
        self.report("heartbeat", hb);

        let status = self
            .api
            .status(&self.key)
            .map_err(|e| e.to_string())
            .and_then(|b| {
                if b.sessions.iter().any(|s| s.session_id == a_id) {
                    Ok(format!(
                        "session listed as live ({} of {} seat(s))",
                        b.sessions.len(),
                        b.max_sessions
                    ))
                } else {
                    Err(format!(
                        "the live session is missing from {}",
                        json_text(&b)
                    ))
                }
            });
        self.report("status", status);

        let (one_device, end) = self.one_device(&a_id);
        self.report("one-device-at-a-time", one_device);
        self.report("end", end);

        if with_expiry {
            let expiry = self.expiry(timeout);
            self.report("expiry", expiry);
        }
    }

    /// The server lists its signing keys and signs an answer with one: the
    /// pinned one when --public-key was given (then every later check is
    /// verified too), else whichever it lists first, named so it can be
    /// pinned.
    fn signatures(&mut self) -> Result<String, String> {
        let listed = self
            .api
            .signing_keys()
            .map_err(|e| format!("GET /api/signing-keys: {e}"))?;
        let current = listed
            .keys
            .first()
            .ok_or("the server lists no signing key")?;
        let (probe, pinned_here) = match &self.pinned {
            Some(pinned) => {
                if !listed.keys.iter().any(|k| k.kid == pinned.kid()) {
                    return Err(format!(
                        "the pinned key (kid {}) is not among the server's signing keys (current: {}); \
                         pass the key `keyseat signing-key show` prints on the server",
                        pinned.kid(),
                        current.x
                    ));
                }
                (self.api.clone(), true)
            }
            None => {
                let key = PinnedKey::parse(&current.x)
                    .map_err(|e| format!("the listed key is unusable: {e}"))?;
                (self.api.clone().pin(key), false)
            }
        };
        probe
            .status(&self.key)
            .map_err(|e| format!("a signed status answer: {e}"))?;
        Ok(if pinned_here {
            format!("answers are signed by the pinned key (kid {})", current.kid)
        } else {
            format!(
                "answers are signed (kid {}); pin it with --public-key {}",
                current.kid, current.x
            )
        })
    }

    /// Device B starts; device A must be superseded and told B's name.
    /// Then B ends and must be told so. Returns both outcomes.
    fn one_device(&mut self, a_id: &str) -> (Result<String, String>, Result<String, String>) {
        let b = match self.start(DEVICE_B) {
            Ok(b) => b,
            Err(e) => {
                let reason = if e.code() == Some("seats_full") {
                    "a second device was refused with seats_full: the key's policy is reject, not takeover".to_owned()
                } else {
                    format!("starting a second device failed: {e}")
                };
                return (Err(reason), Err("skipped: no second session".into()));
            }
        };
        let b_id = b.session_id.clone();
        let result = (|| {
            let terminated = b.terminated_sessions.iter().any(|t| t.session_id == a_id);
            if !terminated || !b.previous_session_terminated {
                return Err("a second device started without ending the first: the key allows more than one device at a time".to_owned());
            }
            match self.api.heartbeat(&self.key, a_id, None) {
                Err(ApiError::Server {
                    status: 409,
                    code,
                    error,
                    ..
                }) if code == "session_superseded" => {
                    let by = error["superseded_by"]["device_name"]
                        .as_str()
                        .unwrap_or_default();
                    if by == DEVICE_B {
                        Ok(format!(
                            "the first device heard 409 session_superseded naming \"{by}\""
                        ))
                    } else {
                        Err(format!(
                            "session_superseded named \"{by}\", not \"{DEVICE_B}\""
                        ))
                    }
                }
                Ok(_) => {
                    Err("the first device's heartbeat still succeeds after the takeover".into())
                }
                Err(e) => Err(format!(
                    "the first device heard {e}, not 409 session_superseded"
                )),
            }
        })();
        let end = self.end_check(&b_id);
        (result, end)
    }

    fn end_check(&mut self, id: &str) -> Result<String, String> {
        match self.api.end(&self.key, id, None) {
            Ok(b) if b.ended => {}
            Ok(b) => {
                return Err(format!(
                    "end answered {}, expected ended: true",
                    json_text(&b)
                ))
            }
            Err(e) => return Err(e.to_string()),
        }
        match self.api.heartbeat(&self.key, id, None) {
            Err(ApiError::Server {
                status: 410, code, ..
            }) if code == "session_ended" => {
                Ok("ended; a later heartbeat hears 410 session_ended".into())
            }
            Ok(_) => Err("a heartbeat after end still succeeds".into()),
            Err(e) => Err(format!(
                "a heartbeat after end heard {e}, not 410 session_ended"
            )),
        }
    }

    fn expiry(&mut self, timeout: u64) -> Result<String, String> {
        let c = self
            .start(DEVICE_C)
            .map_err(|e| format!("starting failed: {e}"))?;
        let id = c.session_id;
        let wait = timeout + 2;
        outln!("     waiting {wait} s for the session to expire (server timeout {timeout} s)…");
        std::thread::sleep(Duration::from_secs(wait));
        match self.api.heartbeat(&self.key, &id, None) {
            Err(ApiError::Server {
                status: 410, code, ..
            }) if code == "session_expired" => {
                Ok(format!("a silent session expired after {timeout} s"))
            }
            Ok(_) => Err(format!(
                "the session was still live {wait} s after its last heartbeat"
            )),
            Err(e) => Err(format!("heard {e}, not 410 session_expired")),
        }
    }

    /// Ends every session this run started (already-ended ones are fine).
    fn cleanup(&mut self) {
        for id in std::mem::take(&mut self.opened) {
            let _ = self.api.end(&self.key, &id, Some(Duration::from_secs(5)));
        }
    }
}

/// An answer as the JSON the server sent, for messages.
fn json_text(answer: &impl serde::Serialize) -> String {
    serde_json::to_string(answer).unwrap_or_default()
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
