//! Which client a request came from when keyseat sits behind a reverse
//! proxy. The TCP peer is then the proxy, so every device would share one
//! rate-limit bucket and the audit log would name the proxy. The operator
//! lists the proxies they run (`trusted_proxies`); only a request whose
//! peer is one of them has its `X-Forwarded-For` read, and the client is
//! the right-most address in that header that is not itself a trusted
//! proxy. Addresses further left were written by the client and could be
//! anything, so they are never believed.

use std::fmt;
use std::net::IpAddr;

/// A list of addresses and CIDR ranges (`10.0.0.0/8`, `::1`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Range>);

#[derive(Clone, Copy, PartialEq, Eq)]
struct Range {
    base: IpAddr,
    prefix: u8,
}

impl Range {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.base, canonical(ip)) {
            (IpAddr::V4(b), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(b) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(b), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(b) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// `::ffff:10.0.0.1` is the IPv4 address 10.0.0.1 (dual-stack sockets
/// report IPv4 peers that way).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

impl TrustedProxies {
    /// Parses a comma-separated list; an empty string trusts no one.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut ranges = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (addr, prefix) = match item.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (item, None),
            };
            let base: IpAddr = addr
                .parse()
                .map_err(|_| format!("`{item}` is not an IP address or CIDR range"))?;
            let base = canonical(base);
            let max = if base.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => p
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= max)
                    .ok_or_else(|| format!("`{item}` has a prefix length outside 0..={max}"))?,
            };
            ranges.push(Range { base, prefix });
        }
        Ok(TrustedProxies(ranges))
    }

    /// Whether no proxy is trusted (the default).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is one of the operator's proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|r| r.contains(ip))
    }

    /// The client's address: the peer itself unless it is a trusted proxy,
    /// else the right-most untrusted address of the `X-Forwarded-For`
    /// values (in header order). Garbage in the header stops the walk: the
    /// last address known good is used.
    pub fn client_ip<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl DoubleEndedIterator<Item = &'a str>,
    ) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let mut client = peer;
        let hops: Vec<&str> = forwarded_for.flat_map(|v| v.split(',')).collect();
        for hop in hops.iter().rev() {
            match parse_hop(hop) {
                Some(ip) => {
                    client = ip;
                    if !self.contains(ip) {
                        break;
                    }
                }
                None => break,
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, possibly `[v6]:port` or
/// `v4:port` as some proxies write it.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = hop.parse::<std::net::SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    hop.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse().ok())
        .map(canonical)
}

impl fmt::Debug for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self
            .0
            .iter()
            .map(|r| format!("{}/{}", r.base, r.prefix))
            .collect();
        write!(f, "[{}]", items.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_addresses_and_ranges() {
        let t = TrustedProxies::parse(" 10.0.0.0/8, ::1 ,192.168.1.7").unwrap();
        assert!(t.contains(ip("10.200.3.4")));
        assert!(t.contains(ip("::1")));
        assert!(t.contains(ip("192.168.1.7")));
        assert!(t.contains(ip("::ffff:10.1.1.1")), "IPv4-mapped peers match");
        assert!(!t.contains(ip("192.168.1.8")));
        assert!(!t.contains(ip("11.0.0.1")));
        assert!(TrustedProxies::parse("").unwrap().is_empty());
        assert!(TrustedProxies::parse("0.0.0.0/0")
            .unwrap()
            .contains(ip("8.8.8.8")));
    }

    #[test]
    fn refuses_garbage_with_the_item_named() {
        let e = TrustedProxies::parse("10.0.0.0/8,proxy.local").unwrap_err();
        assert!(e.contains("`proxy.local`"), "{e}");
        let e = TrustedProxies::parse("10.0.0.0/33").unwrap_err();
        assert!(e.contains("0..=32"), "{e}");
    }

    #[test]
    fn untrusted_peers_are_the_client_whatever_they_claim() {
        let t = TrustedProxies::parse("10.0.0.1").unwrap();
        assert_eq!(
            t.client_ip(ip("203.0.113.9"), ["1.2.3.4"].into_iter()),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn trusted_proxy_names_the_rightmost_untrusted_hop() {
        let t = TrustedProxies::parse("10.0.0.0/8").unwrap();
        // The client wrote a fake first entry; the proxies appended the rest.
        let got = t.client_ip(
            ip("10.0.0.1"),
            ["6.6.6.6, 198.51.100.7", "10.0.0.5"].into_iter(),
        );
        assert_eq!(got, ip("198.51.100.7"));
        assert_eq!(
            t.client_ip(ip("10.0.0.1"), ["[2001:db8::1]:443"].into_iter()),
            ip("2001:db8::1")
        );
        assert_eq!(
            t.client_ip(ip("10.0.0.1"), ["198.51.100.7:5555"].into_iter()),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn missing_or_garbage_header_falls_back_to_the_last_good_hop() {
        let t = TrustedProxies::parse("10.0.0.0/8").unwrap();
        assert_eq!(
            t.client_ip(ip("10.0.0.1"), std::iter::empty()),
            ip("10.0.0.1")
        );
        assert_eq!(
            t.client_ip(ip("10.0.0.1"), ["junk, 10.0.0.9"].into_iter()),
            ip("10.0.0.9")
        );
    }
}
