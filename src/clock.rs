//! Time as the session rules see it: a millisecond timestamp and a clock
//! that can be injected.
//!
//! Every rule that depends on time takes `now` as an argument; the server
//! reads it from a [`Clock`] so tests can move time forward instead of
//! sleeping through a 60 s timeout.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};

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

/// Where the server reads the time. Implementations must be cheap: it is
/// read on every request.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

/// The latest time the system clock has shown this process.
static LATEST: AtomicI64 = AtomicI64::new(i64::MIN);

impl Clock for SystemClock {
    /// Wall-clock time that never goes backwards within the process: the
    /// liveness rules rely on a heartbeat never seeing an earlier time than
    /// a decision made before it, so an NTP step back holds time still
    /// until the wall clock catches up.
    fn now(&self) -> Timestamp {
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
        let wall = i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX);
        let previous = LATEST.fetch_max(wall, Ordering::SeqCst);
        Timestamp(previous.max(wall))
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

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Timestamp(i64::MAX).plus_secs(10), Timestamp(i64::MAX));
        assert_eq!(Timestamp(5_000).secs_since(Timestamp(9_000)), 0);
        assert_eq!(Timestamp(9_999).secs_since(Timestamp(5_000)), 4);
    }
}
