//! Failure-counting rate limits per client address: a client that keeps
//! presenting unknown keys (or wrong admin tokens) is answered 429 with
//! `Retry-After` until its window passes, while every other client is
//! unaffected. Successful requests are never counted.
//!
//! A fixed one-minute window per address is enough to make guessing a
//! 190-bit key hopeless and costs one map entry per recent offender; the map
//! is pruned of stale windows when it grows.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use crate::clock::Timestamp;
use crate::error::{Error, Result};

const WINDOW_MS: i64 = 60_000;
/// Offenders tracked before stale windows are pruned.
const PRUNE_AT: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    start: i64,
    failures: u32,
}

/// Counts failures per address in one-minute windows.
#[derive(Debug)]
pub struct FailureLimiter {
    enabled: bool,
    per_minute: u32,
    windows: Mutex<HashMap<IpAddr, Window>>,
}

impl FailureLimiter {
    /// A limiter allowing `per_minute` failures; `enabled = false` allows all.
    pub fn new(enabled: bool, per_minute: u32) -> Self {
        FailureLimiter {
            enabled,
            per_minute: per_minute.max(1),
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn windows(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Window>> {
        // Counters are advisory; a poisoned map is still usable.
        self.windows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuses an address that used up its failures in the current window.
    pub fn check(&self, addr: Option<IpAddr>, now: Timestamp) -> Result<()> {
        let Some(addr) = addr.filter(|_| self.enabled) else {
            return Ok(());
        };
        if let Some(w) = self.windows().get(&addr) {
            let ends = w.start + WINDOW_MS;
            if w.failures >= self.per_minute && now.0 < ends {
                let retry_after_secs = u64::try_from((ends - now.0 + 999) / 1000).unwrap_or(1);
                return Err(Error::RateLimited {
                    retry_after_secs: retry_after_secs.max(1),
                });
            }
        }
        Ok(())
    }

    /// Counts one failure for an address.
    pub fn record_failure(&self, addr: Option<IpAddr>, now: Timestamp) {
        let Some(addr) = addr.filter(|_| self.enabled) else {
            return;
        };
        let mut windows = self.windows();
        if windows.len() >= PRUNE_AT {
            windows.retain(|_, w| now.0 < w.start + WINDOW_MS);
        }
        let w = windows.entry(addr).or_insert(Window {
            start: now.0,
            failures: 0,
        });
        if now.0 >= w.start + WINDOW_MS {
            *w = Window {
                start: now.0,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn blocks_after_the_limit_until_the_window_ends() {
        let l = FailureLimiter::new(true, 3);
        let t = Timestamp(1_000_000);
        for _ in 0..3 {
            assert!(l.check(ip(1), t).is_ok());
            l.record_failure(ip(1), t);
        }
        match l.check(ip(1), Timestamp(t.0 + 10_500)) {
            Err(Error::RateLimited { retry_after_secs }) => assert_eq!(retry_after_secs, 50),
            other => panic!("expected rate limit, got {other:?}"),
        }
        assert!(l.check(ip(2), t).is_ok(), "other clients are unaffected");
        assert!(l.check(ip(1), Timestamp(t.0 + 60_000)).is_ok());
    }

    #[test]
    fn disabled_limiter_allows_everything() {
        let l = FailureLimiter::new(false, 1);
        let t = Timestamp(0);
        for _ in 0..10 {
            l.record_failure(ip(1), t);
        }
        assert!(l.check(ip(1), t).is_ok());
    }
}
