//! Reports over the service's history, as pure functions of rows the
//! store hands over (so they are tested without a database):
//!
//! - the **sharing report**: keys ranked by takeovers per day, with the
//!   distinct devices seen on each and the "ping-pong" pattern of two
//!   devices taking the seat from each other again and again, the sign
//!   of one key shared between people rather than moved between devices;
//! - the **activity** summary behind the dashboard's overview: starts,
//!   takeovers and expiries per hour.
//!
//! A device is known by its fingerprint when the client sent one, else by
//! its name; a session with neither is an unknown device (it still counts
//! as a takeover, but not as a distinct device).
//!
//! Borrowed sessions (held offline) need no case of their own: one is
//! never superseded, so it is never the loser of a takeover, and a start
//! on a key whose seats are all borrowed is refused rather than counted.
//! A borrow that starts a session takes an ordinary seat like any start,
//! and that is a real change of device, counted as a takeover.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;

use crate::model::EventType;

/// A device as sessions describe it (ordered only so that the report is
/// the same whatever order the rows arrive in).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Device {
    /// Self-reported stable fingerprint.
    pub fingerprint: Option<String>,
    /// Self-reported name.
    pub name: Option<String>,
}

impl Device {
    /// How the report tells devices apart: the fingerprint, else the name.
    pub fn identity(&self) -> Option<String> {
        match (&self.fingerprint, &self.name) {
            (Some(f), _) => Some(format!("fp:{f}")),
            (None, Some(n)) => Some(format!("name:{n}")),
            (None, None) => None,
        }
    }

    /// How the report shows a device: its name, else a short fingerprint.
    pub fn display(&self) -> String {
        match (&self.name, &self.fingerprint) {
            (Some(n), _) => n.clone(),
            (None, Some(f)) => format!("fingerprint {}", f.chars().take(12).collect::<String>()),
            (None, None) => "unknown device".into(),
        }
    }
}

/// The key a row belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// `key_…`.
    pub key_id: String,
    /// `ks_…`.
    pub prefix: String,
    /// Operator's note.
    pub label: Option<String>,
    /// Seat limit.
    pub max_sessions: u32,
}

/// Sessions of one device on one key within the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceUse {
    /// The key.
    pub key_id: String,
    /// The device.
    pub device: Device,
    /// How many sessions it had.
    pub sessions: u64,
}

/// One device taking a seat from another (a `superseded` session).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Takeover {
    /// The key.
    pub key_id: String,
    /// When the seat changed hands.
    pub at: Timestamp,
    /// The device that lost the seat.
    pub from: Device,
    /// The device that took it.
    pub to: Device,
}

/// What the store reads for the sharing report (sessions active in the
/// window, and the takeovers in it).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SharingInput {
    /// Keys that appear in the rows below.
    pub keys: Vec<KeyInfo>,
    /// Per key and device: sessions started, ended or open in the window.
    pub devices: Vec<DeviceUse>,
    /// Takeovers in the window, any order.
    pub takeovers: Vec<Takeover>,
}

/// Report settings.
#[derive(Debug, Clone, Copy)]
pub struct SharingOptions {
    /// Start of the window.
    pub since: Timestamp,
    /// End of the window (now).
    pub until: Timestamp,
    /// A takeover back within this many seconds of the opposite one is a
    /// ping-pong.
    pub ping_pong_secs: u64,
}

/// Two devices that took the seat from each other.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PingPong {
    /// One device (display form).
    pub a: String,
    /// The other.
    pub b: String,
    /// Takeovers that took the seat straight back within the window.
    pub count: u64,
}

/// One key's line in the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeySharing {
    /// `key_…`.
    pub key_id: String,
    /// `ks_…`.
    pub prefix: String,
    /// Operator's note.
    pub label: Option<String>,
    /// Seat limit.
    pub max_sessions: u32,
    /// Takeovers between different devices in the window.
    pub takeovers: u64,
    /// The same, per day of the window.
    pub takeovers_per_day: f64,
    /// Distinct fingerprints seen.
    pub distinct_fingerprints: u64,
    /// Distinct devices seen (fingerprint, else name).
    pub distinct_devices: u64,
    /// Sessions in the window.
    pub sessions: u64,
    /// Ping-pong takeovers, all pairs together.
    pub ping_pongs: u64,
    /// The pairs, most ping-pongs first.
    pub pairs: Vec<PingPong>,
}

/// The sharing report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SharingReport {
    /// Start of the window.
    pub since: Timestamp,
    /// End of the window.
    pub until: Timestamp,
    /// Length of the window in days.
    pub days: f64,
    /// The ping-pong threshold, minutes.
    pub ping_pong_minutes: f64,
    /// Keys with any takeover or more devices than seats, most takeovers
    /// first (then most ping-pongs, most devices).
    pub keys: Vec<KeySharing>,
}

/// Builds the sharing report.
pub fn sharing(input: &SharingInput, opts: SharingOptions) -> SharingReport {
    let window_ms = (opts.until.0 - opts.since.0).max(1);
    let days = window_ms as f64 / 86_400_000.0;
    let mut per_key: BTreeMap<&str, Acc> = BTreeMap::new();
    for d in &input.devices {
        let acc = per_key.entry(&d.key_id).or_default();
        acc.sessions += d.sessions;
        if let Some(f) = &d.device.fingerprint {
            acc.fingerprints.insert(f.clone());
        }
        if let Some(id) = d.device.identity() {
            acc.devices.insert(id);
        }
    }
    let mut takeovers: Vec<&Takeover> = input.takeovers.iter().collect();
    // By time, and takeovers at the same millisecond in one fixed order, so
    // the ping-pongs counted never depend on the order the store read them.
    takeovers
        .sort_by(|a, b| (a.at, &a.key_id, &a.from, &a.to).cmp(&(b.at, &b.key_id, &b.from, &b.to)));
    let window = i64::try_from(opts.ping_pong_secs)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000);
    for t in takeovers {
        let (from, to) = (t.from.identity(), t.to.identity());
        if from.is_some() && from == to {
            continue; // a device replacing its own session
        }
        let acc = per_key.entry(&t.key_id).or_default();
        acc.takeovers += 1;
        let (Some(from), Some(to)) = (from, to) else {
            continue;
        };
        acc.names
            .entry(from.clone())
            .or_insert_with(|| t.from.display());
        acc.names
            .entry(to.clone())
            .or_insert_with(|| t.to.display());
        // `to` took the seat from `from`; a ping-pong if `from` had taken
        // it from `to` shortly before.
        if let Some(prev) = acc.last.get(&(to.clone(), from.clone())) {
            if t.at.0 - prev.0 <= window {
                let pair = if from < to {
                    (from.clone(), to.clone())
                } else {
                    (to.clone(), from.clone())
                };
                *acc.pairs.entry(pair).or_default() += 1;
            }
        }
        acc.last.insert((from, to), t.at);
    }
    let info: HashMap<&str, &KeyInfo> = input.keys.iter().map(|k| (k.key_id.as_str(), k)).collect();
    let mut keys: Vec<KeySharing> = per_key
        .into_iter()
        .filter_map(|(key_id, acc)| {
            let k = info.get(key_id)?;
            let distinct_devices = acc.devices.len() as u64;
            if acc.takeovers == 0 && distinct_devices <= u64::from(k.max_sessions) {
                return None;
            }
            let mut pairs: Vec<PingPong> = acc
                .pairs
                .iter()
                .map(|((a, b), n)| PingPong {
                    a: acc.names.get(a).cloned().unwrap_or_else(|| a.clone()),
                    b: acc.names.get(b).cloned().unwrap_or_else(|| b.clone()),
                    count: *n,
                })
                .collect();
            pairs.sort_by(|x, y| y.count.cmp(&x.count).then_with(|| x.a.cmp(&y.a)));
            Some(KeySharing {
                key_id: k.key_id.clone(),
                prefix: k.prefix.clone(),
                label: k.label.clone(),
                max_sessions: k.max_sessions,
                takeovers: acc.takeovers,
                takeovers_per_day: round2(acc.takeovers as f64 / days),
                distinct_fingerprints: acc.fingerprints.len() as u64,
                distinct_devices,
                sessions: acc.sessions,
                ping_pongs: pairs.iter().map(|p| p.count).sum(),
                pairs,
            })
        })
        .collect();
    keys.sort_by(|a, b| {
        b.takeovers
            .cmp(&a.takeovers)
            .then(b.ping_pongs.cmp(&a.ping_pongs))
            .then(b.distinct_devices.cmp(&a.distinct_devices))
            .then_with(|| a.prefix.cmp(&b.prefix))
    });
    SharingReport {
        since: opts.since,
        until: opts.until,
        days: round2(days),
        ping_pong_minutes: round2(opts.ping_pong_secs as f64 / 60.0),
        keys,
    }
}

#[derive(Default)]
struct Acc {
    sessions: u64,
    takeovers: u64,
    fingerprints: BTreeSet<String>,
    devices: BTreeSet<String>,
    /// Last takeover per (from, to) identity.
    last: HashMap<(String, String), Timestamp>,
    pairs: BTreeMap<(String, String), u64>,
    names: HashMap<String, String>,
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Events of one type in one bucket of time (what the store counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventCount {
    /// The type.
    pub event_type: EventType,
    /// Bucket index from the start of the range (0 = oldest).
    pub bucket: u32,
    /// Events.
    pub count: u64,
}

/// The overview's activity: per hour over a day, and totals.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Activity {
    /// Sessions started per bucket, oldest first.
    pub starts: Vec<u64>,
    /// Takeovers (sessions superseded) per bucket.
    pub takeovers: Vec<u64>,
    /// Sessions expired per bucket.
    pub expiries: Vec<u64>,
}

impl Activity {
    /// Spreads counts over `buckets` buckets (counts past the end go to
    /// the last one).
    pub fn from_counts(counts: &[EventCount], buckets: usize) -> Activity {
        let mut a = Activity {
            starts: vec![0; buckets],
            takeovers: vec![0; buckets],
            expiries: vec![0; buckets],
        };
        if buckets == 0 {
            return a;
        }
        for c in counts {
            let series = match c.event_type {
                EventType::SessionStarted => &mut a.starts,
                EventType::SessionSuperseded => &mut a.takeovers,
                EventType::SessionExpired => &mut a.expiries,
                _ => continue,
            };
            let i = (c.bucket as usize).min(buckets - 1);
            series[i] += c.count;
        }
        a
    }

    /// (starts, takeovers, expiries) in the last `n` buckets.
    pub fn last(&self, n: usize) -> (u64, u64, u64) {
        let tail = |v: &Vec<u64>| v.iter().rev().take(n).sum();
        (
            tail(&self.starts),
            tail(&self.takeovers),
            tail(&self.expiries),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const T0: i64 = 1_800_000_000_000;

    fn dev(name: &str) -> Device {
        Device {
            fingerprint: Some(format!("fp-{name}")),
            name: Some(name.into()),
        }
    }

    fn key(id: &str, seats: u32) -> KeyInfo {
        KeyInfo {
            key_id: id.into(),
            prefix: format!("ks_{id}"),
            label: None,
            max_sessions: seats,
        }
    }

    fn takeover(key: &str, min: i64, from: &str, to: &str) -> Takeover {
        Takeover {
            key_id: key.into(),
            at: Timestamp(T0 + min * MIN),
            from: dev(from),
            to: dev(to),
        }
    }

    fn uses(key: &str, names: &[&str]) -> Vec<DeviceUse> {
        names
            .iter()
            .map(|n| DeviceUse {
                key_id: key.into(),
                device: dev(n),
                sessions: 2,
            })
            .collect()
    }

    fn opts(days: i64) -> SharingOptions {
        SharingOptions {
            since: Timestamp(T0),
            until: Timestamp(T0 + days * 1440 * MIN),
            ping_pong_secs: 600,
        }
    }

    #[test]
    fn ping_pong_between_two_devices_is_counted() {
        // A holds the seat; B takes it, A takes it back 3 min later, B
        // again 4 min later; then 30 min of quiet and A takes it back
        // (too late to count).
        let input = SharingInput {
            keys: vec![key("k1", 1)],
            devices: uses("k1", &["A", "B"]),
            takeovers: vec![
                takeover("k1", 0, "A", "B"),
                takeover("k1", 3, "B", "A"),
                takeover("k1", 7, "A", "B"),
                takeover("k1", 37, "B", "A"),
            ],
        };
        let r = sharing(&input, opts(2));
        assert_eq!(r.keys.len(), 1);
        let k = &r.keys[0];
        assert_eq!(k.takeovers, 4);
        assert_eq!(k.takeovers_per_day, 2.0);
        assert_eq!(k.ping_pongs, 2);
        assert_eq!(k.distinct_devices, 2);
        assert_eq!(k.distinct_fingerprints, 2);
        assert_eq!(k.sessions, 4);
        assert_eq!(
            k.pairs,
            vec![PingPong {
                a: "A".into(),
                b: "B".into(),
                count: 2
            }]
        );
        assert_eq!(r.days, 2.0);
    }

    #[test]
    fn order_of_rows_does_not_matter() {
        let mut input = SharingInput {
            keys: vec![key("k1", 1)],
            devices: uses("k1", &["A", "B"]),
            takeovers: vec![
                takeover("k1", 7, "A", "B"),
                takeover("k1", 0, "A", "B"),
                takeover("k1", 3, "B", "A"),
            ],
        };
        let a = sharing(&input, opts(1));
        input.takeovers.reverse();
        assert_eq!(a, sharing(&input, opts(1)));
        assert_eq!(a.keys[0].ping_pongs, 2);
    }

    #[test]
    fn a_third_device_in_between_is_not_a_ping_pong_of_the_pair() {
        let input = SharingInput {
            keys: vec![key("k1", 1)],
            devices: uses("k1", &["A", "B", "C"]),
            takeovers: vec![
                takeover("k1", 0, "A", "B"),
                takeover("k1", 1, "B", "C"),
                takeover("k1", 2, "C", "A"),
            ],
        };
        let k = &sharing(&input, opts(1)).keys[0];
        assert_eq!(k.takeovers, 3);
        assert_eq!(k.ping_pongs, 0);
        assert_eq!(k.distinct_devices, 3);
    }

    #[test]
    fn keys_are_ranked_and_quiet_keys_left_out() {
        let mut devices = uses("busy", &["A", "B"]);
        devices.extend(uses("some", &["A", "B"]));
        devices.extend(uses("quiet", &["A"]));
        devices.extend(uses("many", &["A", "B", "C"]));
        devices.extend(uses("family", &["A", "B"]));
        let input = SharingInput {
            keys: vec![
                key("busy", 1),
                key("some", 1),
                key("quiet", 1),
                key("many", 1),
                key("family", 3),
            ],
            devices,
            takeovers: vec![
                takeover("busy", 0, "A", "B"),
                takeover("busy", 1, "B", "A"),
                takeover("busy", 2, "A", "B"),
                takeover("some", 0, "A", "B"),
            ],
        };
        let r = sharing(&input, opts(1));
        let order: Vec<&str> = r.keys.iter().map(|k| k.key_id.as_str()).collect();
        // "quiet" (one device) and "family" (two devices, three seats,
        // no takeover) are not suspicious; "many" has more devices than
        // seats even without a takeover.
        assert_eq!(order, ["busy", "some", "many"]);
    }

    #[test]
    fn self_takeovers_do_not_count_and_unknown_devices_do() {
        let anon = Device::default();
        let input = SharingInput {
            keys: vec![key("k", 1)],
            devices: vec![DeviceUse {
                key_id: "k".into(),
                device: anon.clone(),
                sessions: 3,
            }],
            takeovers: vec![
                takeover("k", 0, "A", "A"),
                Takeover {
                    key_id: "k".into(),
                    at: Timestamp(T0),
                    from: anon.clone(),
                    to: anon,
                },
            ],
        };
        let k = &sharing(&input, opts(1)).keys[0];
        assert_eq!(k.takeovers, 1);
        assert_eq!(k.distinct_devices, 0);
        assert_eq!(k.ping_pongs, 0);
    }

    #[test]
    fn devices_without_fingerprints_are_told_apart_by_name() {
        let named = |n: &str| Device {
            fingerprint: None,
            name: Some(n.into()),
        };
        let input = SharingInput {
            keys: vec![key("k", 1)],
            devices: vec![],
            takeovers: vec![
                Takeover {
                    key_id: "k".into(),
                    at: Timestamp(T0),
                    from: named("x"),
                    to: named("y"),
                },
                Takeover {
                    key_id: "k".into(),
                    at: Timestamp(T0 + MIN),
                    from: named("y"),
                    to: named("x"),
                },
            ],
        };
        let k = &sharing(&input, opts(1)).keys[0];
        assert_eq!(k.ping_pongs, 1);
        assert_eq!(k.distinct_fingerprints, 0);
        assert_eq!((k.pairs[0].a.as_str(), k.pairs[0].b.as_str()), ("x", "y"));
    }

    /// Two takeovers at the same instant count the same whichever the store
    /// returns first (found by the property below: A→C, then C→A and A→C
    /// at the same minute gave one ping-pong or two depending on row order).
    #[test]
    fn takeovers_at_the_same_instant_count_the_same_in_any_order() {
        let takeovers = vec![
            takeover("k2", 0, "A", "C"),
            takeover("k2", 1, "C", "A"),
            takeover("k2", 1, "A", "C"),
        ];
        let input = SharingInput {
            keys: vec![key("k2", 1)],
            devices: vec![],
            takeovers,
        };
        let mut reversed = input.clone();
        reversed.takeovers.reverse();
        assert_eq!(sharing(&reversed, opts(1)), sharing(&input, opts(1)));
    }

    proptest::proptest! {
        /// Whatever the history: ping-pongs never exceed takeovers minus
        /// one per key, takeovers are exactly the seat changes between
        /// different devices, and the order rows arrive in is irrelevant.
        #[test]
        fn invariants_hold_for_any_history(
            moves in proptest::collection::vec((0u8..3, 0u8..4, 0u8..4, 0i64..30), 0..60),
        ) {
            let names = ["A", "B", "C", "D"];
            let mut t = 0;
            let takeovers: Vec<Takeover> = moves
                .iter()
                .map(|&(k, from, to, gap)| {
                    t += gap;
                    takeover(&format!("k{k}"), t, names[from as usize], names[to as usize])
                })
                .collect();
            let input = SharingInput {
                keys: (0..3).map(|k| key(&format!("k{k}"), 1)).collect(),
                devices: vec![],
                takeovers: takeovers.clone(),
            };
            let r = sharing(&input, opts(1));
            for k in &r.keys {
                let real = takeovers
                    .iter()
                    .filter(|x| x.key_id == k.key_id && x.from != x.to)
                    .count() as u64;
                proptest::prop_assert_eq!(k.takeovers, real);
                proptest::prop_assert!(k.ping_pongs < k.takeovers.max(1));
                proptest::prop_assert_eq!(k.ping_pongs, k.pairs.iter().map(|p| p.count).sum::<u64>());
            }
            let mut reversed = input.clone();
            reversed.takeovers.reverse();
            proptest::prop_assert_eq!(sharing(&reversed, opts(1)), r);
        }
    }

    #[test]
    fn activity_buckets_and_totals() {
        let c = |t, bucket, count| EventCount {
            event_type: t,
            bucket,
            count,
        };
        let a = Activity::from_counts(
            &[
                c(EventType::SessionStarted, 0, 5),
                c(EventType::SessionStarted, 23, 2),
                c(EventType::SessionStarted, 24, 1),
                c(EventType::SessionSuperseded, 22, 3),
                c(EventType::SessionExpired, 23, 4),
                c(EventType::KeyCreated, 23, 9),
            ],
            24,
        );
        assert_eq!(a.starts[0], 5);
        assert_eq!(
            a.starts[23], 3,
            "a count at the very end joins the last hour"
        );
        assert_eq!(a.last(1), (3, 0, 4));
        assert_eq!(a.last(24), (8, 3, 4));
    }
}
