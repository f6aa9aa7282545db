//! The connection table: who holds the listener's slots, and the rules by
//! which a newcomer is admitted, refused, or takes the place of an idle
//! connection (the module above, [`super`], describes them). Pure
//! bookkeeping under one lock, tested without sockets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::proxy::TrustedProxies;
use crate::ratelimit::bucket_of;

/// How long a connection must have been idle (no request in progress)
/// before it may give its place to a newcomer: longer than a client takes
/// to send its request once connected, so a device's fresh connection is
/// never closed before it is used.
pub(super) const MIN_IDLE_MS: u64 = 1_000;

/// One served connection, as the [`Table`] sees it.
pub(super) struct Conn {
    id: u64,
    /// Requests being handled on it right now.
    busy: AtomicUsize,
    /// When it last became idle (accepted, or a request answered), in ms
    /// since the table's epoch.
    idle_since_ms: AtomicU64,
    epoch: Instant,
    /// Asks the connection to close (at once if idle).
    pub(super) close: Notify,
    /// Its share of `max_connections`; taken (and handed to a newcomer)
    /// when it is evicted, so `None` also means "already evicted".
    slot: Mutex<Option<OwnedSemaphorePermit>>,
}

impl Conn {
    pub(super) fn live(&self) -> bool {
        self.slot.lock().is_ok_and(|s| s.is_some())
    }

    /// Idle for at least `min_idle_ms` at `now_ms`, and not evicted yet.
    pub(super) fn evictable(&self, now_ms: u64, min_idle_ms: u64) -> bool {
        self.busy.load(Ordering::SeqCst) == 0
            && now_ms.saturating_sub(self.idle_since_ms.load(Ordering::SeqCst)) >= min_idle_ms
            && self.live()
    }
}

/// Marks a connection busy while a request on it is handled.
pub(super) struct Busy(Arc<Conn>);

impl Busy {
    pub(super) fn enter(conn: &Arc<Conn>) -> Busy {
        conn.busy.fetch_add(1, Ordering::SeqCst);
        Busy(conn.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let now = u64::try_from(self.0.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.idle_since_ms.store(now, Ordering::SeqCst);
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Why a connection was refused (the `reason` label of the shed counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// `max_connections` are open and none could give way.
    Full,
    /// This address already has its share, none of it idle.
    PerAddress,
}

impl Refused {
    pub(super) fn reason(self) -> &'static str {
        match self {
            Refused::Full => "connections",
            Refused::PerAddress => "connections_per_address",
        }
    }
}

/// Removes a connection from the table when dropped.
pub(super) struct LeaveTable<'a> {
    pub(super) table: &'a Table,
    pub(super) bucket: IpAddr,
    pub(super) entry: &'a Conn,
}

impl Drop for LeaveTable<'_> {
    fn drop(&mut self) {
        self.table.remove(self.bucket, self.entry);
    }
}

/// The open connections by client address: decides who is admitted, and
/// whose idle connection gives way to a newcomer.
pub(super) struct Table {
    slots: Arc<Semaphore>,
    per_address: usize,
    trusted: TrustedProxies,
    epoch: Instant,
    inner: Mutex<TableInner>,
}

#[derive(Default)]
pub(super) struct TableInner {
    by_addr: HashMap<IpAddr, Vec<Arc<Conn>>>,
    next_id: u64,
}

fn live_count(list: &[Arc<Conn>]) -> usize {
    list.iter().filter(|c| c.live()).count()
}

impl Table {
    pub(super) fn new(slots: usize, per_address: usize, trusted: TrustedProxies) -> Table {
        Table {
            slots: Arc::new(Semaphore::new(slots)),
            per_address,
            trusted,
            epoch: Instant::now(),
            inner: Mutex::new(TableInner::default()),
        }
    }

    pub(super) fn inner(&self) -> std::sync::MutexGuard<'_, TableInner> {
        // Bookkeeping only; a poisoned table is still consistent enough.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Admits a connection from `peer` at `now_ms`, or says why not.
    /// Synchronous and short: the accept loop calls it for every connection.
    ///
    /// - An address at its cap may only replace one of its own connections
    ///   that has been idle a while; a burst of new sockets does not get
    ///   in, and one that sends a request at once gets a second chance in
    ///   [`Self::admit_sending`].
    /// - A full server replaces an idle connection of the address holding
    ///   the most, if it holds at least two more than the newcomer's (so
    ///   after the swap it still holds more): parked sockets give way, a
    ///   live device's own connection (one of few) never does.
    pub(super) fn admit(&self, peer: IpAddr, now_ms: u64) -> Result<(IpAddr, Arc<Conn>), Refused> {
        let bucket = bucket_of(peer);
        let mut inner = self.inner();
        let mine = inner.by_addr.get(&bucket).map_or(0, |l| live_count(l));
        let slot = if mine >= self.per_address && !self.trusted.contains(peer) {
            inner.take_idle(bucket, now_ms).ok_or(Refused::PerAddress)?
        } else {
            match self.slots.clone().try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => inner.evict_for(bucket, mine, now_ms).ok_or(Refused::Full)?,
            }
        };
        Ok((bucket, inner.insert(bucket, slot, now_ms, self.epoch)))
    }

    /// Admits a connection from an address at its cap that has already
    /// started sending a request, in place of that address's longest-idle
    /// connection however briefly idle: a device behind the same NAT as a
    /// socket-parker (whose sockets never send anything) gets in, however
    /// fast the parker reconnects.
    pub(super) fn admit_sending(&self, peer: IpAddr) -> Result<(IpAddr, Arc<Conn>), Refused> {
        let bucket = bucket_of(peer);
        let now_ms = self.now_ms();
        let mut inner = self.inner();
        let slot = inner
            .take_idle_for(bucket, now_ms, 0)
            .ok_or(Refused::PerAddress)?;
        Ok((bucket, inner.insert(bucket, slot, now_ms, self.epoch)))
    }

    /// Forgets a closed connection (its slot is freed by dropping it).
    pub(super) fn remove(&self, bucket: IpAddr, conn: &Conn) {
        let mut inner = self.inner();
        if let Some(list) = inner.by_addr.get_mut(&bucket) {
            list.retain(|c| c.id != conn.id);
            if list.is_empty() {
                inner.by_addr.remove(&bucket);
            }
        }
        let slot = conn.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(inner);
        drop(slot);
    }
}

impl TableInner {
    pub(super) fn insert(
        &mut self,
        bucket: IpAddr,
        slot: OwnedSemaphorePermit,
        now_ms: u64,
        epoch: Instant,
    ) -> Arc<Conn> {
        self.next_id += 1;
        let conn = Arc::new(Conn {
            id: self.next_id,
            busy: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(now_ms),
            epoch,
            close: Notify::new(),
            slot: Mutex::new(Some(slot)),
        });
        self.by_addr.entry(bucket).or_default().push(conn.clone());
        conn
    }

    /// Asks the longest-idle evictable connection of `addr` to close and
    /// hands over its slot.
    pub(super) fn take_idle(&mut self, addr: IpAddr, now_ms: u64) -> Option<OwnedSemaphorePermit> {
        self.take_idle_for(addr, now_ms, MIN_IDLE_MS)
    }

    /// As [`Self::take_idle`], for connections idle at least `min_idle_ms`.
    pub(super) fn take_idle_for(
        &mut self,
        addr: IpAddr,
        now_ms: u64,
        min_idle_ms: u64,
    ) -> Option<OwnedSemaphorePermit> {
        let victim = self
            .by_addr
            .get(&addr)?
            .iter()
            .filter(|c| c.evictable(now_ms, min_idle_ms))
            .min_by_key(|c| c.idle_since_ms.load(Ordering::SeqCst))?;
        let slot = victim.slot.lock().ok()?.take()?;
        victim.close.notify_one();
        crate::metrics::global().shed("idle_connection_evicted");
        Some(slot)
    }

    /// For a newcomer from `newcomer` (holding `mine`) on a full server: an
    /// idle connection's slot from the biggest address holding at least
    /// two more, trying the next biggest when one has none idle.
    pub(super) fn evict_for(
        &mut self,
        newcomer: IpAddr,
        mine: usize,
        now_ms: u64,
    ) -> Option<OwnedSemaphorePermit> {
        let mut holders: Vec<(usize, IpAddr)> = self
            .by_addr
            .iter()
            .filter(|(addr, _)| **addr != newcomer)
            .map(|(addr, list)| (live_count(list), *addr))
            .filter(|(n, _)| *n > mine + 1)
            .collect();
        holders.sort_unstable_by_key(|h| std::cmp::Reverse(h.0));
        holders
            .into_iter()
            .find_map(|(_, addr)| self.take_idle(addr, now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(slots: usize, per_address: usize, trusted: &str) -> Table {
        Table::new(slots, per_address, TrustedProxies::parse(trusted).unwrap())
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn one_address_gets_its_share_and_no_more_at_once() {
        let t = table(10, 2, "192.0.2.9");
        assert!(t.admit(ip(1), 0).is_ok());
        assert!(t.admit(ip(1), 0).is_ok());
        assert_eq!(t.admit(ip(1), 0).err(), Some(Refused::PerAddress));
        assert!(t.admit(ip(2), 0).is_ok(), "another address is admitted");
        for _ in 0..3 {
            assert!(t.admit(ip(9), 0).is_ok(), "a trusted proxy is exempt");
        }
        let v6a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:2::2".parse().unwrap();
        assert!(t.admit(v6a, 0).is_ok());
        assert!(t.admit(v6b, 0).is_ok());
        assert_eq!(t.admit(v6a, 0).err(), Some(Refused::PerAddress), "one /64");
    }

    #[test]
    fn at_its_cap_an_address_replaces_its_longest_idle_connection() {
        let t = table(10, 2, "");
        let (_, old) = t.admit(ip(1), 0).unwrap();
        let (_, newer) = t.admit(ip(1), 500).unwrap();
        assert_eq!(
            t.admit(ip(1), 900).err(),
            Some(Refused::PerAddress),
            "none idle long enough"
        );
        assert!(
            t.admit(ip(1), 1_200).is_ok(),
            "the device behind the NAT gets in"
        );
        assert!(!old.live(), "the longest idle gave way");
        assert!(newer.live());
        let _busy = Busy::enter(&newer);
        assert_eq!(t.admit(ip(1), 1_300).err(), Some(Refused::PerAddress));
    }

    #[test]
    fn a_sender_over_the_cap_replaces_its_address_longest_idle_connection() {
        let t = table(10, 2, "");
        let (_, old) = t.admit(ip(1), 0).unwrap();
        let (_, newer) = t.admit(ip(1), 0).unwrap();
        newer.idle_since_ms.store(1, Ordering::SeqCst);
        assert_eq!(t.admit(ip(1), 0).err(), Some(Refused::PerAddress));
        assert!(t.admit_sending(ip(1)).is_ok());
        assert!(!old.live() && newer.live(), "the longest idle gave way");
        let _busy = Busy::enter(&newer);
        let (_, third) = t.admit_sending(ip(1)).unwrap();
        let _busy_too = Busy::enter(&third);
        assert_eq!(
            t.admit_sending(ip(1)).err(),
            Some(Refused::PerAddress),
            "busy connections never give way"
        );
        assert_eq!(
            t.admit_sending(ip(2)).err(),
            Some(Refused::PerAddress),
            "nothing to replace at an address with none open"
        );
    }

    #[test]
    fn a_full_table_evicts_an_idle_connection_of_the_biggest_holder() {
        let t = table(4, 3, "");
        let (a, first) = t.admit(ip(1), 0).unwrap();
        let (_, busy) = t.admit(ip(1), 0).unwrap();
        let _busy = Busy::enter(&busy);
        let (_, third) = t.admit(ip(1), 0).unwrap();
        let (b, live) = t.admit(ip(2), 0).unwrap();
        let later = MIN_IDLE_MS;
        // Full. A fresh connection is never evicted.
        assert_eq!(t.admit(ip(3), later - 1).err(), Some(Refused::Full));
        // A newcomer from an address with nothing open takes an idle
        // connection of the address holding three.
        assert!(t.admit(ip(3), later).is_ok());
        assert!(!first.live(), "evicted");
        assert!(busy.live(), "busy ones are kept");
        // Address 1 now holds two live connections, one busy, the newcomer's
        // address one: the next newcomer takes the idle one left there.
        assert!(t.admit(ip(4), later).is_ok());
        assert!(!third.live());
        // Only a busy one is left at address 1; the live device at address
        // 2 holds one, like every newcomer would: refused.
        assert_eq!(t.admit(ip(5), later).err(), Some(Refused::Full));
        assert!(live.live(), "never the live device's");
        // Closing connections frees their slots for anyone.
        t.remove(a, &first);
        t.remove(b, &live);
        assert!(t.admit(ip(5), later).is_ok());
    }
}
