//! Failure-counting rate limits per client address: a client that keeps
//! presenting unknown keys (or wrong admin tokens) is answered 429 with
//! `Retry-After` until its window passes, while every other client is
//! unaffected. Successful requests are never counted.
//!
//! A fixed one-minute window per address is enough to make guessing a
//! 190-bit key hopeless and costs one map entry per recent offender; the map
//! is pruned of stale windows when it grows.
//!
//! The limit slows guessing; it must not lock out the devices that share an
//! address with a guesser (an office behind one NAT). So the limiter also
//! remembers which keys each address has *proven*: a key whose lookup from
//! that address found it (any answer but `invalid_key`). An address over its
//! limit is still served for those keys, and for no others: a key it has not
//! proven gets the same 429, with no lookup, whether it exists or not, so a
//! guesser learns nothing and is slowed exactly as before.
//!
//! Why not `governor`: its keyed limiters consume a cell on every check,
//! with no way to ask "is this address over?" without spending, while this
//! limit counts only failures (checked before the lookup, charged after it
//! fails); and it runs on its own clock, while every limit here takes the
//! server's injected clock so tests move time instead of sleeping.

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

/// The address a failure is counted against: IPv6 clients by their /64
/// (one subscriber's block, which they can cycle through freely), IPv4
/// addresses as they are.
pub(crate) fn bucket_of(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        },
        v4 => v4,
    }
}

/// How long a key stays proven for an address after its last successful
/// lookup from there. Far longer than any heartbeat interval a live device
/// uses, so a device heartbeating keeps its key proven for as long as it
/// runs, and one that restarts its app after lunch is still known.
const PROVEN_FOR_MS: i64 = 6 * 3_600_000;
/// Proven (address, key) pairs kept at most; past it, new pairs are not
/// remembered (those devices fall back to the plain limit) until old ones
/// age out. About 40 bytes each: 40 MB at the cap.
const MAX_PROVEN: usize = 1_000_000;
/// A proven pair is rewritten at most this often (the map is touched on
/// every heartbeat, so most touches only read).
const PROVEN_REFRESH_MS: i64 = 60_000;

/// Counts failures per address in one-minute windows, and remembers the
/// keys each address has proven.
#[derive(Debug)]
pub struct FailureLimiter {
    enabled: bool,
    per_minute: u32,
    windows: Mutex<HashMap<IpAddr, Window>>,
    proven: Mutex<Proven>,
}

/// (address bucket, key tag) -> when the key last passed a lookup from there.
#[derive(Debug)]
struct Proven {
    at: HashMap<(IpAddr, u64), i64>,
    /// Size at which stale pairs are next dropped (doubles with the live
    /// set, so pruning costs amortised O(1) per insert; never above the
    /// cap, so a full map is still pruned).
    prune_at: usize,
    /// When it was last pruned: a map full of live pairs is pruned at most
    /// once a minute, not on every insert.
    pruned_at: i64,
}

/// The smallest size at which proven pairs are pruned.
const PRUNE_PROVEN_AT: usize = 10_000;

impl FailureLimiter {
    /// A limiter allowing `per_minute` failures; `enabled = false` allows all.
    pub fn new(enabled: bool, per_minute: u32) -> Self {
        FailureLimiter {
            enabled,
            per_minute: per_minute.max(1),
            windows: Mutex::new(HashMap::new()),
            proven: Mutex::new(Proven {
                at: HashMap::new(),
                prune_at: PRUNE_PROVEN_AT,
                pruned_at: i64::MIN,
            }),
        }
    }

    fn proven(&self) -> std::sync::MutexGuard<'_, Proven> {
        self.proven.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuses an address over its limit unless it has proven this key
    /// (`tag`, a stable 64-bit digest of it). Costs the same whether the
    /// key exists or not: no lookup happens here.
    pub fn check_key(&self, addr: Option<IpAddr>, tag: u64, now: Timestamp) -> Result<()> {
        let refused = self.check(addr, now);
        if refused.is_ok() {
            return refused;
        }
        let Some(bucket) = addr.map(bucket_of) else {
            return refused;
        };
        match self.proven().at.get(&(bucket, tag)) {
            Some(&at) if now.0 - at < PROVEN_FOR_MS => Ok(()),
            _ => refused,
        }
    }

    /// Records that a lookup of key `tag` from `addr` found the key, so the
    /// failure limit never refuses it from there.
    pub fn key_proven(&self, addr: Option<IpAddr>, tag: u64, now: Timestamp) {
        let Some(bucket) = addr.filter(|_| self.enabled).map(bucket_of) else {
            return;
        };
        let mut proven = self.proven();
        if let Some(at) = proven.at.get_mut(&(bucket, tag)) {
            if now.0 - *at >= PROVEN_REFRESH_MS {
                *at = now.0;
            }
            return;
        }
        if proven.at.len() >= proven.prune_at && now.0.saturating_sub(proven.pruned_at) >= 60_000 {
            proven.at.retain(|_, at| now.0 - *at < PROVEN_FOR_MS);
            proven.prune_at = (proven.at.len() * 2).clamp(PRUNE_PROVEN_AT, MAX_PROVEN);
            proven.pruned_at = now.0;
        }
        if proven.at.len() < MAX_PROVEN {
            proven.at.insert((bucket, tag), now.0);
        }
    }

    fn windows(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Window>> {
        // Counters are advisory; a poisoned map is still usable.
        self.windows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuses an address that used up its failures in the current window.
    pub fn check(&self, addr: Option<IpAddr>, now: Timestamp) -> Result<()> {
        let Some(addr) = addr.filter(|_| self.enabled).map(bucket_of) else {
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
        let Some(addr) = addr.filter(|_| self.enabled).map(bucket_of) else {
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

/// Starts per access key: a token bucket per key holding `per_minute`
/// starts and refilled evenly over a minute. A device that restarts its app
/// a few times never notices; two devices taking a seat from each other in a
/// loop are slowed to the refill rate (429 with `Retry-After`), so the
/// ping-pong costs the server a bounded number of durable writes.
#[derive(Debug)]
pub struct StartLimiter {
    enabled: bool,
    per_minute: u32,
    buckets: Mutex<HashMap<u64, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens left, in units of 1/60 000 of a start per `per_minute`: the
    /// bucket gains exactly `per_minute` units a millisecond, so integer
    /// arithmetic loses nothing.
    units: i64,
    at: i64,
}

/// Units in one start.
const UNITS_PER_START: i64 = 60_000;

/// Keys tracked before full buckets are dropped.
const PRUNE_BUCKETS_AT: usize = 100_000;

impl StartLimiter {
    /// A limiter allowing `per_minute` starts per key; `enabled = false`
    /// allows all.
    pub fn new(enabled: bool, per_minute: u32) -> Self {
        StartLimiter {
            enabled,
            per_minute: per_minute.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn capacity(&self) -> i64 {
        i64::from(self.per_minute) * UNITS_PER_START
    }

    fn refilled(&self, b: Bucket, now: i64) -> i64 {
        let elapsed = (now - b.at).clamp(0, 60_000);
        (b.units + elapsed * i64::from(self.per_minute)).min(self.capacity())
    }

    /// Takes one start for the key `tag` (any stable 64-bit digest of the
    /// key), or says how long to wait.
    pub fn take(&self, tag: u64, now: Timestamp) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let cap = self.capacity();
        if buckets.len() >= PRUNE_BUCKETS_AT {
            buckets.retain(|_, b| self.refilled(*b, now.0) < cap);
        }
        let b = buckets.entry(tag).or_insert(Bucket {
            units: cap,
            at: now.0,
        });
        let units = self.refilled(*b, now.0);
        if units >= UNITS_PER_START {
            *b = Bucket {
                units: units - UNITS_PER_START,
                at: now.0,
            };
            return Ok(());
        }
        // Milliseconds until one whole start has refilled.
        let per_ms = i64::from(self.per_minute);
        let wait_ms = (UNITS_PER_START - units + per_ms - 1) / per_ms;
        Err(Error::RateLimited {
            retry_after_secs: u64::try_from((wait_ms + 999) / 1000).unwrap_or(1).max(1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_per_key_allow_a_burst_then_the_refill_rate() {
        let l = StartLimiter::new(true, 20);
        let t = 1_000_000;
        for i in 0..20 {
            assert!(l.take(7, Timestamp(t)).is_ok(), "start {i} of the burst");
        }
        match l.take(7, Timestamp(t)) {
            Err(Error::RateLimited { retry_after_secs }) => assert_eq!(retry_after_secs, 3),
            other => panic!("expected a rate limit, got {other:?}"),
        }
        assert!(l.take(8, Timestamp(t)).is_ok(), "other keys are unaffected");
        // One start refills every 3 s at 20 a minute.
        assert!(l.take(7, Timestamp(t + 2_900)).is_err());
        assert!(l.take(7, Timestamp(t + 3_000)).is_ok());
        assert!(l.take(7, Timestamp(t + 3_000)).is_err());
        // A quiet minute refills the whole burst, and no more.
        for _ in 0..20 {
            assert!(l.take(7, Timestamp(t + 200_000)).is_ok());
        }
        assert!(l.take(7, Timestamp(t + 200_000)).is_err());
    }

    #[test]
    fn disabled_start_limiter_allows_everything() {
        let l = StartLimiter::new(false, 1);
        for _ in 0..100 {
            assert!(l.take(1, Timestamp(0)).is_ok());
        }
    }

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
    fn ipv6_clients_are_counted_per_64_block() {
        let l = FailureLimiter::new(true, 2);
        let t = Timestamp(0);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        l.record_failure(Some(a), t);
        l.record_failure(Some(b), t);
        assert!(l.check(Some(a), t).is_err(), "same /64");
        assert!(l.check(Some(other), t).is_ok(), "another /64");
    }

    #[test]
    fn an_address_over_the_limit_keeps_the_keys_it_proved_and_no_others() {
        let l = FailureLimiter::new(true, 2);
        let t = Timestamp(1_000_000);
        l.key_proven(ip(1), 42, t);
        for _ in 0..2 {
            l.record_failure(ip(1), t);
        }
        assert!(l.check_key(ip(1), 42, t).is_ok(), "the proven key passes");
        assert!(
            l.check_key(ip(1), 43, t).is_err(),
            "any other key is refused"
        );
        assert!(
            l.check_key(ip(2), 43, t).is_ok(),
            "other addresses are unaffected"
        );
        assert!(
            l.check_key(ip(3), 42, t).is_ok(),
            "not over the limit: nothing to prove"
        );
        l.record_failure(ip(3), t);
        l.record_failure(ip(3), t);
        assert!(
            l.check_key(ip(3), 42, t).is_err(),
            "proven from one address is not proven from another"
        );
        let later = Timestamp(t.0 + PROVEN_FOR_MS + 1);
        l.record_failure(ip(1), later);
        l.record_failure(ip(1), later);
        assert!(l.check_key(ip(1), 42, later).is_err(), "proof ages out");
    }

    /// A map filled to its cap is still pruned (at most once a minute), so
    /// pairs proven after the old ones aged out are remembered again.
    #[test]
    fn a_full_proven_map_is_pruned_and_keeps_learning() {
        let l = FailureLimiter::new(true, 2);
        let t = Timestamp(1_000_000);
        for tag in 0..MAX_PROVEN as u64 {
            l.key_proven(ip(1), tag, t);
        }
        assert_eq!(l.proven().at.len(), MAX_PROVEN);
        let later = Timestamp(t.0 + PROVEN_FOR_MS + 1);
        l.key_proven(ip(2), 7, later);
        l.record_failure(ip(2), later);
        l.record_failure(ip(2), later);
        assert!(
            l.check_key(ip(2), 7, later).is_ok(),
            "remembered after the prune"
        );
        assert_eq!(l.proven().at.len(), 1);
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
