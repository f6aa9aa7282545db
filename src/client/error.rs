//! How a call or a session fails, in the app's terms: a [`ClientError`]
//! for a call, a [`LostReason`] for a session that is over, each mapped
//! from the contract's error codes in one place.

use serde_json::Value;

use super::{ApiError, CertificateProblem};

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// The access key is malformed (checked locally, no request sent).
    #[error("the access key is not valid: {0}")]
    InvalidKeyFormat(String),
    /// The server URL or another setting is unusable.
    #[error("{0}")]
    Config(String),
    /// The server refused (a contract error code such as `invalid_key`,
    /// `key_revoked`, `seats_full`).
    #[error("{status} {code}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The contract's error code.
        code: String,
        /// The server's message.
        message: String,
    },
    /// No usable answer from the server after retrying.
    #[error("server unreachable: {0}")]
    Unreachable(String),
    /// Answers came, but failed the signature check with the pinned public
    /// key: an impostor, a replay, or a proxy that changes answers.
    #[error("the server's answer is not trusted: {0}")]
    Untrusted(String),
    /// The TLS handshake refused the server's certificate (unknown issuer,
    /// another name, expired): not retried, since it does not heal by
    /// waiting; see [`super::Client::ca_file`].
    #[error("{0}")]
    Certificate(CertificateProblem),
}

impl From<ApiError> for ClientError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Transport(msg) => ClientError::Unreachable(msg),
            forged @ ApiError::Forged { .. } => ClientError::Untrusted(forged.to_string()),
            ApiError::Certificate(problem) => ClientError::Certificate(problem),
            ApiError::Server {
                status,
                code,
                message,
                ..
            } if status >= 500 => ClientError::Unreachable(format!("{status} {code}: {message}")),
            ApiError::Server {
                status,
                code,
                message,
                ..
            } => ClientError::Refused {
                status,
                code,
                message,
            },
        }
    }
}

/// Why a session is no longer usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LostReason {
    /// Another device started with the same key and took this seat.
    Superseded {
        /// That device's name, if it gave one.
        by_device: Option<String>,
        /// When it started (RFC 3339, server time).
        at: Option<String>,
    },
    /// The server had no heartbeat for a whole timeout.
    Expired,
    /// The session was ended by another call (e.g. another process).
    Ended,
    /// An administrator ended the session.
    Revoked,
    /// The key was refused: `key_revoked`, `key_suspended`, `key_expired`
    /// or `invalid_key`.
    KeyRefused {
        /// The contract's error code.
        code: String,
        /// The server's message.
        message: String,
    },
    /// The server does not know the session (history pruned, or another
    /// server).
    NotFound,
    /// No answer from the server until the lease it last granted ran out.
    Unreachable {
        /// The last transport error.
        last_error: String,
    },
    /// Only answers that failed the signature check until the lease ran
    /// out: something answers in the server's place.
    Untrusted {
        /// What the last answer failed.
        last_error: String,
    },
    /// A heartbeat's TLS handshake refused the server's certificate (it
    /// was renewed by a CA this client does not trust, expired, or another
    /// server answers): the session is lost at once, without retrying,
    /// since a certificate does not heal within a lease.
    Certificate(CertificateProblem),
    /// Another refusal the client does not expect (a bug on either side).
    Rejected {
        /// The contract's error code.
        code: String,
        /// The server's message.
        message: String,
    },
}

impl std::fmt::Display for LostReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LostReason::Superseded {
                by_device: Some(d), ..
            } => {
                write!(
                    f,
                    "superseded: device \"{d}\" started with the same access key"
                )
            }
            LostReason::Superseded {
                by_device: None, ..
            } => {
                write!(
                    f,
                    "superseded: another device started with the same access key"
                )
            }
            LostReason::Expired => write!(f, "expired: the server missed this device's heartbeats"),
            LostReason::Ended => write!(f, "ended elsewhere"),
            LostReason::Revoked => write!(f, "revoked by an administrator"),
            LostReason::KeyRefused { code, message } => {
                write!(f, "key refused ({code}): {message}")
            }
            LostReason::NotFound => write!(f, "the server no longer knows this session"),
            LostReason::Unreachable { last_error } => {
                write!(f, "unreachable: no answer from the server before the lease ran out ({last_error})")
            }
            LostReason::Untrusted { last_error } => write!(
                f,
                "untrusted: no answer that passed the signature check before the lease ran out ({last_error})"
            ),
            LostReason::Certificate(problem) => write!(f, "{problem}"),
            LostReason::Rejected { code, message } => write!(f, "rejected ({code}): {message}"),
        }
    }
}

impl LostReason {
    /// The reason for a terminal (non-transient) error answer.
    pub(super) fn from_refusal(code: &str, message: &str, error: &Value) -> LostReason {
        match code {
            "session_superseded" => LostReason::Superseded {
                by_device: error["superseded_by"]["device_name"]
                    .as_str()
                    .map(str::to_owned),
                at: error["superseded_by"]["started_at"]
                    .as_str()
                    .map(str::to_owned),
            },
            "session_expired" => LostReason::Expired,
            "session_ended" => LostReason::Ended,
            "session_revoked" => LostReason::Revoked,
            "session_not_found" => LostReason::NotFound,
            "invalid_key" | "key_revoked" | "key_suspended" | "key_expired" => {
                LostReason::KeyRefused {
                    code: code.into(),
                    message: message.into(),
                }
            }
            _ => LostReason::Rejected {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}
