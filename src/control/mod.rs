//! The control socket: how the CLI reaches a running server.
//!
//! The server keeps live leases in memory and writes heartbeat times to the
//! file lazily, so a CLI reading the file alone decides with stale data
//! (which session a lowered seat limit ends, whether a session is still
//! live) and competes with the server's writer for the file's lock. So while
//! a server holds the database, it listens on a Unix-domain socket beside
//! it, `<database>.sock`, and the CLI's commands run on the server's own
//! store through it: the CLI and the admin API make the same choices
//! because they run the same code on the same live view.
//!
//! - **Finding the server**: the CLI connects to `<database>.sock` (the
//!   database's real path, symlinks resolved). No
//!   socket, or one nobody answers on (left by a crash), means no server:
//!   the CLI works on the file as before.
//! - **Who may use it**: the socket is created with mode 0600 (bound inside
//!   a private directory, then moved into place, so it is never reachable
//!   with looser permissions): only the owner of the server process, who can
//!   write the database file anyway, can connect. No token is needed.
//! - **Wire**: one JSON object per line each way. A call (`{"call":
//!   "get_key", …}`) is answered by `{"ok": value}` or `{"error": {…}}`;
//!   a connection carries any number of calls, one at a time.
//! - **Time and actor**: the server decides with its own clock and records
//!   changes with the CLI's actor (`cli`), as when the CLI wrote the file.

mod listen;
mod remote;

pub use listen::ControlSocket;
pub use remote::RemoteStore;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::clock::Timestamp;
use crate::error::Error;
use crate::model::{ConflictPolicy, EndReason, EventType, KeyStatus};
use crate::store::{EventFilter, KeyPatch, NewKey};

/// Longest call line the server reads (calls are a few hundred bytes).
const MAX_CALL_BYTES: u64 = 64 * 1024;

/// The socket of the server holding `database`: the database file's real
/// path (symlinks and relative paths resolved, so that every way of naming
/// the file finds the same socket) with `.sock` appended.
pub fn socket_path(database: &Path) -> PathBuf {
    let mut p = crate::instance_lock::real_path(database).into_os_string();
    p.push(".sock");
    PathBuf::from(p)
}

/// One call of the [`crate::store::Storage`] methods the CLI uses.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case", deny_unknown_fields)]
enum Call {
    CheckHealth,
    CreateKey {
        label: Option<String>,
        max_sessions: Option<u32>,
        on_conflict: Option<ConflictPolicy>,
        expires_at: Option<Timestamp>,
        #[serde(default)]
        max_borrow_hours: Option<u32>,
    },
    ListKeys {
        limit: u32,
        after: Option<String>,
    },
    SearchKeys {
        query: String,
        limit: u32,
        offset: u64,
    },
    GetKey {
        key_ref: String,
    },
    UpdateKey {
        key_ref: String,
        patch: WirePatch,
    },
    RevokeKey {
        key_ref: String,
    },
    LiveSessions {
        key_ref: Option<String>,
    },
    KickSession {
        session_id: String,
    },
    Events {
        key_id: Option<String>,
        event_type: Option<EventType>,
        since: Option<Timestamp>,
        before_id: Option<i64>,
        limit: u32,
    },
    SharingInput {
        since: Timestamp,
    },
    Sweep {
        history_days: u32,
    },
    SigningKeys,
    EnsureSigningKey,
    /// Rotates at the server's time; keys retired more than
    /// `keep_retired_ms` before it are deleted.
    RotateSigningKey {
        keep_retired_ms: i64,
    },
}

impl Call {
    fn name(&self) -> &'static str {
        match self {
            Call::CheckHealth => "check_health",
            Call::CreateKey { .. } => "create_key",
            Call::ListKeys { .. } => "list_keys",
            Call::SearchKeys { .. } => "search_keys",
            Call::GetKey { .. } => "get_key",
            Call::UpdateKey { .. } => "update_key",
            Call::RevokeKey { .. } => "revoke_key",
            Call::LiveSessions { .. } => "live_sessions",
            Call::KickSession { .. } => "kick_session",
            Call::Events { .. } => "events",
            Call::SharingInput { .. } => "sharing_input",
            Call::Sweep { .. } => "sweep",
            Call::SigningKeys => "signing_keys",
            Call::EnsureSigningKey => "ensure_signing_key",
            Call::RotateSigningKey { .. } => "rotate_signing_key",
        }
    }

    fn create_key(new: &NewKey) -> Call {
        Call::CreateKey {
            label: new.label.clone(),
            max_sessions: new.max_sessions,
            on_conflict: new.on_conflict,
            expires_at: new.expires_at,
            max_borrow_hours: new.max_borrow_hours,
        }
    }

    fn events(f: &EventFilter) -> Call {
        Call::Events {
            key_id: f.key_id.clone(),
            event_type: f.event_type,
            since: f.since,
            before_id: f.before_id,
            limit: f.limit,
        }
    }
}

/// A [`KeyPatch`] on the wire. A missing field leaves it alone, `null`
/// clears it (the nullable ones), a value sets it: the same three states
/// as the patch's `Option<Option<_>>`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WirePatch {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    label: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_sessions: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    on_conflict: Option<ConflictPolicy>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    expires_at: Option<Option<Timestamp>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<KeyStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_borrow_hours: Option<u32>,
}

/// A field that is present (maybe `null`): `Some(value or None)`.
fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

impl From<&KeyPatch> for WirePatch {
    fn from(p: &KeyPatch) -> Self {
        WirePatch {
            label: p.label.clone(),
            max_sessions: p.max_sessions,
            on_conflict: p.on_conflict,
            expires_at: p.expires_at,
            status: p.status,
            max_borrow_hours: p.max_borrow_hours,
        }
    }
}

impl From<WirePatch> for KeyPatch {
    fn from(p: WirePatch) -> Self {
        KeyPatch {
            label: p.label,
            max_sessions: p.max_sessions,
            on_conflict: p.on_conflict,
            expires_at: p.expires_at,
            status: p.status,
            max_borrow_hours: p.max_borrow_hours,
        }
    }
}

/// A signing key's public half on the wire: the private key never leaves
/// the server, not even to its owner's CLI.
#[derive(Debug, Serialize, Deserialize)]
struct WireSigningKey {
    /// base64url, as in the JWK.
    public: String,
    created_at: Timestamp,
    retired_at: Option<Timestamp>,
}

impl From<&crate::signing::KeyRecord> for WireSigningKey {
    fn from(k: &crate::signing::KeyRecord) -> Self {
        WireSigningKey {
            public: k.jwk().x,
            created_at: k.created_at,
            retired_at: k.retired_at,
        }
    }
}

impl WireSigningKey {
    fn record(&self) -> Result<crate::signing::KeyRecord, Error> {
        crate::signing::KeyRecord::from_public(&self.public, self.created_at, self.retired_at)
            .map_err(|e| Error::Internal(format!("the server sent an unusable signing key: {e}")))
    }
}

/// The answer to one call.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Reply {
    Ok(serde_json::Value),
    Error(WireError),
}

/// An [`Error`] on the wire: which variant, its argument, and its text
/// (what the CLI prints when the variant is not one it rebuilds).
#[derive(Debug, Serialize, Deserialize)]
struct WireError {
    kind: String,
    #[serde(default)]
    arg: Option<String>,
    message: String,
}

impl From<&Error> for WireError {
    fn from(e: &Error) -> Self {
        let (kind, arg) = match e {
            Error::InvalidRequest(m) => ("invalid_request", Some(m.clone())),
            Error::InvalidKey => ("invalid_key", None),
            Error::KeyRevoked => ("key_revoked", None),
            Error::KeySuspended => ("key_suspended", None),
            Error::KeyExpired => ("key_expired", None),
            Error::SessionIdTaken(id) => ("session_id_taken", Some(id.clone())),
            Error::SeatsFull { max_sessions } => ("seats_full", Some(max_sessions.to_string())),
            Error::BorrowNotAllowed => ("borrow_not_allowed", None),
            Error::SessionOver(reason) => ("session_over", Some(reason.as_str().to_owned())),
            Error::SessionNotFound => ("session_not_found", None),
            Error::KeyNotFound(r) => ("key_not_found", Some(r.clone())),
            Error::AdminSessionNotFound(id) => ("admin_session_not_found", Some(id.clone())),
            Error::Conflict(m) => ("conflict", Some(m.clone())),
            Error::Overloaded(m) => ("overloaded", Some(m.clone())),
            Error::Unavailable(m) => ("unavailable", Some(m.clone())),
            Error::Config(m) => ("config", Some(m.clone())),
            Error::Database(m) => ("database", Some(m.clone())),
            _ => ("other", None),
        };
        WireError {
            kind: kind.to_owned(),
            arg,
            message: e.to_string(),
        }
    }
}

impl From<WireError> for Error {
    fn from(w: WireError) -> Self {
        let arg = w.arg.unwrap_or_default();
        match w.kind.as_str() {
            "invalid_request" => Error::InvalidRequest(arg),
            "invalid_key" => Error::InvalidKey,
            "key_revoked" => Error::KeyRevoked,
            "key_suspended" => Error::KeySuspended,
            "key_expired" => Error::KeyExpired,
            "session_id_taken" => Error::SessionIdTaken(arg),
            "seats_full" => match arg.parse() {
                Ok(max_sessions) => Error::SeatsFull { max_sessions },
                Err(_) => Error::Database(w.message),
            },
            "borrow_not_allowed" => Error::BorrowNotAllowed,
            "session_over" => match EndReason::parse(&arg) {
                Some(reason) => Error::SessionOver(reason),
                None => Error::Database(w.message),
            },
            "session_not_found" => Error::SessionNotFound,
            "key_not_found" => Error::KeyNotFound(arg),
            "admin_session_not_found" => Error::AdminSessionNotFound(arg),
            "conflict" => Error::Conflict(arg),
            "overloaded" => Error::Overloaded(arg),
            "unavailable" => Error::Unavailable(arg),
            "config" => Error::Config(arg),
            // SQLite, pool and internal failures keep their text; the CLI
            // prints it and exits 1, as when it met them itself.
            _ => Error::Database(w.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_keeps_its_three_states_on_the_wire() {
        let patch = KeyPatch {
            label: Some(None),
            expires_at: Some(Some(Timestamp(1_700_000_000_123))),
            max_sessions: Some(2),
            ..KeyPatch::default()
        };
        let text = serde_json::to_string(&WirePatch::from(&patch)).unwrap();
        let back: KeyPatch = serde_json::from_str::<WirePatch>(&text).unwrap().into();
        assert_eq!(back.label, Some(None), "{text}");
        assert_eq!(back.expires_at, Some(Some(Timestamp(1_700_000_000_123))));
        assert_eq!(back.max_sessions, Some(2));
        assert_eq!(back.on_conflict, None);
        assert_eq!(back.status, None);
    }

    #[test]
    fn errors_come_back_as_the_same_variant_and_text() {
        for e in [
            Error::KeyNotFound("ks_nope".into()),
            Error::InvalidRequest("bad".into()),
            Error::SessionOver(EndReason::Expired),
            Error::AdminSessionNotFound("s-1".into()),
            Error::Internal("boom".into()),
        ] {
            let wire = WireError::from(&e);
            let text = serde_json::to_string(&wire).unwrap();
            let back = Error::from(serde_json::from_str::<WireError>(&text).unwrap());
            assert_eq!(back.to_string(), e.to_string());
            assert_eq!(
                std::mem::discriminant(&back) == std::mem::discriminant(&e),
                !matches!(e, Error::Internal(_))
            );
        }
    }
}
