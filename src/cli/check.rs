//! `keyseat check`: a deployment's smoke test (health, signatures, start,
//! heartbeat, status, one device at a time, end and, optionally, expiry),
//! on the low-level [`Api`] so each step's answer is seen as it is.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::client::{access_key, bad_flag, exit};
use super::outln;
use crate::client::{Api, ApiError};
use crate::signing::PinnedKey;
use crate::wire::StartAnswer;

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
    pub(super) public_key: Option<String>,
    /// A PEM file of CA certificates to trust besides the system store
    /// (a server whose certificate comes from a private CA).
    #[arg(long, value_name = "PEM_FILE")]
    ca_file: Option<std::path::PathBuf>,
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
        Some(Err(e)) => return bad_flag("--public-key", e),
    };
    if let Some(path) = &args.ca_file {
        api = match api.trusting(path) {
            Ok(api) => api,
            Err(e) => return bad_flag("--ca-file", e),
        };
    }
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
        let health = self.api.health();
        // Every later check would refuse the same certificate: it is said once.
        let refused = matches!(health, Err(ApiError::Certificate(_)));
        let health = health.map_err(|e| e.to_string()).and_then(|h| {
            if h.is_ok() {
                Ok(format!("server {} is up, database ok", h.version))
            } else {
                Err(format!("unexpected health answer {}", json_text(&h)))
            }
        });
        self.report("health", health);
        if refused {
            return;
        }
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
