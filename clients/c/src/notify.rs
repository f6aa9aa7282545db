//! The lost callback: which C function to call, and the promise the API
//! makes about it. The Rust client calls a session's `on_lost` hook from
//! its heartbeat thread after releasing its own lock, so a hook could
//! still be on its way while the app ends the session and frees what
//! `user_data` points to. The [`Notifier`] closes that gap: ending a
//! session disarms its hook and waits for one already running (unless
//! the end comes from inside the callback itself), so after
//! `keyseat_client_end`, `keyseat_client_free` or
//! `keyseat_client_set_lost_callback` returns, an old callback is neither
//! running nor called.

use std::cell::Cell;
use std::ffi::{c_char, c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Condvar, Mutex, MutexGuard};

use keyseat::client::LostReason;

use crate::status::c_text;

/// Why a session is over.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum keyseat_lost_reason {
    /// Not lost (the session is live, ended by the app, or not started).
    KEYSEAT_LOST_NONE = 0,
    /// Another device started with the same key and took this seat; the
    /// callback's `other_device` is its name when it gave one.
    KEYSEAT_LOST_SUPERSEDED = 1,
    /// The server had no heartbeat from this device for a whole timeout.
    KEYSEAT_LOST_EXPIRED = 2,
    /// Ended by another call with this session's id (another process).
    KEYSEAT_LOST_ENDED_ELSEWHERE = 3,
    /// An administrator ended the session.
    KEYSEAT_LOST_REVOKED = 4,
    /// The key was revoked, suspended, expired or is unknown.
    KEYSEAT_LOST_KEY_REFUSED = 5,
    /// The server does not know the session.
    KEYSEAT_LOST_NOT_FOUND = 6,
    /// No answer from the server until the lease it granted ran out.
    KEYSEAT_LOST_UNREACHABLE = 7,
    /// Only answers failing the signature check until the lease ran out.
    KEYSEAT_LOST_UNTRUSTED = 8,
    /// A heartbeat's TLS handshake refused the server's certificate.
    KEYSEAT_LOST_CERTIFICATE = 9,
    /// Another refusal the client does not expect.
    KEYSEAT_LOST_REJECTED = 10,
}

impl From<&LostReason> for keyseat_lost_reason {
    fn from(reason: &LostReason) -> Self {
        use keyseat_lost_reason::*;
        match reason {
            LostReason::Superseded { .. } => KEYSEAT_LOST_SUPERSEDED,
            LostReason::Expired => KEYSEAT_LOST_EXPIRED,
            LostReason::Ended => KEYSEAT_LOST_ENDED_ELSEWHERE,
            LostReason::Revoked => KEYSEAT_LOST_REVOKED,
            LostReason::KeyRefused { .. } => KEYSEAT_LOST_KEY_REFUSED,
            LostReason::NotFound => KEYSEAT_LOST_NOT_FOUND,
            LostReason::Unreachable { .. } => KEYSEAT_LOST_UNREACHABLE,
            LostReason::Untrusted { .. } => KEYSEAT_LOST_UNTRUSTED,
            LostReason::Certificate(_) => KEYSEAT_LOST_CERTIFICATE,
            LostReason::Rejected { .. } => KEYSEAT_LOST_REJECTED,
        }
    }
}

/// Called once when a session is lost (not when the app ends it), from the
/// client's heartbeat thread: hand the news to your UI thread and return
/// quickly. `reason` says why; `other_device` is the name of the device
/// that took the seat (`KEYSEAT_LOST_SUPERSEDED` when it gave one), else
/// NULL; `message` is a sentence for a log or a dialog. Both strings are
/// UTF-8 and valid only during the call. `user_data` is what was passed to
/// `keyseat_client_set_lost_callback`. The callback may call any
/// `keyseat_*` function, including `keyseat_client_end` and
/// `keyseat_client_free` on its own client (not using the client after
/// freeing it); it must not unwind (no C++ exception, no longjmp) out.
pub type keyseat_lost_callback = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        reason: keyseat_lost_reason,
        other_device: *const c_char,
        message: *const c_char,
    ),
>;

#[derive(Clone, Copy)]
struct Callback {
    function: unsafe extern "C" fn(*mut c_void, keyseat_lost_reason, *const c_char, *const c_char),
    user_data: *mut c_void,
}

// SAFETY: `user_data` is only handed back to the app's callback, never
// dereferenced here; the documented contract of
// `keyseat_client_set_lost_callback` is that the callback and its
// `user_data` may be used from the client's heartbeat thread.
unsafe impl Send for Callback {}

struct Slot {
    callback: Option<Callback>,
    /// Sessions started in an older generation are disarmed.
    generation: u64,
    /// Callbacks running now (on any thread).
    running: u32,
}

thread_local! {
    /// Callbacks running on this thread (more than one when a callback
    /// starts a session that is lost at once). A plain `Cell` without a
    /// destructor: no allocation on the app's threads, unlike
    /// `std::thread::current()` on a thread Rust did not start.
    static IN_CALLBACK: Cell<u32> = const { Cell::new(0) };
}

/// The client's lost callback and the sessions allowed to call it.
pub struct Notifier {
    slot: Mutex<Slot>,
    idle: Condvar,
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier {
            slot: Mutex::new(Slot {
                callback: None,
                generation: 0,
                running: 0,
            }),
            idle: Condvar::new(),
        }
    }
}

impl Notifier {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until no callback runs but this thread's own; returns the
    /// lock.
    fn quiet(&self) -> MutexGuard<'_, Slot> {
        let mine = IN_CALLBACK.try_with(Cell::get).unwrap_or(0);
        let slot = self.lock();
        self.idle
            .wait_while(slot, |s| s.running > mine)
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Disarms every session started so far; returns the next session's
    /// generation. A callback running on another thread has returned when
    /// this does.
    pub fn disarm(&self) -> u64 {
        let mut slot = self.quiet();
        slot.generation += 1;
        slot.generation
    }

    /// Replaces the callback (for the live session too).
    pub fn set(&self, function: keyseat_lost_callback, user_data: *mut c_void) {
        let mut slot = self.quiet();
        slot.callback = function.map(|function| Callback {
            function,
            user_data,
        });
    }

    /// The hook for the session of `generation`.
    pub fn hook(
        notifier: std::sync::Arc<Notifier>,
        generation: u64,
    ) -> impl FnOnce(LostReason) + Send + 'static {
        move |reason| {
            // Nothing may unwind out of the heartbeat thread's hook either.
            let _ = catch_unwind(AssertUnwindSafe(|| notifier.tell(generation, &reason)));
        }
    }

    fn tell(&self, generation: u64, reason: &LostReason) {
        let callback = {
            let mut slot = self.lock();
            match slot.callback {
                Some(callback) if slot.generation == generation => {
                    slot.running += 1;
                    callback
                }
                _ => return,
            }
        };
        let other: Option<CString> = match reason {
            LostReason::Superseded {
                by_device: Some(name),
                ..
            } => Some(c_text(name)),
            _ => None,
        };
        let message = c_text(&reason.to_string());
        // Counts the call out even if it unwinds (it must not).
        struct Done<'a>(&'a Notifier);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                let _ = IN_CALLBACK.try_with(|n| n.set(n.get().saturating_sub(1)));
                self.0.lock().running -= 1;
                self.0.idle.notify_all();
            }
        }
        let _ = IN_CALLBACK.try_with(|n| n.set(n.get() + 1));
        let _done = Done(self);
        // SAFETY: the app gave this function and user_data to
        // keyseat_client_set_lost_callback for this use; both strings are
        // NUL-terminated and outlive the call, as documented.
        unsafe {
            (callback.function)(
                callback.user_data,
                reason.into(),
                other.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
                message.as_ptr(),
            )
        };
    }
}
