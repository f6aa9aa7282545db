//! A held seat: the heartbeat thread that keeps the lease, retries what
//! is transient while the lease lasts, and reports the end of the session
//! (state, callbacks, `wait_lost`) the moment it learns it.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::Rng;

use super::{
    Api, ApiError, ClientError, EventHook, LostHook, LostReason, SessionEvent, SessionState,
    StartInfo,
};

/// How long dropping a session waits for its `end` call.
const DROP_END_TIMEOUT: Duration = Duration::from_secs(2);
/// First retry delay after a failed heartbeat; doubles per failure.
pub(super) const FIRST_RETRY: Duration = Duration::from_millis(500);

pub(super) fn retry_after(e: &ApiError) -> Option<Duration> {
    match e {
        ApiError::Server { retry_after, .. } => *retry_after,
        ApiError::Transport(_) | ApiError::Forged { .. } | ApiError::Certificate(_) => None,
    }
}

/// Exponential backoff with "equal jitter" (half fixed, half random), capped,
/// and never shorter than a server's `Retry-After`.
pub(super) fn backoff(attempt: u32, cap: Duration, retry_after: Option<Duration>) -> Duration {
    let exp = FIRST_RETRY.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let base = exp.min(cap);
    let half = base / 2;
    let jitter = rand::thread_rng().gen_range(0..=half.as_millis() as u64);
    let delay = half + Duration::from_millis(jitter);
    retry_after.map_or(delay, |r| delay.max(r))
}

struct Shared {
    api: Api,
    access_key: String,
    info: StartInfo,
    /// Whether heartbeats ask the server to hold them (`wait_seconds`).
    waiting: bool,
    inner: Mutex<Inner>,
    changed: Condvar,
    on_event: Option<EventHook>,
    /// Held while the loss's hooks run, so an `end()` from another thread
    /// returns only after them (never a lost callback after `end()`); with
    /// the thread that runs them, so an `end()` from inside a hook does
    /// not wait for itself.
    hooks_running: Mutex<()>,
    hooks_thread: Mutex<Option<std::thread::ThreadId>>,
}

struct Inner {
    state: SessionState,
    stop: bool,
    interval: Duration,
    lease_deadline: Instant,
    on_lost: Option<LostHook>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the app's event hook. A panic in it is the app's bug: it is
    /// caught here so the heartbeats go on (an uncaught one would end the
    /// heartbeat thread and leave the session looking usable forever).
    fn emit(&self, event: &SessionEvent) {
        if let Some(hook) = &self.on_event {
            app_hook(|| hook(event));
        }
    }

    /// Records a loss (once) unless the app already ended the session.
    fn lose(&self, reason: LostReason) {
        let _running = self.hooks_running.lock().unwrap_or_else(|p| p.into_inner());
        let hook = {
            let mut inner = self.lock();
            if inner.stop || matches!(inner.state, SessionState::Lost(_) | SessionState::Ended) {
                return;
            }
            inner.state = SessionState::Lost(reason.clone());
            inner.stop = true;
            inner.on_lost.take()
        };
        *self.hooks_thread.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(std::thread::current().id());
        self.changed.notify_all();
        self.emit(&SessionEvent::Lost(reason.clone()));
        if let Some(hook) = hook {
            app_hook(|| hook(reason));
        }
        *self.hooks_thread.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Waits for a loss's hooks running on another thread to return.
    fn after_hooks(&self) {
        let current = std::thread::current().id();
        let inside = *self.hooks_thread.lock().unwrap_or_else(|p| p.into_inner()) == Some(current);
        if !inside {
            drop(self.hooks_running.lock().unwrap_or_else(|p| p.into_inner()));
        }
    }
}

/// Runs an app's hook; a panic in it is reported on stderr by the panic
/// hook as usual, and goes no further.
fn app_hook(hook: impl FnOnce()) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(hook));
}

/// The heartbeat thread: sleeps an interval (woken at once by a stop),
/// heartbeats, retries transient failures within the lease, and reports a
/// terminal answer once.
fn heartbeat_loop(shared: Arc<Shared>) {
    let mut failures: u32 = 0;
    let mut wait = shared.lock().interval;
    if shared.waiting && held_for(wait) > 0 {
        // Held from the start, so a takeover right after it is told too.
        wait = Duration::ZERO;
    }
    let mut last_failure: Option<ApiError> = None;
    // The latest forged answer since the last trusted one: with it, a lease
    // that runs out is lost as untrusted even if the very last attempt got
    // no answer at all (its budget is the little lease left, so it often
    // times out).
    let mut forged: Option<ApiError> = None;
    loop {
        {
            let inner = shared.lock();
            let (inner, _) = shared
                .changed
                .wait_timeout_while(inner, wait, |i| !i.stop)
                .unwrap_or_else(|p| p.into_inner());
            if inner.stop {
                return;
            }
            if failures > 0 && Instant::now() >= inner.lease_deadline {
                drop(inner);
                shared.lose(lost_after(last_failure.take(), forged.take()));
                return;
            }
        }
        let sent_at = Instant::now();
        let (lease_left, interval) = {
            let inner = shared.lock();
            (
                inner.lease_deadline.saturating_duration_since(sent_at),
                inner.interval,
            )
        };
        // A call never outlives the lease: past it the session is lost anyway.
        let budget = lease_left.max(Duration::from_millis(500));
        // Held by the server a little under the interval, so a takeover is
        // told at once; never while retrying, when every second of the
        // lease counts.
        let hold = if shared.waiting && failures == 0 {
            hold_for(interval, lease_left, shared.api.timeout())
        } else {
            0
        };
        let answer = if hold == 0 {
            shared
                .api
                .heartbeat(&shared.access_key, &shared.info.session_id, Some(budget))
        } else {
            shared
                .api
                .heartbeat_held(&shared.access_key, &shared.info.session_id, hold)
        };
        match answer {
            Ok(body) => {
                let interval = Duration::from_secs(body.heartbeat_interval_seconds.max(1));
                {
                    let mut inner = shared.lock();
                    if inner.stop {
                        return;
                    }
                    inner.lease_deadline = sent_at + shared.info.session_timeout;
                    inner.interval = interval;
                    inner.state = SessionState::Active;
                }
                if failures > 0 {
                    shared.emit(&SessionEvent::Recovered {
                        failed_attempts: failures,
                    });
                }
                failures = 0;
                forged = None;
                wait = next_wait(hold, sent_at.elapsed(), interval);
            }
            Err(e) if e.is_transient() => {
                failures += 1;
                last_failure = Some(e.clone());
                if matches!(e, ApiError::Forged { .. }) {
                    forged = Some(e.clone());
                }
                let (lease_left, interval) = {
                    let mut inner = shared.lock();
                    if inner.stop {
                        return;
                    }
                    let left = inner
                        .lease_deadline
                        .saturating_duration_since(Instant::now());
                    inner.state = SessionState::Retrying {
                        failed_attempts: failures,
                        lease_left: left,
                    };
                    (left, inner.interval)
                };
                if lease_left.is_zero() {
                    shared.lose(lost_after(Some(e), forged.take()));
                    return;
                }
                shared.emit(&SessionEvent::HeartbeatFailed {
                    attempt: failures,
                    error: e.to_string(),
                    lease_left,
                });
                // Retry sooner than the interval, but never past the lease.
                wait = backoff(failures, interval, retry_after(&e)).min(lease_left);
            }
            Err(ApiError::Server {
                code,
                message,
                error,
                ..
            }) => {
                shared.lose(LostReason::from_refusal(&code, &message, &error));
                return;
            }
            // Lost at once, not retried: a refused certificate does not heal
            // within a lease, and the app should say why now, not in a minute
            // as "unreachable".
            Err(ApiError::Certificate(problem)) => {
                shared.lose(LostReason::Certificate(problem));
                return;
            }
            Err(ApiError::Transport(_) | ApiError::Forged { .. }) => {
                unreachable!("transport errors and forged answers are transient")
            }
        }
    }
}

/// How long to ask the server to hold a heartbeat, in seconds: a little
/// under the interval (a sixth of it, at least a second, is left for the
/// network), 0 for an interval too short to hold.
pub(super) fn held_for(interval: Duration) -> u64 {
    let secs = interval.as_secs();
    secs.saturating_sub((secs / 6).max(1))
}

/// How long to hold the next heartbeat: [`held_for`] the interval, but
/// leaving room in the lease for the held call's own timeout and one
/// retry (a held heartbeat silently dropped fails only after the hold plus
/// the call's timeout), and 0 (a plain heartbeat, then an interval) when
/// that room is under half a full hold, so a short lease never turns into
/// a request every second. With the defaults (30 s interval, 60 s lease,
/// 10 s calls) holds alternate 25 s and 15 s.
pub(super) fn hold_for(interval: Duration, lease_left: Duration, call_timeout: Duration) -> u64 {
    let full = held_for(interval);
    let room = lease_left.saturating_sub(call_timeout * 2).as_secs();
    let hold = full.min(room);
    if hold * 2 < full {
        0
    } else {
        hold
    }
}

/// The pause before the next heartbeat after a 200: none after one the
/// server held (the next is held in turn), an interval after one answered
/// at once (an older keyseat ignores `wait_seconds`), never a tight loop.
pub(super) fn next_wait(hold: u64, took: Duration, interval: Duration) -> Duration {
    if hold > 0 && took >= Duration::from_secs(hold) / 2 {
        Duration::ZERO
    } else {
        interval
    }
}

/// Why a session whose lease ran out between failed heartbeats is lost:
/// untrusted when an answer since the last trusted one failed the
/// signature check (`forged`), unreachable when none came at all.
fn lost_after(last: Option<ApiError>, forged: Option<ApiError>) -> LostReason {
    if let Some(forged) = forged {
        return LostReason::Untrusted {
            last_error: forged.to_string(),
        };
    }
    match last {
        Some(forged @ ApiError::Forged { .. }) => LostReason::Untrusted {
            last_error: forged.to_string(),
        },
        Some(e) => LostReason::Unreachable {
            last_error: e.to_string(),
        },
        None => LostReason::Unreachable {
            last_error: "no answer".to_owned(),
        },
    }
}

/// A live session. Ends itself on the server when dropped.
pub struct Session {
    shared: Arc<Shared>,
    finished: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("session_id", &self.shared.info.session_id)
            .field("fence", &self.shared.info.fence)
            .field("state", &self.state())
            .finish()
    }
}

impl Session {
    /// Holds the seat a start took: the heartbeat thread starts at once.
    pub(super) fn begin(
        api: Api,
        access_key: String,
        info: StartInfo,
        on_event: Option<EventHook>,
        waiting: bool,
    ) -> Result<Session, ClientError> {
        let shared = Arc::new(Shared {
            api,
            access_key,
            info: info.clone(),
            waiting,
            inner: Mutex::new(Inner {
                state: SessionState::Active,
                stop: false,
                interval: info.heartbeat_interval,
                lease_deadline: Instant::now() + info.session_timeout,
                on_lost: None,
            }),
            changed: Condvar::new(),
            on_event,
            hooks_running: Mutex::new(()),
            hooks_thread: Mutex::new(None),
        });
        let worker = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("keyseat-heartbeat".into())
            .spawn(move || heartbeat_loop(worker));
        if let Err(e) = spawned {
            // The seat was taken: give it back rather than leave it to
            // the timeout.
            let (api, info) = (&shared.api, &shared.info);
            let _ = api.end(&shared.access_key, &info.session_id, Some(DROP_END_TIMEOUT));
            return Err(ClientError::Config(format!(
                "cannot start the heartbeat thread: {e}"
            )));
        }
        Ok(Session {
            shared,
            finished: false,
        })
    }

    /// What the server said at the start.
    pub fn info(&self) -> &StartInfo {
        &self.shared.info
    }

    /// The session id.
    pub fn id(&self) -> &str {
        &self.shared.info.session_id
    }

    /// The fence (strictly increasing per key).
    pub fn fence(&self) -> i64 {
        self.shared.info.fence
    }

    /// The state now.
    pub fn state(&self) -> SessionState {
        self.shared.lock().state.clone()
    }

    /// Whether licensed work may continue (active, or retrying within the
    /// lease).
    pub fn is_usable(&self) -> bool {
        matches!(
            self.state(),
            SessionState::Active | SessionState::Retrying { .. }
        )
    }

    /// Calls `hook` once, from the heartbeat thread, when the session is
    /// lost (at once, on this thread, if it already is). Not called when the
    /// app ends the session itself.
    pub fn on_lost(&self, hook: impl FnOnce(LostReason) + Send + 'static) {
        let already = {
            let mut inner = self.shared.lock();
            match &inner.state {
                SessionState::Lost(reason) => Some(reason.clone()),
                _ => {
                    inner.on_lost = Some(Box::new(hook));
                    return;
                }
            }
        };
        if let Some(reason) = already {
            hook(reason);
        }
    }

    /// Blocks until the session is lost (returning why), the app ends it
    /// (`None`), or `timeout` passes (`None`; wait forever with `None`).
    pub fn wait_lost(&self, timeout: Option<Duration>) -> Option<LostReason> {
        let done = |i: &mut Inner| !matches!(i.state, SessionState::Lost(_) | SessionState::Ended);
        let inner = self.shared.lock();
        let inner = match timeout {
            Some(t) => {
                self.shared
                    .changed
                    .wait_timeout_while(inner, t, done)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
            None => self
                .shared
                .changed
                .wait_while(inner, done)
                .unwrap_or_else(|p| p.into_inner()),
        };
        match &inner.state {
            SessionState::Lost(reason) => Some(reason.clone()),
            _ => None,
        }
    }

    /// Ends the session: stops the heartbeats at once and tells the server.
    /// Returns whether the server still had it live (`false` if it had
    /// already ended, e.g. superseded).
    pub fn end(mut self) -> Result<bool, ClientError> {
        self.finished = true;
        self.finish(None)
    }

    fn finish(&self, timeout: Option<Duration>) -> Result<bool, ClientError> {
        let was_lost = {
            let mut inner = self.shared.lock();
            let lost = matches!(inner.state, SessionState::Lost(_));
            let ended = matches!(inner.state, SessionState::Ended);
            inner.stop = true;
            if !lost {
                inner.state = SessionState::Ended;
            }
            if ended {
                return Ok(false);
            }
            lost
        };
        self.shared.changed.notify_all();
        // A loss found at the same moment has its hooks run before this
        // returns: none fires after `end()`.
        self.shared.after_hooks();
        // A lost session may still be live on the server (unreachable):
        // ending it frees the seat as soon as the server is back.
        let result = self.shared.api.end(
            &self.shared.access_key,
            &self.shared.info.session_id,
            timeout,
        );
        match result {
            Ok(body) => Ok(body.ended),
            Err(_) if was_lost => Ok(false),
            Err(ApiError::Server { code, .. })
                if code.starts_with("key_")
                    || code == "invalid_key"
                    || code == "session_not_found" =>
            {
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.finish(Some(DROP_END_TIMEOUT));
        }
    }
}
