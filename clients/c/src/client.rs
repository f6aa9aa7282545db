//! The `keyseat_client` handle: a [`keyseat::client::Client`] and the one
//! session it holds at a time.
//!
//! Network calls (start, end) run without the handle's lock held, so
//! `keyseat_client_state` answers at once from any thread while another
//! thread starts or ends.

use std::ffi::{c_char, c_void};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use keyseat::client::{Client, Session, SessionState};

use crate::notify::{keyseat_lost_callback, keyseat_lost_reason, Notifier};
use crate::status::{guard, keyseat_status, Failure};
use crate::strings::{optional, required, set_optional, write_out};

/// Settings for `keyseat_client_new`. Zero-initialize it, set `size` to
/// `sizeof(keyseat_options)`, then set what you need: a NULL string or a
/// zero number is the default. `size` lets a later library accept this
/// version's smaller struct.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct keyseat_options {
    /// `sizeof(keyseat_options)`.
    pub size: usize,
    /// The name shown to the other device when this one takes over, and
    /// to operators.
    pub device_name: *const c_char,
    /// A stable device fingerprint (see `keyseat_machine_fingerprint`):
    /// lets the same device restart at once on a `reject`-policy key.
    pub fingerprint: *const c_char,
    /// The server's public signing key (what `keyseat signing-key show
    /// --pin` prints): every answer must then be signed by it.
    pub public_key: *const c_char,
    /// A PEM file of CA certificates trusted besides the system's store,
    /// for a server whose certificate comes from a private CA.
    pub ca_file: *const c_char,
    /// The time budget of each HTTP call in milliseconds (0: 10 000).
    pub timeout_ms: u32,
}

/// What a client's session is doing.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum keyseat_state {
    /// No session yet (or the last start failed).
    KEYSEAT_STATE_NOT_STARTED = 0,
    /// `keyseat_client_start` is running on some thread.
    KEYSEAT_STATE_STARTING = 1,
    /// Heartbeats are succeeding.
    KEYSEAT_STATE_ACTIVE = 2,
    /// Heartbeats are failing transiently; the session is still valid
    /// until the lease runs out (licensed work may go on).
    KEYSEAT_STATE_RETRYING = 3,
    /// The session is over (see the reason); stop licensed work.
    KEYSEAT_STATE_LOST = 4,
    /// The app ended it.
    KEYSEAT_STATE_ENDED = 5,
}

/// A client for one server and access key, holding at most one session.
/// Opaque: made by `keyseat_client_new`, released by `keyseat_client_free`.
pub struct keyseat_client {
    client: Client,
    notifier: Arc<Notifier>,
    inner: Mutex<Inner>,
}

struct Inner {
    phase: Phase,
    session: Option<Session>,
    /// The id of the session ended last (for `keyseat_client_session_id`).
    last_id: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Starting,
    Running,
    Ended,
}

impl keyseat_client {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The handle behind a pointer the app passed.
///
/// # Safety
/// `client` is NULL or a pointer from `keyseat_client_new` not yet freed.
unsafe fn handle<'a>(client: *const keyseat_client) -> Result<&'a keyseat_client, Failure> {
    // SAFETY: the caller's promise: NULL (refused here) or a live handle,
    // which `keyseat_client_free` is documented not to race with.
    unsafe { client.as_ref() }
        .ok_or_else(|| Failure::new(keyseat_status::KEYSEAT_ERR_NULL_ARGUMENT, "client is NULL"))
}

/// The options the app passed, or the defaults for NULL.
///
/// # Safety
/// `options` is NULL or points to at least `options->size` readable bytes
/// that start with a `keyseat_options` of this or an earlier version.
unsafe fn read_options(options: *const keyseat_options) -> Result<keyseat_options, Failure> {
    // All fields zero (NULL pointers, no timeout) is a valid value: the
    // defaults.
    // SAFETY: every field is an integer or a raw pointer, for which zero
    // bytes are valid.
    let mut read: keyseat_options = unsafe { std::mem::zeroed() };
    read.size = std::mem::size_of::<keyseat_options>();
    if options.is_null() {
        return Ok(read);
    }
    // SAFETY: not NULL; every version starts with `size`.
    let size = unsafe { std::ptr::addr_of!((*options).size).read_unaligned() };
    let ours = std::mem::size_of::<keyseat_options>();
    if size < std::mem::size_of::<usize>() || size > ours {
        return Err(Failure::new(
            keyseat_status::KEYSEAT_ERR_INVALID_ARGUMENT,
            format!(
                "options->size is {size}: set it to sizeof(keyseat_options) ({ours} with this \
                 library's keyseat.h)"
            ),
        ));
    }
    // SAFETY: the caller's `size` readable bytes (at most ours, checked)
    // into our zeroed struct; fields beyond an older `size` keep their
    // defaults. The regions are distinct objects.
    unsafe {
        std::ptr::copy_nonoverlapping(
            options.cast::<u8>(),
            std::ptr::addr_of_mut!(read).cast::<u8>(),
            size,
        )
    };
    Ok(read)
}

/// Makes a client for `server_url` (`https://…`, or `http://` on a trusted
/// network) and `access_key`, and stores it in `*out`. The key's checksum
/// is checked here: a typo is `KEYSEAT_ERR_INVALID_KEY_FORMAT` at once,
/// with no request sent. `options` may be NULL (all defaults). Nothing is
/// sent to the server until `keyseat_client_start`.
///
/// On error `*out` is set to NULL (when `out` is not NULL).
///
/// Thread-safety: any thread. The strings are copied; they may be freed
/// when this returns.
///
/// # Safety
/// `server_url`, `access_key` and the strings in `options` are NULL or
/// NUL-terminated; `options` is NULL or a `keyseat_options` whose `size`
/// is set; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn keyseat_client_new(
    server_url: *const c_char,
    access_key: *const c_char,
    options: *const keyseat_options,
    out: *mut *mut keyseat_client,
) -> keyseat_status {
    // SAFETY: `out` is NULL or writable (the caller's promise).
    unsafe { set_optional(out, std::ptr::null_mut()) };
    guard("keyseat_client_new", || {
        if out.is_null() {
            return Err(Failure::new(
                keyseat_status::KEYSEAT_ERR_NULL_ARGUMENT,
                "out is NULL",
            ));
        }
        // SAFETY: NULL or NUL-terminated, per the caller; the texts are
        // copied into the client before this returns.
        let (url, key) = unsafe {
            (
                required(server_url, "server_url")?,
                required(access_key, "access_key")?,
            )
        };
        // SAFETY: as documented above.
        let options = unsafe { read_options(options) }?;
        // SAFETY: each NULL or NUL-terminated, per the caller.
        let (device_name, fingerprint, public_key, ca_file) = unsafe {
            (
                optional(options.device_name, "options->device_name")?,
                optional(options.fingerprint, "options->fingerprint")?,
                optional(options.public_key, "options->public_key")?,
                optional(options.ca_file, "options->ca_file")?,
            )
        };
        let mut client = Client::new(url, key)?;
        if let Some(name) = device_name {
            client = client.device_name(name);
        }
        if let Some(fingerprint) = fingerprint {
            client = client.fingerprint(fingerprint);
        }
        if let Some(public_key) = public_key {
            client = client.public_key(public_key)?;
        }
        if let Some(ca_file) = ca_file {
            client = client.ca_file(ca_file)?;
        }
        if options.timeout_ms > 0 {
            client = client.timeout(Duration::from_millis(options.timeout_ms.into()))?;
        }
        let handle = Box::new(keyseat_client {
            client,
            notifier: Arc::default(),
            inner: Mutex::new(Inner {
                phase: Phase::Idle,
                session: None,
                last_id: None,
            }),
        });
        // SAFETY: checked not NULL above; writable per the caller.
        unsafe { out.write(Box::into_raw(handle)) };
        Ok(())
    })
}

/// Sets the function called when the session is lost (`callback` NULL:
/// none), with `user_data` passed back to it; it applies to the live
/// session too. Set it before `keyseat_client_start` to hear of every
/// loss; `keyseat_client_state` tells one that happened before.
///
/// The callback runs on the client's heartbeat thread (see
/// `keyseat_lost_callback`), or, for a session lost before
/// `keyseat_client_start` returned, on the thread calling it. When this
/// returns, the previous callback is not running (unless this is called
/// from inside it) and is never called again.
///
/// Thread-safety: any thread; `callback` and `user_data` must be usable
/// from the heartbeat thread.
///
/// # Safety
/// `client` is NULL or a live handle; `callback` is NULL or a function of
/// the `keyseat_lost_callback` type.
#[no_mangle]
pub unsafe extern "C" fn keyseat_client_set_lost_callback(
    client: *const keyseat_client,
    callback: keyseat_lost_callback,
    user_data: *mut c_void,
) -> keyseat_status {
    guard("keyseat_client_set_lost_callback", || {
        // SAFETY: NULL or live, per the caller.
        let client = unsafe { handle(client) }?;
        client.notifier.set(callback, user_data);
        Ok(())
    })
}

/// Starts a session and its heartbeat thread: takes a seat on the server,
/// retrying transient failures with the same session id (the server
/// treats the tries as one start). Blocks for the round trips (up to
/// about three times the timeout). `*took_over` (if not NULL) is set to
/// whether starting here ended another device's session.
///
/// A client holds one session at a time: a start while one is live (or
/// another start runs) is `KEYSEAT_ERR_WRONG_STATE`; after an end or a
/// loss it starts a new session.
///
/// Thread-safety: any thread, and concurrently with the other functions
/// on the same client (except `keyseat_client_free`).
///
/// # Safety
/// `client` is NULL or a live handle; `took_over` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn keyseat_client_start(
    client: *const keyseat_client,
    took_over: *mut bool,
) -> keyseat_status {
    // SAFETY: NULL or writable, per the caller.
    unsafe { set_optional(took_over, false) };
    guard("keyseat_client_start", || {
        // SAFETY: NULL or live, per the caller.
        let handle = unsafe { handle(client) }?;
        let previous = {
            let mut inner = handle.lock();
            let live = inner.session.as_ref().is_some_and(Session::is_usable);
            if inner.phase == Phase::Starting || live {
                return Err(Failure::new(
                    keyseat_status::KEYSEAT_ERR_WRONG_STATE,
                    "a session is already live or starting: end it first",
                ));
            }
            inner.phase = Phase::Starting;
            if let Some(old) = &inner.session {
                inner.last_id = Some(old.id().to_owned());
            }
            inner.session.take()
        };
        // A lost session may still be live on the server (unreachable):
        // dropping it ends it there. Its callback is disarmed first.
        let generation = handle.notifier.disarm();
        drop(previous);
        let started = handle.client.start();
        let session = match started {
            Ok(session) => session,
            Err(e) => {
                handle.lock().phase = Phase::Idle;
                return Err(e.into());
            }
        };
        // SAFETY: NULL or writable, per the caller.
        unsafe { set_optional(took_over, session.info().previous_session_terminated) };
        // Outside the lock: a session already lost calls the hook here, at
        // once, and the callback may call back into this client.
        session.on_lost(Notifier::hook(handle.notifier.clone(), generation));
        let mut inner = handle.lock();
        inner.session = Some(session);
        inner.phase = Phase::Running;
        Ok(())
    })
}

/// Stores what the session is doing in `*state` and, when it is
/// `KEYSEAT_STATE_LOST`, why in `*reason` (else `KEYSEAT_LOST_NONE`;
/// `reason` may be NULL). Answers from memory, at once.
///
/// Thread-safety: any thread, concurrently with the other functions on
/// the same client (except `keyseat_client_free`); from the callback too.
///
/// # Safety
/// `client` is NULL or a live handle; `state` is NULL or writable;
/// `reason` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn keyseat_client_state(
    client: *const keyseat_client,
    state: *mut keyseat_state,
    reason: *mut keyseat_lost_reason,
) -> keyseat_status {
    guard("keyseat_client_state", || {
        // SAFETY: NULL or live, per the caller.
        let handle = unsafe { handle(client) }?;
        if state.is_null() {
            return Err(Failure::new(
                keyseat_status::KEYSEAT_ERR_NULL_ARGUMENT,
                "state is NULL",
            ));
        }
        let (now, why) = {
            let inner = handle.lock();
            match (&inner.session, inner.phase) {
                (_, Phase::Starting) => (keyseat_state::KEYSEAT_STATE_STARTING, None),
                (Some(session), _) => match session.state() {
                    SessionState::Active => (keyseat_state::KEYSEAT_STATE_ACTIVE, None),
                    SessionState::Retrying { .. } => (keyseat_state::KEYSEAT_STATE_RETRYING, None),
                    SessionState::Lost(r) => (keyseat_state::KEYSEAT_STATE_LOST, Some((&r).into())),
                    SessionState::Ended => (keyseat_state::KEYSEAT_STATE_ENDED, None),
                },
                (None, Phase::Ended) => (keyseat_state::KEYSEAT_STATE_ENDED, None),
                (None, _) => (keyseat_state::KEYSEAT_STATE_NOT_STARTED, None),
            }
        };
        // SAFETY: `state` checked not NULL, writable per the caller;
        // `reason` NULL or writable.
        unsafe {
            state.write(now);
            set_optional(
                reason,
                why.unwrap_or(keyseat_lost_reason::KEYSEAT_LOST_NONE),
            );
        }
        Ok(())
    })
}

/// Ends the session: stops its heartbeats at once, disarms its lost
/// callback (not running, never called after this returns, unless this is
/// called from inside it) and tells the server, blocking for that round
/// trip. `*was_live` (if not NULL) is set to whether the server still had
/// the session live (false if it had already ended, e.g. taken over).
/// With no session (never started, or ended already) it does nothing and
/// succeeds. A server that cannot be reached is
/// `KEYSEAT_ERR_UNREACHABLE` (the session is ended here all the same, and
/// the server expires it after its timeout).
///
/// Thread-safety: any thread, concurrently with the other functions on
/// the same client (except `keyseat_client_free`); from the callback too.
///
/// # Safety
/// `client` is NULL or a live handle; `was_live` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn keyseat_client_end(
    client: *const keyseat_client,
    was_live: *mut bool,
) -> keyseat_status {
    // SAFETY: NULL or writable, per the caller.
    unsafe { set_optional(was_live, false) };
    guard("keyseat_client_end", || {
        // SAFETY: NULL or live, per the caller.
        let handle = unsafe { handle(client) }?;
        let session = {
            let mut inner = handle.lock();
            let session = inner.session.take();
            if let Some(session) = &session {
                inner.phase = Phase::Ended;
                inner.last_id = Some(session.id().to_owned());
            }
            session
        };
        handle.notifier.disarm();
        if let Some(session) = session {
            let live = session.end()?;
            // SAFETY: NULL or writable, per the caller.
            unsafe { set_optional(was_live, live) };
        }
        Ok(())
    })
}

/// Writes the id of the client's session (the live one, or the last one
/// after an end or a loss) into `out` (at least 37 bytes: a UUID and a
/// NUL), as operators see it (`keyseat sessions list`, the dashboard).
/// With no session yet it is `KEYSEAT_ERR_WRONG_STATE`.
///
/// Thread-safety: any thread, concurrently with the other functions on
/// the same client (except `keyseat_client_free`); from the callback too.
///
/// # Safety
/// `client` is NULL or a live handle; `out` is NULL or has `out_len`
/// writable bytes.
#[no_mangle]
pub unsafe extern "C" fn keyseat_client_session_id(
    client: *const keyseat_client,
    out: *mut c_char,
    out_len: usize,
) -> keyseat_status {
    guard("keyseat_client_session_id", || {
        // SAFETY: NULL or live, per the caller.
        let handle = unsafe { handle(client) }?;
        let id = {
            let inner = handle.lock();
            inner
                .session
                .as_ref()
                .map(|s| s.id().to_owned())
                .or_else(|| inner.last_id.clone())
        };
        let id = id.ok_or_else(|| {
            Failure::new(
                keyseat_status::KEYSEAT_ERR_WRONG_STATE,
                "no session started yet",
            )
        })?;
        // SAFETY: NULL or `out_len` writable bytes, per the caller.
        unsafe { write_out(out, out_len, &id, "out") }
    })
}

/// Releases the client: a live session is ended on the server (waiting
/// at most 2 s for the answer), its callback disarmed as by
/// `keyseat_client_end`. NULL does nothing. The handle must not be used
/// after, nor be in use by another thread during this call.
///
/// The session's heartbeat thread is not joined: it exits by itself once
/// its call in flight returns (at once when the server answers the end;
/// at most the call timeout when it is unreachable). Do not unload the
/// library (`dlclose`, `NativeLibrary.Free`) while such a thread may run.
///
/// # Safety
/// `client` is NULL or a live handle from `keyseat_client_new`, freed only
/// once.
#[no_mangle]
pub unsafe extern "C" fn keyseat_client_free(client: *mut keyseat_client) -> keyseat_status {
    guard("keyseat_client_free", || {
        if client.is_null() {
            return Ok(());
        }
        // SAFETY: a pointer from Box::into_raw in keyseat_client_new, not
        // freed before and not used by another thread (the caller's
        // promise).
        let handle = unsafe { Box::from_raw(client) };
        handle.notifier.set(None, std::ptr::null_mut());
        handle.notifier.disarm();
        drop(handle);
        Ok(())
    })
}

/// Writes this machine's fingerprint for the application `app` (any
/// stable string of yours, e.g. "com.example.solver") into `out` (at least
/// 33 bytes: 32 hex characters and a NUL): the OS machine id hashed with
/// the app's name, so the server never sees the raw id. No machine id on
/// this system is `KEYSEAT_ERR_UNAVAILABLE`.
///
/// Thread-safety: any thread.
///
/// # Safety
/// `app` is NULL or NUL-terminated; `out` is NULL or has `out_len`
/// writable bytes.
#[no_mangle]
pub unsafe extern "C" fn keyseat_machine_fingerprint(
    app: *const c_char,
    out: *mut c_char,
    out_len: usize,
) -> keyseat_status {
    guard("keyseat_machine_fingerprint", || {
        // SAFETY: NULL or NUL-terminated, per the caller.
        let app = unsafe { required(app, "app") }?;
        let fingerprint = keyseat::client::machine_fingerprint(app).ok_or_else(|| {
            Failure::new(
                keyseat_status::KEYSEAT_ERR_UNAVAILABLE,
                "this system offers no machine id to fingerprint",
            )
        })?;
        // SAFETY: NULL or `out_len` writable bytes, per the caller.
        unsafe { write_out(out, out_len, &fingerprint, "out") }
    })
}
