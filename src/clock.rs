//! Time as the session rules see it: a millisecond timestamp and a clock
//! that can be injected.
//!
//! Every rule that depends on time takes `now` as an argument; the server
//! reads it from a [`Clock`] so tests can move time forward instead of
//! sleeping through a 60 s timeout.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Milliseconds since the Unix epoch, UTC. Stored as-is in the database so
/// comparisons there are plain integer comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Milliseconds since the epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// This instant plus whole seconds (saturating, so a huge configured
    /// duration can never wrap around into the past).
    pub fn plus_secs(self, secs: u64) -> Timestamp {
        let ms = i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000);
        Timestamp(self.0.saturating_add(ms))
    }

    /// This instant minus whole seconds (saturating).
    pub fn minus_secs(self, secs: u64) -> Timestamp {
        let ms = i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000);
        Timestamp(self.0.saturating_sub(ms))
    }

    /// Whole seconds from `earlier` to `self`, never negative.
    pub fn secs_since(self, earlier: Timestamp) -> u64 {
        u64::try_from((self.0 - earlier.0).max(0) / 1000).unwrap_or(0)
    }

    /// RFC 3339 in UTC, with milliseconds only when they are not zero.
    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(dt) => dt.format(&Rfc3339).unwrap_or_else(|_| self.0.to_string()),
            Err(_) => self.0.to_string(),
        }
    }

    /// The HTTP date form (RFC 9110's IMF-fixdate), e.g.
    /// `Sun, 06 Nov 1994 08:49:37 GMT`.
    pub fn to_http_date(self) -> String {
        let format = time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        );
        OffsetDateTime::from_unix_timestamp(self.0.div_euclid(1000))
            .ok()
            .and_then(|dt| dt.format(&format).ok())
            .unwrap_or_default()
    }

    /// Parses an RFC 3339 timestamp with any offset.
    pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
        let dt = OffsetDateTime::parse(text.trim(), &Rfc3339).ok()?;
        let ms = dt.unix_timestamp_nanos() / 1_000_000;
        i64::try_from(ms).ok().map(Timestamp)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

/// The way back from the serialised form (RFC 3339, milliseconds kept), or
/// plain milliseconds since the epoch: for the CLI's calls to the running
/// server, which carry timestamps.
impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Timestamp::parse_rfc3339(&text)
            .or_else(|| text.parse().ok().map(Timestamp))
            .ok_or_else(|| serde::de::Error::custom(format!("not a timestamp: {text}")))
    }
}

/// A stretch of time in which the process made no progress: it was stopped
/// (SIGSTOP, a debugger), its VM was paused or migrated, or the host starved
/// it. To the sessions it is an outage, like a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// The last moment the process was seen making progress.
    pub from: Timestamp,
    /// When it was seen again.
    pub to: Timestamp,
}

impl Gap {
    /// Its length in milliseconds.
    pub fn millis(self) -> i64 {
        self.to.0 - self.from.0
    }
}

/// Where the server reads the time. Implementations must be cheap: it is
/// read on every request.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;

    /// A gap in the process's progress seen since the last call, if any
    /// (each gap is returned once). Clocks that only move when told to have
    /// none.
    fn take_gap(&self) -> Option<Gap> {
        None
    }

    /// Whether this clock, rather than the database's, decides leases on
    /// an engine shared by several servers: true only for a clock that
    /// moves when told (tests), which must be the time for every rule.
    fn decides_leases(&self) -> bool {
        false
    }

    /// How many gaps this clock has seen so far, checking for one first.
    /// Cheap (no lock unless a gap is suspected), so a caller can compare
    /// it with the count it has applied on every request and take the gap
    /// (under its own lock) only when they differ.
    fn gaps_seen(&self) -> u64 {
        0
    }
}

/// The server's clock: a timeline that measures durations with the
/// monotonic clock and shows times close to the wall clock.
///
/// Why not the wall clock itself: a lease is a duration (the timeout since
/// the last heartbeat), and the wall clock can be stepped by NTP or an
/// operator at any moment. Stepped forward, every lease would end at once;
/// stepped back, time would stand still (it must never run backwards for
/// the liveness rules) and dead sessions would hold their seats. So the
/// timeline starts at the wall clock's time when the process starts and
/// then advances with the monotonic clock; when the wall clock is stepped,
/// the timeline drifts towards it by at most [`SLEW_PER_MILLE`] per mille
/// of elapsed time (a 30 s step is absorbed in 100 minutes) and never
/// jumps, so a lease measured on it is within 0.5% of its length.
///
/// It also watches the process's own progress: a thread notes the
/// monotonic time every [`PROGRESS_TICK`]; when the clock is read or the
/// thread runs again more than [`GAP_THRESHOLD`] after the last note, the
/// process was frozen, and [`Clock::take_gap`] reports it once.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

/// How far (per mille of elapsed time) the timeline may drift towards a
/// stepped wall clock.
pub const SLEW_PER_MILLE: i64 = 5;
/// How often the progress thread notes that the process is running.
pub const PROGRESS_TICK: Duration = Duration::from_millis(100);
/// A pause in progress longer than this is a gap (an outage).
pub const GAP_THRESHOLD: Duration = Duration::from_millis(1500);

/// Where the timeline starts: the monotonic clock's and the wall clock's
/// readings at the process's first reading.
struct Origin {
    mono: Instant,
    wall_us: i64,
}

/// The slew so far: what the progress thread has added to the timeline to
/// draw it towards a stepped wall clock (microseconds).
static SLEW_US: AtomicI64 = AtomicI64::new(0);
/// The latest time read, so the timeline never runs backwards (a slew back
/// holds it for at most a fraction of a millisecond).
static LATEST_US: AtomicI64 = AtomicI64::new(i64::MIN);

/// Microseconds since the origin at the last progress note (a copy of
/// `Progress::last_note`, readable without the lock).
static LAST_NOTE_US: AtomicI64 = AtomicI64::new(0);
/// Gaps recorded so far.
static GAPS_SEEN: AtomicU64 = AtomicU64::new(0);

struct Progress {
    /// Microseconds since the origin at the last note.
    last_note: i64,
    /// Microseconds since the origin at the last slew.
    last_slew: i64,
    /// A gap seen and not yet taken.
    pending: Option<Gap>,
    /// When a far-off wall clock was last warned about.
    last_warned: Option<i64>,
}

/// A wall clock further than this from the timeline is warned about.
const FAR_DRIFT_US: i64 = 60_000_000;
/// At most one such warning an hour.
const WARN_EVERY_US: i64 = 3_600_000_000;

fn wall_micros() -> i64 {
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    i64::try_from(nanos / 1_000).unwrap_or(i64::MAX)
}

fn origin() -> &'static Origin {
    static ORIGIN: OnceLock<Origin> = OnceLock::new();
    ORIGIN.get_or_init(|| Origin {
        mono: Instant::now(),
        wall_us: wall_micros(),
    })
}

/// Reads the timeline: (microseconds since the origin, the timeline's time
/// in microseconds since the epoch). Lock-free: it is read on every request.
fn read_timeline() -> (i64, i64) {
    let o = origin();
    let mono = i64::try_from(o.mono.elapsed().as_micros()).unwrap_or(i64::MAX);
    let time = o
        .wall_us
        .saturating_add(mono)
        .saturating_add(SLEW_US.load(Ordering::Acquire));
    let before = LATEST_US.fetch_max(time, Ordering::AcqRel);
    (mono, before.max(time))
}

/// How much of `drift` (wall clock minus timeline) may be slewed after
/// `elapsed` monotonic microseconds: at most [`SLEW_PER_MILLE`] of them.
fn slew_step(drift: i64, elapsed: i64) -> i64 {
    let bound = elapsed.max(0).saturating_mul(SLEW_PER_MILLE) / 1000;
    drift.clamp(-bound, bound)
}

fn progress() -> MutexGuard<'static, Progress> {
    static PROGRESS: OnceLock<Mutex<Progress>> = OnceLock::new();
    PROGRESS
        .get_or_init(|| {
            let (mono, _) = read_timeline();
            let started = std::thread::Builder::new()
                .name("keyseat-progress".into())
                .spawn(|| loop {
                    std::thread::sleep(PROGRESS_TICK);
                    drop(note_progress(true));
                });
            if let Err(e) = started {
                tracing::warn!(error = %e, "cannot start the progress thread; pauses of the process go unnoticed");
            }
            Mutex::new(Progress {
                last_note: mono,
                last_slew: mono,
                pending: None,
                last_warned: None,
            })
        })
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Notes that the process is making progress; records a gap when the last
/// note is too long ago. On the progress thread's `tick`, also slews the
/// timeline towards the wall clock. Returns the progress state, locked.
fn note_progress(tick: bool) -> MutexGuard<'static, Progress> {
    let mut p = progress();
    let (mono, time) = read_timeline();
    let paused = mono - p.last_note;
    let threshold = i64::try_from(GAP_THRESHOLD.as_micros()).unwrap_or(i64::MAX);
    if paused > threshold {
        let to = Timestamp(time / 1000);
        let from = Timestamp((time - paused) / 1000);
        // Two gaps not yet taken are one outage from the first's start.
        let from = p.pending.map_or(from, |g| g.from.min(from));
        p.pending = Some(Gap { from, to });
        // Counted before the note moves on: a reader that sees the new
        // note sees the count too.
        GAPS_SEEN.fetch_add(1, Ordering::SeqCst);
    }
    p.last_note = p.last_note.max(mono);
    LAST_NOTE_US.store(p.last_note, Ordering::SeqCst);
    if tick {
        let drift = wall_micros().saturating_sub(time);
        let step = slew_step(drift, mono - p.last_slew);
        SLEW_US.fetch_add(step, Ordering::AcqRel);
        p.last_slew = mono;
        if drift.abs() > FAR_DRIFT_US && p.last_warned.is_none_or(|at| mono - at > WARN_EVERY_US) {
            p.last_warned = Some(mono);
            tracing::warn!(
                drift_ms = drift / 1000,
                "the wall clock is {:.0} s from keyseat's clock (it was stepped); leases are \
                 unaffected, and keyseat's clock follows it by 0.5% of elapsed time; restart \
                 keyseat to follow it at once (a restart ends no session)",
                drift as f64 / 1e6
            );
        }
    }
    p
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp(read_timeline().1 / 1000)
    }

    fn take_gap(&self) -> Option<Gap> {
        note_progress(false).pending.take()
    }

    fn gaps_seen(&self) -> u64 {
        // The first call starts the progress thread.
        static WATCHING: std::sync::Once = std::sync::Once::new();
        WATCHING.call_once(|| drop(note_progress(false)));
        let (mono, _) = read_timeline();
        let threshold = i64::try_from(GAP_THRESHOLD.as_micros()).unwrap_or(i64::MAX);
        if mono - LAST_NOTE_US.load(Ordering::SeqCst) > threshold {
            drop(note_progress(false));
        }
        GAPS_SEEN.load(Ordering::SeqCst)
    }
}

/// A clock that only moves when told to: for tests of expiry and restarts.
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicI64,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            now: AtomicI64::new(start.0),
        }
    }

    /// A clock standing at the current wall-clock time.
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now())
    }

    /// Moves the clock forward by whole seconds.
    pub fn advance_secs(&self, secs: u64) {
        self.advance_millis(i64::try_from(secs).unwrap_or(i64::MAX / 1000) * 1000);
    }

    /// Moves the clock forward by milliseconds.
    pub fn advance_millis(&self, ms: i64) {
        self.now.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the clock to an instant.
    pub fn set(&self, at: Timestamp) {
        self.now.store(at.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.now.load(Ordering::SeqCst))
    }

    fn decides_leases(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_whole_seconds_without_fraction_and_millis_with() {
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(Timestamp(1_500).to_rfc3339(), "1970-01-01T00:00:01.5Z");
    }

    #[test]
    fn parses_what_it_formats_and_other_offsets() {
        let t = Timestamp(1_796_000_000_123);
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
        assert_eq!(
            Timestamp::parse_rfc3339("1970-01-01T01:00:00+01:00"),
            Some(Timestamp(0))
        );
        assert_eq!(Timestamp::parse_rfc3339("yesterday"), None);
    }

    /// A lease is a duration: a wall clock stepped forward or back moves
    /// the timeline by at most half a per cent of the time that passed.
    #[test]
    fn the_timeline_slews_towards_a_stepped_wall_clock_by_half_a_per_cent() {
        // One progress tick (100 ms) after a 30 s step ahead: 0.5 ms on.
        assert_eq!(slew_step(30_000_000, 100_000), 500);
        // Stepped 60 s back: 0.5 ms back per tick, never more.
        assert_eq!(slew_step(-60_000_000, 100_000), -500);
        // A drift within the bound is absorbed whole.
        assert_eq!(slew_step(120, 100_000), 120);
        // No time passed, no slew.
        assert_eq!(slew_step(60_000_000, 0), 0);
        assert_eq!(slew_step(60_000_000, -5), 0);
        // A 30 s step is absorbed in 100 minutes of ticks.
        let (mut drift, mut ticks) = (30_000_000i64, 0);
        while drift > 0 {
            drift -= slew_step(drift, 100_000);
            ticks += 1;
        }
        assert_eq!(ticks, 60_000);
    }

    #[test]
    fn the_system_clock_never_runs_backwards() {
        let a = SystemClock.now();
        let b = SystemClock.now();
        assert!(b >= a);
        let wall = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        assert!(
            (i128::from(b.0) - wall).abs() < 5_000,
            "close to the wall clock"
        );
    }

    #[test]
    fn formats_the_http_date() {
        assert_eq!(
            Timestamp(784_111_777_000).to_http_date(),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Timestamp(i64::MAX).plus_secs(10), Timestamp(i64::MAX));
        assert_eq!(Timestamp(5_000).secs_since(Timestamp(9_000)), 0);
        assert_eq!(Timestamp(9_999).secs_since(Timestamp(5_000)), 4);
    }
}
