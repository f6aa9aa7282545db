//! Error codes, the thread-local last error, and the guard every entry
//! point runs in.

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use keyseat::client::ClientError;

/// What a function did. `KEYSEAT_OK` is 0; every other value is an error
/// whose message `keyseat_last_error_message` returns on the same thread.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum keyseat_status {
    /// Success.
    KEYSEAT_OK = 0,
    /// A required pointer argument was NULL.
    KEYSEAT_ERR_NULL_ARGUMENT = 1,
    /// A string argument was not valid UTF-8.
    KEYSEAT_ERR_INVALID_UTF8 = 2,
    /// Another argument was unusable (an options `size` this library does
    /// not know, a buffer too small).
    KEYSEAT_ERR_INVALID_ARGUMENT = 3,
    /// The access key is malformed (a typo): checked locally, no request
    /// was sent.
    KEYSEAT_ERR_INVALID_KEY_FORMAT = 4,
    /// The server URL, the CA file, the public key or another setting is
    /// unusable.
    KEYSEAT_ERR_CONFIG = 5,
    /// The server refused; `keyseat_last_error_code` names why
    /// (`seats_full`, `invalid_key`, `key_revoked`, ...).
    KEYSEAT_ERR_REFUSED = 6,
    /// No usable answer from the server after retrying.
    KEYSEAT_ERR_UNREACHABLE = 7,
    /// Answers failed the signature check with the pinned public key.
    KEYSEAT_ERR_UNTRUSTED = 8,
    /// The TLS handshake refused the server's certificate (not retried).
    KEYSEAT_ERR_CERTIFICATE = 9,
    /// The call does not fit the client's state (a start while a session
    /// is live or another start is running).
    KEYSEAT_ERR_WRONG_STATE = 10,
    /// What was asked for does not exist here (no machine id for a
    /// fingerprint).
    KEYSEAT_ERR_UNAVAILABLE = 11,
    /// A bug in keyseat (a Rust panic, caught at the boundary).
    KEYSEAT_ERR_INTERNAL = 99,
}

/// A failed call: its code, its message, and the contract's error code
/// when the server refused.
#[derive(Debug)]
pub struct Failure {
    /// The code returned to C.
    pub status: keyseat_status,
    /// The message `keyseat_last_error_message` returns.
    pub message: String,
    /// The contract's error code (`seats_full`), for a refusal.
    pub code: Option<String>,
}

impl Failure {
    /// A failure with a message and no contract code.
    pub fn new(status: keyseat_status, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
            code: None,
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        use keyseat_status::*;
        let (status, code) = match &e {
            ClientError::InvalidKeyFormat(_) => (KEYSEAT_ERR_INVALID_KEY_FORMAT, None),
            ClientError::Config(_) => (KEYSEAT_ERR_CONFIG, None),
            ClientError::Refused { code, .. } => (KEYSEAT_ERR_REFUSED, Some(code.clone())),
            ClientError::Unreachable(_) => (KEYSEAT_ERR_UNREACHABLE, None),
            ClientError::Untrusted(_) => (KEYSEAT_ERR_UNTRUSTED, None),
            ClientError::Certificate(_) => (KEYSEAT_ERR_CERTIFICATE, None),
        };
        Failure {
            status,
            message: e.to_string(),
            code,
        }
    }
}

struct LastError {
    message: CString,
    code: CString,
}

thread_local! {
    static LAST_ERROR: RefCell<LastError> = RefCell::new(LastError {
        message: CString::default(),
        code: CString::default(),
    });
}

/// C text of `s`: an access key anywhere in it cut to its prefix (a
/// message may quote what the app passed), NUL bytes dropped.
pub fn c_text(s: &str) -> CString {
    let safe = keyseat::keys::redact_secret(s);
    CString::new(safe.replace('\0', "")).unwrap_or_default()
}

fn remember(failure: &Failure) {
    let message = c_text(&failure.message);
    let code = c_text(failure.code.as_deref().unwrap_or(""));
    // `try_with`: never a panic, even while this thread is exiting.
    let _ = LAST_ERROR.try_with(|last| {
        if let Ok(mut last) = last.try_borrow_mut() {
            *last = LastError { message, code };
        }
    });
}

/// Runs an entry point's body: its error becomes the code returned and the
/// thread's last error; a panic is caught (it must never unwind into C)
/// and becomes `KEYSEAT_ERR_INTERNAL`.
pub fn guard(function: &str, body: impl FnOnce() -> Result<(), Failure>) -> keyseat_status {
    let failure = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => return keyseat_status::KEYSEAT_OK,
        Ok(Err(failure)) => failure,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_owned());
            Failure::new(
                keyseat_status::KEYSEAT_ERR_INTERNAL,
                format!("{function}: internal error (a bug in keyseat): {what}"),
            )
        }
    };
    // Remembering allocates; a panic there must not escape either.
    let status = failure.status;
    let _ = catch_unwind(AssertUnwindSafe(|| remember(&failure)));
    status
}

/// Reads the thread's last error through `pick`, as a pointer into
/// thread-local storage ("" when there is none or it cannot be read).
fn last_error_field(pick: fn(&LastError) -> *const c_char) -> *const c_char {
    static EMPTY: &[u8; 1] = b"\0";
    let read = || {
        LAST_ERROR
            .try_with(|last| last.try_borrow().map(|l| pick(&l)).ok())
            .ok()
            .flatten()
    };
    catch_unwind(read)
        .ok()
        .flatten()
        .unwrap_or(EMPTY.as_ptr().cast())
}

/// The message of the last call on this thread that returned an error
/// (UTF-8, never NULL; "" before any error). An access key in it is cut to
/// its prefix. A successful call does not clear it.
///
/// The pointer stays valid until the next failing keyseat call on this
/// thread or the thread's exit: copy the text to keep it.
///
/// Thread-safety: any thread; each thread has its own last error.
#[no_mangle]
pub extern "C" fn keyseat_last_error_message() -> *const c_char {
    last_error_field(|l| l.message.as_ptr())
}

/// The contract's error code of the last error on this thread when the
/// server refused (`KEYSEAT_ERR_REFUSED`): "seats_full", "invalid_key",
/// "key_revoked", "key_suspended", "key_expired", "rate_limited", ...;
/// "" for any other error. Never NULL; valid as long as
/// `keyseat_last_error_message`'s pointer.
///
/// Thread-safety: any thread; each thread has its own last error.
#[no_mangle]
pub extern "C" fn keyseat_last_error_code() -> *const c_char {
    last_error_field(|l| l.code.as_ptr())
}

/// The library's version ("0.1.0"), static, never NULL.
///
/// Thread-safety: any thread.
#[no_mangle]
pub extern "C" fn keyseat_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last() -> String {
        // SAFETY: the function returns a NUL-terminated string that lives
        // until the next failing call on this thread; read it at once.
        unsafe { CStr::from_ptr(keyseat_last_error_message()) }
            .to_string_lossy()
            .into_owned()
    }

    /// A panic in a body is a code and a message, never an unwind.
    #[test]
    fn a_panic_is_an_internal_error() {
        let status = guard("keyseat_test", || panic!("boom"));
        assert_eq!(status, keyseat_status::KEYSEAT_ERR_INTERNAL);
        assert!(last().contains("boom"), "{}", last());
        assert_eq!(guard("keyseat_test", || Ok(())), keyseat_status::KEYSEAT_OK);
        assert!(last().contains("boom"), "a success keeps the last error");
    }

    /// Messages never carry a whole access key.
    #[test]
    fn keys_in_messages_are_cut() {
        let key = keyseat::keys::AccessKey::generate();
        let secret = key.expose_secret().to_owned();
        guard("keyseat_test", || {
            Err(Failure::new(
                keyseat_status::KEYSEAT_ERR_CONFIG,
                format!("no good: {secret}"),
            ))
        });
        assert!(!last().contains(&secret[12..]), "{}", last());
        assert!(last().starts_with("no good: ks_"));
    }
}
